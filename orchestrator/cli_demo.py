"""`twinledger demo`: the whole system on the default consortium, narrated, then the dashboard.

The demo is a tour of the CLI: every step after the network runs the same `twinledger` command a user
would type (printed before it runs, output indented beneath), so what the demo shows is exactly what
the commands do. Steps:

1. network   -- `up` unless every member org's peer already answers /healthz (then the running network
                is used as it is, and the demo leaves it running at the end);
2. governance-- each org's steward registers its federated data set (SHA-256 of the real file) and
                grants every other org of its sector the task's purpose (``fl:<task>``), skipping what
                the ledger already holds, so a second demo on the same home submits nothing new;
3. twins     -- `twins run` in the background: OPC-UA simulators, the bridge, twins, anchoring;
4. federated -- `fl run` of the plants' maintenance task and the hospitals' cardiac task;
5. alert     -- waits (bounded) for a twin's alert;
6. summary   -- nodes, block height, rounds with model hashes verified (`fl verify`), anchors, alerts;
7. dashboard -- served on 127.0.0.1 until Ctrl-C (or ``--duration``), then everything the demo
                started stops, in reverse order.

``--local-ledger`` runs it without Fabric peers, for machines where the Fabric binaries cannot be
built: governance is skipped (it exists only on the ledger), the twins anchor to a local file and the
federated rounds go to a local JSON ledger; every such step says so. It is not the system, only the
parts of it that run without a ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from network.layout import Layout
from network.spec import Spec, load_spec
from orchestrator.cli_common import UserError, home_of

ALERT_WAIT_S = 120.0
DEFAULT_ROUNDS = 3
#: Twins: both plants' machines and both hospitals' monitors (the sepsis replays raise NEWS2 alerts).
TWINS_ASSETS = ("--machines", "plant1:2", "--machines", "plant2:2", "--monitors", "hospital1:2", "--monitors", "hospital2:1")
LOCAL_LEDGER_NOTE = "local stand-ins, not the ledger"


class Narrator:
    """Prints each step with the seconds since the demo began, so the start time of each part shows."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def step(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", flush=True)

    def detail(self, text: str) -> None:
        print(f"           {text}", flush=True)


@dataclass
class DemoRun:
    home: Path
    narrator: Narrator
    local: bool
    started_network: bool = False
    twins: subprocess.Popen | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    # -- running `twinledger` commands ------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "orchestrator.cli", *args, "--home", str(self.home)]

    def show(self, args: Sequence[str]) -> None:
        self.narrator.detail("$ twinledger " + " ".join(args))

    def run(self, *args: str, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        """One `twinledger` command; its output indented beneath it (unless quiet); UserError on failure."""
        if not quiet:
            self.show(args)
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not quiet:
                self.narrator.detail("  " + line.rstrip())
        code = proc.wait()
        if check and code != 0:
            tail = "".join(lines[-3:]).strip().replace("\n", " | ")
            raise UserError(f"demo step `twinledger {' '.join(args)}` failed (exit {code}): {tail}")
        return subprocess.CompletedProcess(proc.args, code, "".join(lines), "")

    def json_of(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", quiet=True).stdout)


# -- 1. network ------------------------------------------------------------------------------------


def peers_answering(spec: Spec) -> set[str]:
    from orchestrator.health import probe

    return {n.org for n in spec.nodes() if n.type == "peer" and probe(f"http://127.0.0.1:{n.ports.operations}/healthz")}


def network_step(demo: DemoRun, port_base: int | None) -> Spec:
    from orchestrator.bringup import FabricUnavailable, up

    layout = Layout(demo.home)
    if layout.spec_file.exists():
        spec = load_spec(layout.spec_file)
        if {o.name for o in spec.member_orgs} <= peers_answering(spec):
            demo.narrator.step(f"network: already running in {demo.home} (every member org's peer answers); using it")
            return spec
    demo.narrator.step("network: twinledger up (CAs, identities, orderers, peers, channel, chaincode, org registry)")
    try:
        spec = up(demo.home, None, port_base, progress=demo.narrator.detail)
        demo.started_network = True
    except FabricUnavailable as exc:
        demo.started_network = True  # the CAs are up under the supervisor; the demo stops them at the end
        if not demo.local:
            raise UserError(f"{exc}. `twinledger demo --local-ledger` shows the rest of the system with local "
                            "stand-ins for the ledger (labelled as such)") from None
        demo.narrator.detail(f"no Fabric peers: {exc}")
        demo.narrator.detail(f"--local-ledger: continuing with {LOCAL_LEDGER_NOTE}")
        spec = load_spec(layout.spec_file)
    return spec


# -- 2. governance ---------------------------------------------------------------------------------


def governance_step(demo: DemoRun, spec: Spec) -> None:
    from federated.data import TASKS, DataError, data_root

    if demo.local:
        demo.narrator.step("governance: skipped -- data sets and grants exist only on the ledger (--local-ledger)")
        return
    demo.narrator.step("governance: stewards register their data sets and grant the other orgs of their sector")
    members = {o.name: o for o in spec.member_orgs}
    registered = {d["id"] for d in demo.json_of("data", "list")}
    for task in TASKS.values():
        orgs = [o for o in task.default_orgs if o in members]
        for org in orgs:
            dataset = task.dataset_id(org)
            if dataset in registered:
                demo.narrator.detail(f"{dataset}: already registered")
                continue
            try:
                source = data_root() / task.dataset
            except DataError as exc:
                raise UserError(f"governance: {exc}") from None
            manifest = next((p for p in sorted(source.glob("*")) if p.is_file() and p.suffix in (".csv", ".data")), None)
            if manifest is None:
                raise UserError(f"governance: no data file in {source} to fingerprint for {dataset}")
            demo.run("data", "register", dataset, "--kind", "tabular", "--sha256", str(manifest),
                     "--sensitivity", "confidential" if task.org_kind == "hospital" else "internal",
                     "--as", f"{org}:steward")
        for org in orgs:
            dataset = task.dataset_id(org)
            grants = demo.json_of("data", "grants", dataset, "--as", org)
            active = {(g.get("grantee"), g.get("purpose")) for g in grants if g.get("state") == "active"}
            for other in orgs:
                if other != org and (other, task.purpose) not in active:
                    demo.run("data", "grant", dataset, "--to", other, "--purpose", task.purpose, "--as", f"{org}:steward")


# -- 3. twins --------------------------------------------------------------------------------------


def twins_step(demo: DemoRun, spec: Spec) -> None:
    port = spec.port_range[1] + 11  # just above the network's own ports, so two demos side by side do not collide
    args = ["twins", "run", *TWINS_ASSETS, "--port", str(port)] + (["--anchor", "file"] if demo.local else [])
    demo.narrator.step("twins: OPC-UA simulators -> bridge -> twins -> anchoring, in the background"
                       + (f" ({LOCAL_LEDGER_NOTE})" if demo.local else ""))
    demo.show(args)
    log = Layout(demo.home).logs / "demo-twins.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        demo.twins = subprocess.Popen(demo.argv(*args, "--json"), stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # our Ctrl-C must not reach it before we stop it in order
    demo.narrator.detail(f"live output in {log}")


def twins_snapshot(demo: DemoRun) -> dict[str, Any]:
    from orchestrator.cli_twins import twins_status

    try:
        return twins_status(demo.home)
    except UserError:
        return {}


def stop_twins(demo: DemoRun) -> None:
    if demo.twins is None or demo.twins.poll() is not None:
        return
    demo.twins.send_signal(signal.SIGINT)  # the run seals and anchors what is pending, then stops its children
    try:
        demo.twins.wait(timeout=60)
    except subprocess.TimeoutExpired:
        demo.twins.kill()
        demo.twins.wait()


# -- 4. federated ----------------------------------------------------------------------------------


def fl_ledger_args(demo: DemoRun) -> list[str]:
    return ["--ledger-file", str(demo.home / "flower" / "demo-ledger.json")] if demo.local else []


def federated_step(demo: DemoRun, rounds: int) -> list[str]:
    from federated.data import TASKS

    tasks = [f"{name}-v1" for name in TASKS]
    for task in tasks:
        demo.narrator.step(f"federated: {task}, {rounds} governed rounds on Flower's deployment engine"
                           + (f" ({LOCAL_LEDGER_NOTE})" if demo.local else ""))
        extra = ["--grant-all"] if demo.local else []
        demo.run("fl", "run", task, "--rounds", str(rounds), *fl_ledger_args(demo), *extra)
    return tasks


# -- 5. alert, 6. summary --------------------------------------------------------------------------


def wait_for_alert(demo: DemoRun, timeout: float = ALERT_WAIT_S) -> list[dict[str, Any]]:
    demo.narrator.step("alert: waiting for a twin to raise one")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alerts = twins_snapshot(demo).get("alerts") or []
        if alerts:
            first = alerts[0]
            demo.narrator.detail(f"alert on {first.get('asset')}: {first.get('reason') or first.get('kind') or first}")
            return alerts
        if demo.twins is not None and demo.twins.poll() is not None:
            raise UserError(f"the twins run stopped (exit {demo.twins.returncode}); see {Layout(demo.home).logs / 'demo-twins.log'}")
        time.sleep(1.0)
    demo.narrator.detail(f"no alert within {timeout:.0f} s (the twins keep running; the dashboard shows them)")
    return []


def summarise(demo: DemoRun, spec: Spec, tasks: list[str], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    from orchestrator.cli import status_nodes

    nodes = status_nodes(demo.home)
    heights = [n["height"] for n in nodes if n.get("height") is not None]
    verified = {}
    for task in tasks:
        result = demo.run("fl", "verify", task, *fl_ledger_args(demo), "--json", quiet=True, check=False)
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = {}
        verified[task] = {"exit": result.returncode, "verified": report.get("verified"), "problems": len(report.get("problems") or [])}
    twins = twins_snapshot(demo)
    store = twins.get("store") or {}
    summary = {
        "nodes": {"total": len(nodes), "healthy": sum(1 for n in nodes if n["healthy"])},
        "block_height": max(heights) if heights else None,
        "federated": verified,
        "anchors": store.get("anchored"),
        "readings": store.get("readings"),
        "alerts": len(alerts) if alerts else len(twins.get("alerts") or []),
        "ledger": LOCAL_LEDGER_NOTE if demo.local else "Fabric",
        "elapsed_s": round(demo.narrator.elapsed(), 1),
    }
    demo.narrator.step("summary")
    demo.narrator.detail(f"nodes healthy      {summary['nodes']['healthy']}/{summary['nodes']['total']}")
    demo.narrator.detail(f"block height       {summary['block_height'] if summary['block_height'] is not None else '-'}")
    for task, v in verified.items():
        state = f"{v['verified']} model hashes verified" if v["exit"] == 0 else f"VERIFICATION FAILED ({v['problems']} problems)"
        demo.narrator.detail(f"{task:<18} {state}")
    demo.narrator.detail(f"anchored batches   {summary['anchors']} ({summary['readings']} readings)")
    demo.narrator.detail(f"alerts             {summary['alerts']}")
    demo.narrator.detail(f"ledger             {summary['ledger']}")
    return summary


# -- 7. dashboard and the end ----------------------------------------------------------------------


def serve_dashboard(demo: DemoRun, port: int, duration: float | None) -> None:
    from orchestrator.dashboard.server import DashboardConfig, start, stop

    spec = load_spec(Layout(demo.home).spec_file)
    steward = (spec.member_orgs[0].name, "steward")
    config = DashboardConfig(
        home=demo.home, port=port, acting_as=steward,
        fl_ledger="file" if demo.local else "fabric",
        fl_ledger_file=demo.home / "flower" / "demo-ledger.json" if demo.local else None,
        twins_anchor="file" if demo.local else "fabric",
    )
    try:
        server, thread = start(config)
    except OSError as exc:
        raise UserError(f"cannot serve the dashboard on 127.0.0.1:{port}: {exc.strerror or exc}; pick --dashboard-port") from None
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    until = f"for {duration:.0f} s" if duration is not None else "until Ctrl-C"
    demo.narrator.step(f"dashboard: {server.url} ({until})")
    (demo.home / "demo.json").write_text(json.dumps({**demo.summary, "dashboard": server.url}, indent=2))
    try:
        done.wait(timeout=duration)
    finally:
        stop(server, thread)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def shut_down(demo: DemoRun) -> None:
    from orchestrator.control import stop_supervisor

    demo.narrator.step("shutting down: twins, then " + ("every process of the home" if demo.started_network
                                                         else "nothing else (the network was running before the demo)"))
    stop_twins(demo)
    if demo.started_network:
        stop_supervisor(demo.home)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    if args.duration is not None and args.duration < 0:
        raise UserError("--duration must be >= 0")
    demo = DemoRun(home_of(args), Narrator(), args.local_ledger)
    demo.narrator.step(f"TwinLedger demo in {demo.home}" + (f" ({LOCAL_LEDGER_NOTE} for the ledger)" if demo.local else ""))
    try:
        spec = network_step(demo, args.port_base)
        governance_step(demo, spec)
        twins_step(demo, spec)
        tasks = federated_step(demo, args.rounds)
        alerts = wait_for_alert(demo, args.alert_wait)
        demo.summary = summarise(demo, spec, tasks, alerts)
        serve_dashboard(demo, args.dashboard_port, args.duration)
    finally:
        shut_down(demo)
    bad = [t for t, v in demo.summary.get("federated", {}).items() if v["exit"] != 0]
    if bad:
        raise UserError(f"model hashes did not verify for {', '.join(bad)}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `demo` to the `twinledger` parser."""
    s = sub.add_parser("demo", parents=[common], help="the whole system on the default consortium, then the dashboard",
                       description=(__doc__ or "").split("\n\n")[0])
    s.add_argument("--duration", type=float, metavar="S",
                   help="serve the dashboard S seconds after the summary, then stop (default: until Ctrl-C)")
    s.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"federated rounds per task (default {DEFAULT_ROUNDS})")
    s.add_argument("--dashboard-port", type=int, default=8780, help="dashboard port on 127.0.0.1 (default 8780)")
    s.add_argument("--port-base", type=int, help="first port of a new network (default 17000)")
    s.add_argument("--alert-wait", type=float, default=ALERT_WAIT_S, metavar="S",
                   help=f"longest wait for a twin's alert (default {ALERT_WAIT_S:.0f})")
    s.add_argument("--local-ledger", action="store_true",
                   help="without Fabric peers: skip governance, anchor twins to a local file, FL rounds to a local JSON "
                        "ledger (all labelled; for machines where the Fabric binaries cannot be built)")
    s.set_defaults(func=cmd_demo)


