"""`twinledger demo`: the whole system on the default consortium, narrated, then the dashboard.

The demo is a tour of the CLI: every step after the network runs the same `twinledger` command a user
would type (printed before it runs, output indented beneath), so what the demo shows is exactly what
the commands do. Steps:

1. network   -- `up` unless every member org's peer already answers /healthz (then the running network
                is used as it is, and the demo leaves it running at the end); the ledger is the real Fabric
                network of the home, there is no other;
2. governance-- each org's steward registers its federated data set (SHA-256 of the real file) and
                grants every other org of its sector the task's purpose (``fl:<task>``), skipping what
                the ledger already holds, so a second demo on the same home submits nothing new;
3. twins     -- `twins run` in the background: OPC-UA simulators, the bridge, twins, batches anchored on the
                ledger (twins contract) by each org's operator;
4. federated -- `fl run` of every task of federated.data.TASKS (the plants' maintenance task, the hospitals'
                cardiac and sepsis tasks), each round
                committed on the ledger (models contract), each org's data use checked and recorded;
5. alert     -- waits (bounded) for a twin's alert raised on the ledger;
6. summary   -- nodes, block height, rounds with model hashes verified (`fl verify`), anchors, alerts;
7. dashboard -- served on 127.0.0.1 until Ctrl-C (or ``--duration``), acting as the first org's steward;
                its login URL (with the token) printed and written to HOME/demo.json (0600); then
                everything the demo started stops, in reverse order.

When `up` cannot bring the peers up (no Fabric binaries), the demo stops with that one line: without
the ledger there is nothing to govern, anchor or record.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from network.files import open_private_log, private_dir
from network.layout import Layout
from network.spec import Spec, load_spec
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of

ALERT_WAIT_S = 120.0
DEFAULT_ROUNDS = 3
#: Twins: both plants' machines and both hospitals' monitors (the sepsis replays raise NEWS2 alerts).
TWINS_ASSETS = ("--machines", "plant1:2", "--machines", "plant2:2", "--monitors", "hospital1:2", "--monitors", "hospital2:1")


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

    def run_all(self, commands: Sequence[Sequence[str]], quiet: bool = False,
                check: bool = True) -> list[subprocess.CompletedProcess]:
        """Independent `twinledger` commands at once (each its own data set or its own read); each printed with
        its output beneath, in the given order, once all have finished. UserError if one failed."""
        procs = [subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for args in commands]
        results = []
        for args, proc in zip(commands, procs):
            out, _ = proc.communicate()
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
            if not quiet:
                self.show(args)
                for line in out.splitlines():
                    self.narrator.detail("  " + line.rstrip())
        for args, result in zip(commands, results):
            if check and result.returncode != 0:
                tail = " | ".join(result.stdout.strip().splitlines()[-3:])
                raise UserError(f"demo step `twinledger {' '.join(args)}` failed (exit {result.returncode}): {tail}")
        return results

    def json_of(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", quiet=True).stdout)


# -- 1. network ------------------------------------------------------------------------------------


def peers_answering(spec: Spec) -> set[str]:
    from network.processes.health import probe

    return {n.org for n in spec.nodes() if n.type == "peer" and probe(f"{n.operations_url}/healthz")}


def network_step(demo: DemoRun, port_base: int | None) -> Spec:
    layout = Layout(demo.home)
    if layout.spec_file.exists():
        spec = load_spec(layout.spec_file)
        if {o.name for o in spec.member_orgs} <= peers_answering(spec):
            demo.narrator.step(f"network: already running in {demo.home} (every member org's peer answers); using it")
            return spec
    demo.narrator.step("network: CAs, identities, orderers, peers, channel, chaincode, org registry")
    # `up` runs as the command a user types (output beneath); the demo stops what it started at the end,
    # including the CAs of an `up` that failed half way.
    demo.started_network = True
    demo.run("up", *(["--port-base", str(port_base)] if port_base is not None else []))
    return load_spec(layout.spec_file)


# -- 2. governance ---------------------------------------------------------------------------------


def governance_step(demo: DemoRun, spec: Spec) -> None:
    from federated.data import TASKS, DataError, data_root

    demo.narrator.step("governance: stewards register their data sets and grant the other orgs of their sector")
    members = {o.name: o for o in spec.member_orgs}
    registered = {d["id"] for d in demo.json_of("data", "list")}
    sectors = [(task, [o for o in task.default_orgs if o in members]) for task in TASKS.values()]
    # Each command touches its own data set's keys only, so the stewards act at the same time.
    registrations = []
    for task, orgs in sectors:
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
            registrations.append(("data", "register", dataset, "--kind", "tabular", "--sha256", str(manifest),
                                  "--sensitivity", "confidential" if task.org_kind == "hospital" else "internal",
                                  "--as", f"{org}:steward"))
    demo.run_all(registrations)
    # Then each owner's grants to the other orgs of its sector that the ledger does not hold active yet.
    owners = [(task, org) for task, orgs in sectors for org in orgs]
    listed = demo.run_all([("data", "grants", task.dataset_id(org), "--as", org, "--json") for task, org in owners], quiet=True)
    active = {task.dataset_id(org): {(g.get("grantee"), g.get("purpose")) for g in json.loads(r.stdout) if g.get("state") == "active"}
              for (task, org), r in zip(owners, listed)}
    demo.run_all([("data", "grant", task.dataset_id(org), "--to", other, "--purpose", task.purpose, "--as", f"{org}:steward")
                  for task, orgs in sectors for org in orgs for other in orgs
                  if other != org and (other, task.purpose) not in active[task.dataset_id(org)]])


# -- 3. twins --------------------------------------------------------------------------------------


def twins_step(demo: DemoRun, spec: Spec) -> None:
    port = spec.port_range[1] + 11  # just above the network's own ports, so two demos side by side do not collide
    args = ["twins", "run", *TWINS_ASSETS, "--port", str(port)]
    demo.narrator.step("twins: OPC-UA simulators -> bridge -> twins -> batches anchored on the ledger, in the background")
    demo.show(args)
    log = Layout(demo.home).logs / "demo-twins.log"
    private_dir(log.parent)
    with open_private_log(log) as out:
        demo.twins = subprocess.Popen(demo.argv(*args, "--json"), stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # our Ctrl-C must not reach it before we stop it in order
    demo.narrator.detail(f"live output in {log}")


def twins_snapshot(demo: DemoRun) -> dict[str, Any]:
    from orchestrator.cli_twins_views import twins_status

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


def federated_step(demo: DemoRun, rounds: int) -> list[str]:
    from federated.data import TASKS

    tasks = [f"{name}-v1" for name in TASKS]
    for task in tasks:
        demo.narrator.step(f"federated: {task}, {rounds} governed round(s) on Flower's deployment engine, recorded on the ledger")
        demo.run("fl", "run", task, "--rounds", str(rounds))
    return tasks


# -- 5. alert, 6. summary --------------------------------------------------------------------------


def wait_for_alert(demo: DemoRun, timeout: float = ALERT_WAIT_S) -> list[dict[str, Any]]:
    """The twins' alert episodes once one is committed on the ledger (twins:RaiseAlert has its tx id)."""
    demo.narrator.step("alert: waiting for a twin's alert to be raised on the ledger (as `twinledger twins status` shows)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raised = [a for a in twins_snapshot(demo).get("ledger_alerts") or [] if a.get("tx_id")]
        if raised:
            first = raised[0]
            text = (first.get("detail") or {}).get("text") or first.get("kind")
            demo.narrator.detail(f"alert on {first['asset']} ({first['kind']}, score {first['score']}): {text}")
            demo.narrator.detail(f"raised on the ledger in tx {first['tx_id']}")
            return raised
        if demo.twins is not None and demo.twins.poll() is not None:
            raise UserError(f"the twins run stopped (exit {demo.twins.returncode}); see {Layout(demo.home).logs / 'demo-twins.log'}")
        time.sleep(1.0)
    demo.narrator.detail(f"no alert on the ledger within {timeout:.0f} s (the twins keep running; the dashboard shows them)")
    return []


def anchored_reading(demo: DemoRun) -> tuple[str, int, str] | None:
    """(asset, seq, prop) of a reading in the latest batch anchored on the ledger, to prove with `verify reading`."""
    from twins.anchoring.store import ReadingStore

    path = demo.home / "twins" / "readings.sqlite"
    if not path.exists():
        return None
    store = ReadingStore(path)
    try:
        for anchor in store.recent_anchors(1):
            batch = store.batch(anchor["batch_id"])
            if batch is not None and batch.record.seq_ranges:
                key, (_, last) = min(batch.record.seq_ranges.items())
                asset = key.split("/")[0]
                # one property: a machine's product has 14 values under one sequence number
                found = store.find_readings(asset, int(last), key.split("/")[1] if "/" in key else None)
                if found:
                    return asset, int(last), found[0].reading.prop
    finally:
        store.close()
    return None


def summarise(demo: DemoRun, spec: Spec, tasks: list[str], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    from orchestrator.cli import status_nodes

    demo.narrator.step("summary: what the ledger holds, checked against the local stores")
    # The checks read only: they run at once, each printed (`fl verify`'s JSON summarised below) when all are done.
    reading = anchored_reading(demo)
    checks = [("fl", "verify", task, "--json") for task in tasks]
    if reading is not None:
        checks.append(("verify", "reading", reading[0], str(reading[1]), "--prop", reading[2]))
    results = demo.run_all(checks, quiet=True, check=False)
    verified = {}
    for task, args, result in zip(tasks, checks, results):
        demo.show(args)
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = {}
        verified[task] = {"exit": result.returncode, "verified": report.get("verified"), "problems": len(report.get("problems") or [])}
    proof: dict[str, Any] = {}
    if reading is not None:
        demo.show(checks[-1])
        for line in results[-1].stdout.splitlines():
            demo.narrator.detail("  " + line.rstrip())
        proof = {"asset": reading[0], "seq": reading[1], "prop": reading[2], "exit": results[-1].returncode}
    twins = twins_snapshot(demo)
    store = twins.get("store") or {}
    nodes = status_nodes(demo.home)
    heights = [n["height"] for n in nodes if n.get("height") is not None]
    on_ledger = [a for a in twins.get("ledger_alerts") or [] if a.get("tx_id")]
    summary = {
        "nodes": {"total": len(nodes), "healthy": sum(1 for n in nodes if n["healthy"])},
        "block_height": max(heights) if heights else None,
        "federated": verified,
        "anchors": store.get("anchored"),
        "readings": store.get("readings"),
        "reading_verified": proof,
        "alerts": max(len(alerts), len(on_ledger)),
        "ledger": f"Fabric, channel {spec.channel}",
        "elapsed_s": round(demo.narrator.elapsed(), 1),
    }
    demo.narrator.detail(f"nodes healthy      {summary['nodes']['healthy']}/{summary['nodes']['total']}")
    demo.narrator.detail(f"block height       {summary['block_height'] if summary['block_height'] is not None else '-'}")
    for task, v in verified.items():
        state = f"{v['verified']} model hashes verified" if v["exit"] == 0 else f"VERIFICATION FAILED ({v['problems']} problems)"
        demo.narrator.detail(f"{task:<18} {state}")
    demo.narrator.detail(f"anchored batches   {summary['anchors']} ({summary['readings']} readings)")
    if proof:
        demo.narrator.detail(f"reading proof      {proof['asset']}/{proof['prop']} #{proof['seq']}: "
                             + ("matches its anchor on the ledger" if proof["exit"] == 0 else "VERIFICATION FAILED"))
    demo.narrator.detail(f"alerts on ledger   {summary['alerts']}")
    demo.narrator.detail(f"ledger             {summary['ledger']}")
    return summary


# -- 7. dashboard and the end ----------------------------------------------------------------------


def serve_dashboard(demo: DemoRun, port: int, duration: float | None) -> None:
    from orchestrator.dashboard.auth import token_file, write_secret
    from orchestrator.dashboard.server import DashboardConfig, start, stop

    spec = load_spec(Layout(demo.home).spec_file)
    steward = (spec.member_orgs[0].name, "steward")
    config = DashboardConfig(home=demo.home, port=port, acting_as=steward)
    try:
        server, thread = start(config)
    except OSError as exc:
        raise UserError(f"cannot serve the dashboard on 127.0.0.1:{port}: {exc.strerror or exc}; pick --dashboard-port") from None
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    until = f"for {duration:.0f} s" if duration is not None else "until Ctrl-C"
    demo.narrator.step(f"dashboard: {server.login_url} ({until}; acting as {steward[0]}:{steward[1]})")
    demo.narrator.detail(f"the URL holds the dashboard's login token; it is also in {token_file(demo.home)} (0600)")
    # The login URL makes demo.json a secret too: written owner-only from its first byte, like the token.
    state = {**demo.summary, "dashboard": server.url, "dashboard_login": server.login_url}
    write_secret(demo.home / "demo.json", json.dumps(state, indent=2))
    try:
        done.wait(timeout=duration)
    finally:
        stop(server, thread)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def shut_down(demo: DemoRun) -> None:
    from network.processes.control import stop_supervisor

    demo.narrator.step("shutting down: twins, then " + ("every process of the home" if demo.started_network
                                                         else "nothing else (the network was running before the demo)"))
    stop_twins(demo)
    if demo.started_network:
        stop_supervisor(demo.home)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise UserError("--rounds must be at least 1")
    if args.duration is not None and args.duration < 0:
        raise UserError("--duration must be >= 0")
    if args.dashboard_port and not _port_free(args.dashboard_port):  # found now, not after the whole demo
        raise UserError(f"--dashboard-port {args.dashboard_port}: the port is in use on 127.0.0.1; pick another")
    demo = DemoRun(home_of(args), Narrator())
    demo.narrator.step(f"TwinLedger demo in {demo.home}")
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
    proof = demo.summary.get("reading_verified") or {}
    if proof.get("exit"):
        raise UserError(f"reading {proof['asset']} #{proof['seq']} did not verify against its anchor on the ledger")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `demo` to the `twinledger` parser."""
    s = sub.add_parser("demo", parents=[common], help="the whole system on the default consortium, then the dashboard",
                       description=(__doc__ or "").split("\n\n")[0])
    s.add_argument("--duration", type=cli_inputs.seconds, metavar="S",
                   help="serve the dashboard S seconds after the summary, then stop (default: until Ctrl-C)")
    s.add_argument("--rounds", type=cli_inputs.positive, default=DEFAULT_ROUNDS, help=f"federated rounds per task (default {DEFAULT_ROUNDS})")
    s.add_argument("--dashboard-port", type=cli_inputs.port(allow_zero=True), default=8780, help="dashboard port on 127.0.0.1 (default 8780)")
    s.add_argument("--port-base", type=cli_inputs.port_base, help="first port of a new network (default 17000)")
    s.add_argument("--alert-wait", type=cli_inputs.seconds, default=ALERT_WAIT_S, metavar="S",
                   help=f"longest wait for a twin's alert (default {ALERT_WAIT_S:.0f})")
    s.set_defaults(func=cmd_demo)


