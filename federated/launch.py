"""A governed federated run on Flower's Deployment Engine, end to end: what ``twinledger fl run / rounds /
verify`` (orchestrator/cli_fl.py) is built on.

``run_on_deployment`` prepares the deployment under ``<home>/flower`` (CA + SuperLink certificate, one
SuperNode key per org), adds the SuperLink to the home's supervisor manifest (starting the supervisor if
needed), registers each org's SuperNode key, adds the SuperNodes, submits the app with ``flwr run``,
reports each round as the ledger records it (``RoundWatcher``), waits, and removes its processes again
(unless asked to keep them). ``rounds_table`` and ``verify_task`` read what the ledger recorded. The
ledger is Fabric (``federated.fabric_ledger``); the grants a task needs are the stewards' own
transactions (``twinledger data grant``), never made here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federated.deployment import FlowerDeployment
from federated.governance import RoundLedger, RoundRecord
from federated.store import ModelStore, VerifyReport
from network.processes.control import (
    reload_supervisor,
    start_supervisor,
    stop_supervisor,
    supervisor_pid,
    wait_healthy,
)
from network.processes.procspec import ProcSpec, load_manifest, save_manifest, upsert_processes

DEFAULT_PORT_BASE = 19100


# -- one run ------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    run_id: int
    status: str  # Flower's, e.g. "finished:completed"
    ledger_task: str
    summary: dict = field(default_factory=dict)  # the ServerApp's report (empty when it wrote none)
    failure: str = ""  # why a run that did not complete failed, from the ServerApp's log

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def _processes(d: FlowerDeployment) -> list[ProcSpec]:
    return d.process_specs()  # superlink first: it must be up before its SuperExec and the SuperNodes


def start_deployment(d: FlowerDeployment, supervisor_home: Path, progress: Callable[[str], None]) -> list[ProcSpec]:
    """SuperLink + one SuperNode per org under the home's supervisor, keys registered, nodes online."""
    run_dir = supervisor_home / "run"
    ours = _processes(d)
    upsert_processes(run_dir, [ours[0]])
    start_supervisor(supervisor_home)
    wait_healthy(supervisor_home, [ours[0].name], timeout=90)
    d.wait_superlink(timeout=90)
    for org in d.orgs:  # a resumed SuperLink database may know the keys already
        d.register(org, exist_ok=True)
    upsert_processes(run_dir, ours[1:])
    reload_supervisor(supervisor_home)
    wait_healthy(supervisor_home, [s.name for s in ours[1:]], timeout=120)
    d.wait_online(timeout=120)
    progress(f"SuperLink {d.superlink_address} and SuperNodes of {', '.join(d.orgs)} are up (TLS on every API, node authentication)")
    return ours


def stop_deployment(supervisor_home: Path, ours: Sequence[ProcSpec]) -> None:
    """Remove our processes from the supervisor; stop it when nothing else is left under it."""
    run_dir = supervisor_home / "run"
    names = {s.name for s in ours}
    rest = [p for p in load_manifest(run_dir) if p.name not in names]
    save_manifest(run_dir, rest)
    if rest:
        reload_supervisor(supervisor_home)
    elif supervisor_pid(supervisor_home):
        stop_supervisor(supervisor_home)


def _failure_reason(d: FlowerDeployment, run_id: int, status: dict) -> str:
    """The ServerApp's own error (e.g. a GovernanceError naming the refused orgs), from its log."""
    detail = str(status.get("status-details") or "")
    log = d.run_log(run_id)
    errors = [m.group(1) for m in re.finditer(r"(?:GovernanceError|DeploymentError|StoreError|Exception): (.+)", log)]
    return errors[-1].strip() if errors else detail


def run_on_deployment(
    d: FlowerDeployment,
    *,
    ledger: RoundLedger,
    run_config: Mapping[str, object],
    ledger_task: str | None,
    total_rounds: int,
    progress: Callable[[str], None],
    keep_running: bool = False,
    timeout: float = 1800.0,
) -> RunOutcome:
    """Start the deployment, submit one governed run, report its rounds live from ``ledger``, wait for it.

    ``ledger_task`` None lets the ServerApp name the run ``<task>/run-<run id>``."""
    d.prepare()
    supervisor_home = d.home.parent
    ours = _processes(d)
    try:
        ours = start_deployment(d, supervisor_home, progress)
        report = d.home / "reports" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', ledger_task or d.task)}-latest.json"
        report.unlink(missing_ok=True)
        cfg = {**run_config, "report": str(report), **({"ledger-task": ledger_task} if ledger_task else {})}
        run_id = d.start_run(**cfg)
        key = ledger_task or f"{d.task}/run-{run_id}"
        progress(f"run {run_id} submitted to the SuperLink as {key}")
        watcher = RoundWatcher(ledger, key, total_rounds)
        status = d.wait_run(run_id, timeout=timeout, on_poll=lambda: [progress(line) for line in watcher.poll()])
        for line in watcher.poll():
            progress(line)
        summary = json.loads(report.read_text()) if report.exists() else {}
        out = RunOutcome(run_id, str(status.get("status")), key, summary)
        if not out.completed:
            out.failure = str(summary.get("error") or "") or _failure_reason(d, run_id, status)
        return out
    finally:
        if not keep_running:
            stop_deployment(supervisor_home, ours)


# -- what the ledger recorded -------------------------------------------------------------------------


def _metric_text(metrics: Mapping[str, float]) -> str:
    names = (("train-loss", "loss"), ("val-auroc", "val AUROC"))
    return " ".join(f"{label} {metrics[k]:.3f}" for k, label in names if k in metrics) or "-"


class RoundWatcher:
    """Lines describing what the ledger newly recorded for a task since the last ``poll``."""

    def __init__(self, ledger: RoundLedger, task: str, total_rounds: int) -> None:
        self.ledger = ledger
        self.task = task
        self.total = total_rounds
        self._seen: dict[int, tuple[bool, bool]] = {}  # round -> (committed, evaluated) already shown

    def poll(self) -> list[str]:
        try:
            records = self.ledger.list_rounds(self.task)
        except Exception as exc:  # noqa: BLE001 -- progress must not end the run; say why it is missing
            return [f"(cannot read the ledger's rounds right now: {exc})"]
        lines: list[str] = []
        for r in records:
            committed, evaluated = self._seen.get(r.round, (False, False))
            if r.round not in self._seen:
                line = (f"round {r.round}/{self.total} started from {r.global_sha256[:12]}: participants "
                        f"{', '.join(r.participants)}")  # fmt: skip
                if r.start_tx_id:
                    line += f"  tx {r.start_tx_id}"
                lines.append(line)
            if r.complete and not committed:
                lines.append(f"round {r.round}/{self.total} committed {r.result_sha256[:12] if r.result_sha256 else '-'}: "
                             f"{_metric_text(r.metrics)}; updates "
                             f"{', '.join(f'{u.org} {u.sha256[:12]} ({u.num_examples} rows)' for u in r.updates)}"
                             f"{'  tx ' + r.commit_tx_id if r.commit_tx_id else ''}")  # fmt: skip
                committed = True
            if r.evaluated_sha256 and not evaluated:
                figures = ", ".join(f"{o} AUROC {m.get('auroc', float('nan')):.3f}" for o, m in sorted(r.evaluation.items()))
                lines.append(f"final model {r.evaluated_sha256[:12]} evaluated on each org's test split: {figures}")
                evaluated = True
            self._seen[r.round] = (committed, evaluated)
        return lines


def rounds_table(records: Sequence[RoundRecord]) -> list[str]:
    """One line per round: round, participants, global model (start -> result), metrics, transaction."""
    rows = [("ROUND", "PARTICIPANTS", "GLOBAL (START -> RESULT)", "METRICS", "TX")]
    for r in records:
        rows.append((str(r.round), ",".join(r.participants) or "-",
                     f"{r.global_sha256[:12]} -> {r.result_sha256[:12] if r.result_sha256 else '(not committed)'}",
                     _metric_text(r.metrics), r.commit_tx_id or r.start_tx_id or "-"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1] for row in rows]
    for r in records:
        for org, m in sorted(r.evaluation.items()):
            lines.append(f"  round {r.round}: {org} evaluated the final model: AUROC {m.get('auroc', float('nan')):.3f}  "
                         f"F1 {m.get('f1', float('nan')):.3f}  recall@P>=0.6 {m.get('recall-at-p', float('nan')):.3f}")  # fmt: skip
    return lines


def artefact_roles(records: Sequence[RoundRecord]) -> dict[str, list[str]]:
    """sha256 -> what each ledger record says it is ("round 2 start model", "round 1 update of plant2")."""
    roles: dict[str, list[str]] = {}
    for r in records:
        roles.setdefault(r.global_sha256, []).append(f"round {r.round} start model")
        for u in r.updates:
            roles.setdefault(u.sha256, []).append(f"round {r.round} update of {u.org}")
        if r.result_sha256:
            roles.setdefault(r.result_sha256, []).append(f"round {r.round} result")
    return roles


@dataclass
class TaskVerification:
    task: str
    report: VerifyReport
    store: ModelStore
    roles: dict[str, list[str]]

    @property
    def passed(self) -> bool:
        return self.report.passed and bool(self.report.ok)

    def problems(self) -> list[dict]:
        return [{"sha256": sha, "file": str(self.store.path(sha)), "problem": problem, "records": self.roles.get(sha, [])}
                for problem, shas in (("mismatched", self.report.mismatched), ("missing", self.report.missing))
                for sha in shas]  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"{self.task}: {self.report.summary()} (every model and update the ledger's rounds name, "
               f"re-hashed from {self.store.root})"]  # fmt: skip
        for p in self.problems():
            what = ("its content no longer hashes to the ledger's record" if p["problem"] == "mismatched"
                    else "not in the store")  # fmt: skip
            out.append(f"{p['problem'].upper()}: {p['file']} ({'; '.join(p['records'])}): {what}")
        return out


def verify_task(ledger: RoundLedger, store_dir: Path, task: str) -> TaskVerification:
    """Re-hash every stored artefact the ledger's rounds of ``task`` name."""
    records = ledger.list_rounds(task)
    store = ModelStore(store_dir)
    return TaskVerification(task, store.verify_ledger(ledger, task), store, artefact_roles(records))
