"""Run a governed federated task on Flower's Deployment Engine, end to end (until ``twinledger fl`` wraps it).

    .venv/bin/python -m federated.launch run maintenance --rounds 3 --grant-all
    .venv/bin/python -m federated.launch rounds maintenance/run-<id>
    .venv/bin/python -m federated.launch verify maintenance/run-<id>

``run`` prepares the deployment under ``<home>/flower`` (CA + SuperLink certificate, one SuperNode key per
org), adds the SuperLink to the home's supervisor manifest (starting the supervisor if needed), registers
each org's SuperNode key, adds the SuperNodes, submits the app with ``flwr run``, waits, prints the
committed rounds and re-hashes the stored models; then removes its processes again (``--keep-running``
leaves them up). Until the Fabric ledger runs, rounds and grants live in ``<home>/flower/ledger.json``;
``--grant-all`` writes each org's grant for the task (what the orgs' stewards do on chain).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from federated.data import task_spec
from federated.deployment import DeploymentError, FlowerDeployment
from federated.governance import GovernanceError, JsonFileLedger
from federated.store import ModelStore
from orchestrator.control import (
    SupervisorError,
    reload_supervisor,
    start_supervisor,
    stop_supervisor,
    supervisor_pid,
    wait_healthy,
)
from orchestrator.procspec import load_manifest, save_manifest, upsert_processes


def _home(arg: str | None) -> Path:
    from network.layout import resolve_home

    return resolve_home(arg)


def _deployment(args: argparse.Namespace, task: str) -> FlowerDeployment:
    home = _home(args.home)
    orgs = [o for o in (getattr(args, "orgs", "") or "").split(",") if o]
    return FlowerDeployment(home=home / "flower", task=task, orgs=orgs, port_base=args.port_base,
                            warm=not getattr(args, "flower_defaults", False),
                            node_poll=None if getattr(args, "flower_defaults", False) else 0.25)  # fmt: skip


def _print_rounds(ledger: JsonFileLedger, key: str) -> None:
    for r in ledger.list_rounds(key):
        ups = ", ".join(f"{u.org}:{u.sha256[:12]}({u.num_examples})" for u in r.updates)
        print(f"round {r.round}: {r.global_sha256[:12]} -> {(r.result_sha256 or '-')[:12]}  participants "
              f"{','.join(r.participants)}  updates {ups}")  # fmt: skip
        for org, m in sorted(r.evaluation.items()):
            print(f"    {org}: AUROC {m.get('auroc', float('nan')):.3f}  F1 {m.get('f1', float('nan')):.3f}  "
                  f"recall@P>=0.6 {m.get('recall-at-p', float('nan')):.3f}")  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    d = _deployment(args, args.task)
    d.prepare()
    spec = task_spec(args.task)
    ledger = JsonFileLedger(d.home / "ledger.json")
    if args.grant_all:
        for org in d.orgs:
            if not ledger.check_grant(org, spec.dataset_id(org), spec.purpose):
                ledger.grant(org, spec.dataset_id(org), spec.purpose)
    home = d.home.parent
    run_dir = home / "run"
    ours = [d.superlink_spec()] + [s for o in d.orgs for s in d.supernode_specs(o)]
    try:
        upsert_processes(run_dir, [ours[0]])
        start_supervisor(home)
        wait_healthy(home, [ours[0].name], timeout=90)
        d.wait_superlink(timeout=90)
        for org in d.orgs:  # a resumed SuperLink database may know the keys already
            d.register(org, exist_ok=True)
        upsert_processes(run_dir, ours[1:])
        reload_supervisor(home)
        wait_healthy(home, [s.name for s in ours[1:]], timeout=120)
        d.wait_online(timeout=120)
        report = d.home / "reports" / f"{args.task}-latest.json"
        run_id = d.start_run(**{"num-server-rounds": args.rounds, "strategy": args.strategy, "report": str(report)})
        print(f"run {run_id} submitted; waiting", flush=True)
        status = d.wait_run(run_id, timeout=args.timeout)
        if status.get("status") != "finished:completed":
            print(f"run {run_id} {status.get('status')}: {status.get('status-details')}", file=sys.stderr)
            return 1
        summary = json.loads(report.read_text())
        key = summary["ledger_task"]
        print(f"run {run_id} completed as {key}; seconds per round: "
              f"{' '.join(f'{s:.1f}' for s in summary['round_seconds'])}")  # fmt: skip
        _print_rounds(ledger, key)
        rep = ModelStore(d.store_dir).verify_ledger(ledger, key)
        print(f"store: {rep.summary()}")
        return 0 if rep.passed else 1
    finally:
        if not args.keep_running:
            names = {s.name for s in ours}
            rest = [p for p in load_manifest(run_dir) if p.name not in names]
            save_manifest(run_dir, rest)
            if rest:
                reload_supervisor(home)
            elif supervisor_pid(home):
                stop_supervisor(home)


def cmd_rounds(args: argparse.Namespace) -> int:
    d = _deployment(args, args.key.split("/")[0])
    _print_rounds(JsonFileLedger(d.home / "ledger.json"), args.key)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    d = _deployment(args, args.key.split("/")[0])
    rep = ModelStore(d.store_dir).verify_ledger(JsonFileLedger(d.home / "ledger.json"), args.key)
    print(rep.summary())
    for sha in rep.missing:
        print(f"missing    {sha}")
    for sha in rep.mismatched:
        print(f"MISMATCHED {sha}")
    return 0 if rep.passed else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m federated.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", help="state folder (default: $TL_HOME or ./.twinledger/twinledger)")
    ap.add_argument("--port-base", type=int, default=19100, help="SuperLink port; SuperNodes use the next ones")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="a governed training run")
    r.add_argument("task", choices=["maintenance", "cardiac"])
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--orgs", default="", help="comma-separated orgs (default: the task's default consortium)")
    r.add_argument("--strategy", default="fedavg", help="fedavg, fedprox, fedmedian, fedtrimmedavg, krum")
    r.add_argument("--grant-all", action="store_true", help="grant every org's data set for the task first")
    r.add_argument("--keep-running", action="store_true")
    r.add_argument("--flower-defaults", action="store_true", help="no warm executor, Flower's 3 s node poll")
    r.add_argument("--timeout", type=float, default=1800.0)
    for name, fn in (("rounds", cmd_rounds), ("verify", cmd_verify)):
        p = sub.add_parser(name, help=f"{name} of a run (ledger key <task>/run-<id>)")
        p.add_argument("key")
        p.set_defaults(fn=fn)
    r.set_defaults(fn=cmd_run)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (DeploymentError, GovernanceError, SupervisorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
