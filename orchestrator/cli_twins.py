"""`twinledger twins run | status | whatif | decide | ack` and `twinledger verify reading`: the digital twins from the CLI.

``twins decide`` / ``twins ack`` are the twins contract's DecideMaintenance / AckDecision on the alerts the bridge
raised on the ledger (``twins status`` lists them with their ids); the other commands work on the state below.

State lives under ``HOME/twins/``::

    sim/                 the OPC-UA simulators' history (history.sqlite) and the bridge's mapping (mapping.yaml)
    pki/                 OPC-UA application certificates (ORG/simulators, ORG/bridge; keys 0600) and trust/ (CA roots)
    readings.sqlite      the bridge's append-only store: readings, sealed batches, Merkle trees, twin states, anchors
    status.json          the bridge's live status (rewritten every anchoring interval and at its stop)
    anchor.json          where this twins state anchors: {"kind": "ledger", "channel", "chaincode"}
    ledger.json          channel, chaincode, and each org's operator identity and peer (the bridge's --ledger-config)
    models.json          the ledger task whose federated model the machine twins use, the model store and how often
                         the ledger is asked (twins.model.ledger_watch; `twins run --model-task/--model-store`)
    run.json             the last run: process ids, options, metrics URLs, start and stop times

Logs: ``HOME/logs/twins-simulators.log`` and ``HOME/logs/twins-bridge.log``.

Metrics: `twins run` gives the simulators and the bridge Prometheus ``/metrics`` endpoints on 127.0.0.1, by
default on the two ports after the OPC-UA ``--port`` (``metrics_ports``; ``--metrics-port 0`` turns them off).

OPC-UA security: SignAndEncrypt (twins.security.POLICY_NAME) by default. The simulators and the bridge present
application certificates enrolled at the Fabric CA of the OPC-UA org (``--opcua-org``, default the org of the first
asset group), and each end accepts only a peer whose certificate chains to the CA of an org with assets in the run.
``--insecure-opcua`` runs without security and says so on every run.

Models: the machine twins predict with the global model of the last committed round of the plants' maintenance task
on the ledger (``--model-task``, default maintenance-v1, `fl run`'s default), read from the model store (``--model-store``,
default HOME/flower/store, where `fl run` keeps it) and used only if its bytes hash to the round's committed SHA-256;
a new round is swapped in while the twins run. Before the first round, or while the ledger's round does not verify,
they say which model they use instead (``fallback:ai4i-rules-v1`` before any round). Patient twins use the NEWS2-like
rules: no federated task covers bedside vitals yet.

Anchoring is on the ledger only: `twins run` checks that each org's peer answers before it starts anything and
otherwise stops with one line saying the network is not up. The ledger keeps one chain of batches per org; a new
twins state joins it after its last batch (twins.runtime), so several twins homes can anchor on one network one
after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import shutil
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from network.files import private_dir, write_atomic
from network.layout import Layout
from network.spec import _NAME_RE as ORG_NAME_RE, SpecError, load_spec
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of

SIM_LOG, BRIDGE_LOG = "twins-simulators", "twins-bridge"
# When the user names no assets: the default consortium's plants and hospitals (network/default_spec.yaml).
DEFAULT_MACHINES = ("plant1:2", "plant2:2")
DEFAULT_MONITORS = ("hospital1:1", "hospital2:1")
# The signals `twins status` shows per kind of asset (the rest stays in --json).
#: How many recent alert episodes and sustainability reports `twins status` lists (--json too).
ALERTS_SHOWN = 10
KEY_SIGNALS = {
    "machine": ("RotationalSpeed", "Torque", "ToolWear", "ProcessTemperature"),
    "patient": ("HR", "O2Sat", "Temp", "SBP", "Resp"),
}


# --- the twins state folder ---------------------------------------------------------------------------
class TwinsDir:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "twins"
        self.sim = self.root / "sim"
        self.mapping = self.sim / "mapping.yaml"
        self.pki = self.root / "pki"
        self.store = self.root / "readings.sqlite"
        self.status = self.root / "status.json"
        self.anchor = self.root / "anchor.json"
        self.ledger = self.root / "ledger.json"
        self.run = self.root / "run.json"
        self.models = self.root / "models.json"

    def log(self, name: str) -> Path:
        return Layout(self.home).log_file(name)

    def read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    def running_pids(self) -> dict[str, int]:
        """The processes of the last run that still run (checked by command line, so a reused pid never counts)."""
        run = self.read_json(self.run) or {}
        out = {}
        for name, pid in (run.get("pids") or {}).items():
            try:
                cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            if "twins." in cmdline and str(self.root) in cmdline:
                out[name] = int(pid)
        return out


def anchor_label(anchor: dict[str, Any] | None) -> str:
    if not anchor:
        return "unknown anchor"
    return f"ledger channel {anchor.get('channel')} (chaincode {anchor.get('chaincode')})"


def _not_on_ledger(td: TwinsDir, anchor: dict[str, Any]) -> UserError:
    # a state written before anchoring became ledger-only: its batches were never on the ledger
    return UserError(f"the twins state in {td.root} was not anchored on the ledger (anchor kind "
                     f"{anchor.get('kind')!r}); start a new one in another --home")


def _require_state(td: TwinsDir) -> dict[str, Any]:
    anchor = td.read_json(td.anchor)
    if anchor is None or not td.store.exists():
        raise UserError(f"no twins state in {td.root}; start the twins with `twinledger twins run` (see --help)")
    if anchor.get("kind") != "ledger":
        raise _not_on_ledger(td, anchor)
    return anchor


# --- ledger reachability --------------------------------------------------------------------------------
def _ledger_hint() -> str:
    return "start the network with `twinledger up`"


def ledger_config(home: Path, orgs: list[str]) -> dict[str, Any]:
    """The ledger config (twins.anchoring.anchorer.connect_ledger) for ``orgs``, each anchoring as its org's
    operator (the twins contract accepts an operator or admin of the record's org; operator is the least
    privilege) through its first peer (``orchestrator.connect.peer_target``) — after checking that each such
    peer answers. ``UserError`` otherwise."""
    from orchestrator.bringup import CHAINCODE_NAME
    from orchestrator.connect import peer_target
    from network.processes.health import probe

    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"cannot anchor on the ledger: there is no network in {home}; {_ledger_hint()}")
    spec = load_spec(layout.spec_file)
    out: dict[str, Any] = {"channel": spec.channel, "chaincode": CHAINCODE_NAME, "orgs": {}}
    down = []
    for org in orgs:
        try:
            peers = spec.nodes_of(spec.org(org).name, "peer")
        except SpecError as exc:
            raise UserError(f"cannot anchor on the ledger: {exc}") from None
        if not peers:
            raise UserError(f"cannot anchor on the ledger: org {org} runs no peer")
        # the peer first: when it is down, that is what the user must fix, whatever else is missing
        if not probe(f"http://127.0.0.1:{peers[0].ports.operations}/healthz"):
            down.append(peers[0].name)
            continue
        try:
            t = peer_target(spec, layout, org, "operator")
        except SpecError as exc:
            raise UserError(f"cannot anchor on the ledger: {exc}") from None
        out["orgs"][org] = {"endpoint": t.endpoint, "msp_dir": str(t.msp_dir), "msp_id": t.msp_id,
                            "tls_root_cert": str(t.tls_ca), "tls_client_cert": str(t.tls_cert),
                            "tls_client_key": str(t.tls_key)}
    if down:
        raise UserError(f"cannot anchor on the ledger: the network's peers are not up ({', '.join(down)} not answering); "
                        f"{_ledger_hint()}")
    return out


# --- twins run ------------------------------------------------------------------------------------------
#: The what-if horizon simulates every product in it: a year is already ~10^5 products per scenario.
WHATIF_MAX_HOURS = 24 * 366


def models_config(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What the bridge reads from HOME/twins/models.json (twins.model.ledger_watch.ModelsConfig)."""
    from orchestrator.cli_fl import _check_task_id  # the chaincode's own task-ID rule

    task = args.model_task
    _check_task_id(task)
    store = Path(args.model_store).expanduser().resolve() if args.model_store else home / "flower" / "store"
    return {"tasks": {"machine": task}, "store": str(store), "poll_s": args.model_poll}


#: Assets of one kind per org in one run: more is a typo, not a plant (each is a simulator and a twin).
MAX_ASSETS_PER_ORG = 1000


def _org_count(text: str) -> str:
    """ORG:N, with ORG a valid consortium org name (its batches carry it into batch ids on the ledger)."""
    org, _, n = text.partition(":")
    # [0-9], not str.isdigit: that also takes "²", which int() then refuses
    if not ORG_NAME_RE.fullmatch(org) or not re.fullmatch(r"[0-9]{1,4}", n) or not 1 <= int(n) <= MAX_ASSETS_PER_ORG:
        raise argparse.ArgumentTypeError(f"expected ORG:COUNT with COUNT 1 to {MAX_ASSETS_PER_ORG} (e.g. plant1:2), "
                                         f"got {text!r}")
    return text


def metrics_ports(port: int, metrics_port: int | None) -> tuple[int, int]:
    """(simulators, bridge) metrics ports of `twins run`: ``metrics_port`` and the next one, by default the two
    ports after the OPC-UA port; (0, 0) when ``metrics_port`` is 0 (no metrics)."""
    base = port + 1 if metrics_port is None else metrics_port
    return (base, base + 1) if base else (0, 0)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _last_log_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class _Stopper:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop. While a child is being spawned the signal only sets the
    flag (a KeyboardInterrupt between Popen and remembering the child would leave it running); elsewhere it
    interrupts whatever blocks (waiting for a child to be ready) so that the stop starts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self._defer = 0
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if not self._defer:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1


class _LiveLine:
    """One status line per second from the bridge's status.json: rates come from two consecutive statuses."""

    def __init__(self, td: TwinsDir, since: float) -> None:
        self.td = td
        self.since = since  # status.json of an earlier run is not this run's
        self.prev: tuple[float, int] | None = None
        self.rate = 0.0
        self.last: dict[str, Any] = {}

    def update(self) -> dict[str, Any]:
        st = self.td.read_json(self.td.status)
        if st and st.get("time") and float(st["time"]) >= self.since:
            now, readings = float(st["time"]), int(st.get("counters", {}).get("readings", 0))
            if self.prev and now > self.prev[0]:
                self.rate = (readings - self.prev[1]) / (now - self.prev[0])
            if not self.prev or now > self.prev[0]:
                self.prev = (now, readings)
            self.last = st
        return self.last

    def fields(self, elapsed: float) -> dict[str, Any]:
        """The live figures (`twins run --json` prints them as one JSON object per second)."""
        st = self.last
        c, b = st.get("counters", {}), st.get("bridge", {})
        twins = st.get("twins", {})
        return {
            "elapsed_s": round(elapsed, 1), "status": bool(st), "values_per_s": round(self.rate, 1),
            "twins_live": sum(1 for t in twins.values() if t.get("updates")), "twins": len(twins),
            "sealed": c.get("batches", 0), "anchored": c.get("anchored", 0), "anchor_errors": c.get("anchor_errors", 0),
            "lost": b.get("lost", 0), "alerts": len(st.get("alerts", [])), "alerts_recorded": c.get("alerts_raised", 0),
            "top_risk": _top_risk(twins),
            "opcua": "connected" if b.get("connected", True) else "reconnecting" if b.get("connects") else "connecting",
        }

    def text(self, elapsed: float) -> str:
        f = self.fields(elapsed)
        parts = [f"[{elapsed:5.0f}s]"]
        if not f["status"]:
            return " | ".join(parts + ["waiting for the bridge's first status…"])
        parts += [f"{f['values_per_s']:6.0f} values/s", f"twins {f['twins_live']}/{f['twins']}",
                  f"sealed {f['sealed']}", f"anchored {f['anchored']}"]
        if f["anchor_errors"]:
            parts.append(f"anchor errors {f['anchor_errors']} (retrying)")
        parts += [f"lost {f['lost']}", f"alerts {f['alerts']} ({f['alerts_recorded']} recorded)"]
        if f["top_risk"]:
            parts.append(f"top risk {f['top_risk']}")
        if f["opcua"] != "connected":
            parts.append(f"OPC-UA {f['opcua']}")
        return " | ".join(parts)


def _top_risk(twins: dict[str, dict[str, Any]]) -> str:
    """The machine most likely to fail next and the patient with the highest NEWS2-like score."""
    out = []
    machines = [(t["prediction"]["probability"], a, t["prediction"].get("model", "")) for a, t in twins.items()
                if t.get("prediction") and t["prediction"].get("probability") is not None]
    if machines:
        p, a, model = max(machines)
        out.append(f"{a} P(fail) {p:.3f} [{model}]")
    patients = [(t["risk"].get("score", 0), a, t["risk"].get("risk", "")) for a, t in twins.items() if t.get("risk")]
    if patients:
        score, a, band = max(patients)
        out.append(f"{a} NEWS2-like {score} ({band})")
    return ", ".join(out)


def cmd_run(args: argparse.Namespace) -> int:
    from twins.procs import Proc, bridge_argv, simulator_argv

    home = home_of(args)
    td = TwinsDir(home)
    machines = args.machines if args.machines is not None else ([] if args.monitors else list(DEFAULT_MACHINES))
    monitors = args.monitors if args.monitors is not None else ([] if args.machines else list(DEFAULT_MONITORS))
    if not machines and not monitors:
        raise UserError("nothing to run: give --machines ORG:N and/or --monitors ORG:N")
    if args.duration < 0 or args.interval <= 0 or args.machine_rate <= 0 or args.monitor_rate <= 0 or args.report_every < 0:
        raise UserError("--duration and --report-every must be >= 0 and --interval, --machine-rate, --monitor-rate > 0")
    running = td.running_pids()
    if running:
        raise UserError(f"the twins of {home} already run (pids {', '.join(map(str, running.values()))}); "
                        "stop that run first (Ctrl-C in its terminal)")
    orgs = sorted({m.partition(":")[0] for m in machines + monitors})
    models = models_config(home, args)

    # The ledger must answer before anything starts: there is nowhere else to anchor.
    ledger = ledger_config(home, orgs)
    target: dict[str, Any] = {"kind": "ledger", "channel": ledger["channel"], "chaincode": ledger["chaincode"]}
    previous = td.read_json(td.anchor)
    if previous and previous.get("kind") != "ledger":
        raise _not_on_ledger(td, previous)
    if not _port_free(args.port):
        raise UserError(f"port {args.port} on 127.0.0.1 is in use; pick a free one with --port")
    sim_metrics, bridge_metrics = metrics_ports(args.port, args.metrics_port)
    if not 0 <= sim_metrics <= 65534:
        raise UserError(f"metrics ports {sim_metrics} and {sim_metrics + 1} are not valid ports; give --metrics-port P "
                        "(1 to 65534: simulators on P, bridge on P+1), or --metrics-port 0 for none")
    for what, p in (("simulators", sim_metrics), ("bridge", bridge_metrics)):
        if p and (p == args.port or not _port_free(p)):
            how = "--metrics-port" if args.metrics_port is not None else f"--port + {p - args.port}"
            raise UserError(f"port {p} on 127.0.0.1 (metrics of the {what}, {how}) is in use; give "
                            "--metrics-port P (simulators on P, bridge on P+1), or --metrics-port 0 for none")

    opcua_org = args.opcua_org or (machines or monitors)[0].partition(":")[0]
    if opcua_org not in orgs:
        raise UserError(f"--opcua-org {opcua_org} has no assets in this run (orgs: {', '.join(orgs)})")
    td.root.mkdir(parents=True, exist_ok=True)
    private_dir(td.log(SIM_LOG).parent)  # HOME/logs: 0700, like the supervisor's
    pki = None
    if not args.insecure_opcua:
        from network.ca import EnrolmentError
        from twins.security import prepare_pki

        try:
            pki = prepare_pki(home, opcua_org, orgs, td.pki)
        except (EnrolmentError, OSError, ValueError) as exc:
            raise UserError(f"cannot get the OPC-UA certificates from ca-{opcua_org}: {exc}") from None
    td.write_json(td.anchor, target)
    td.write_json(td.ledger, ledger)
    td.write_json(td.models, models)
    extra = ["--report-every", str(args.report_every)]
    anchor_text = anchor_label(target)

    def say(line: str, **fields: Any) -> None:
        if args.json:  # one JSON object per line, each naming the anchor target
            print(json.dumps({"message": line, "anchor": anchor_label(target), **fields}), flush=True)
        else:
            print(line, flush=True)

    what = ", ".join([f"machines {m}" for m in machines] + [f"monitors {m}" for m in monitors])
    if pki is None:
        from twins.security import INSECURE_WARNING

        print(f"twinledger: {INSECURE_WARNING}", file=sys.stderr, flush=True)  # loud, on every run
        if args.json:
            say(INSECURE_WARNING, event="insecure-opcua")
        opcua_text = "OPC-UA WITHOUT SECURITY"
    else:
        from twins.security import POLICY_NAME

        opcua_text = (f"OPC-UA {POLICY_NAME} SignAndEncrypt, certificates from ca-{pki.org}, trusting the CAs of "
                      f"{', '.join(orgs)}")
    say(f"twins in {td.root}: {what}; OPC-UA on opc.tcp://127.0.0.1:{args.port} ({opcua_text}); anchoring every "
        f"{args.interval:g} s to the {anchor_text}", event="starting", opcua=opcua_text)
    say(f"models: machine twins use the last committed round of {models['tasks']['machine']} on the ledger, each model "
        f"checked against its committed SHA-256 (store {models['store']}, asked every {models['poll_s']:g} s; the AI4I "
        "rules, labelled fallback, until then); patient twins: NEWS2-like rules", event="models", models=models)

    stopper = _Stopper()
    procs: list[tuple[str, Proc]] = []
    sim_sec: dict[str, Any] = {"insecure": True} if pki is None else {
        "cert": pki.server.cert, "key": pki.server.key, "trust": [pki.trust]}
    bridge_sec: dict[str, Any] = {"insecure": True} if pki is None else {
        "cert": pki.bridge.cert, "key": pki.bridge.key, "trust": [pki.trust]}
    run_info: dict[str, Any] = {"pids": {}, "started_at": time.time(), "anchor": target, "port": args.port,
                                "opcua": opcua_text,
                                "machines": machines, "monitors": monitors, "duration": args.duration, "metrics": {}}
    t_live = time.monotonic()
    live = _LiveLine(td, since=time.time())
    error: str | None = None
    reason = "the end of --duration"
    tty = sys.stdout.isatty() and not args.json
    t_end: float | None = None
    refreshed = False
    with stopper.installed():
        try:
            steps = [
                ("simulators", simulator_argv(port=args.port, data_dir=td.sim, machines=machines, monitors=monitors,
                                              machine_rate=args.machine_rate, monitor_rate=args.monitor_rate,
                                              mapping_out=td.mapping, metrics_port=sim_metrics, **sim_sec), SIM_LOG),
                # history: a fresh bridge starts from each variable's first value, so nothing published is skipped
                ("bridge", bridge_argv(mapping=td.mapping, home=td.root, ledger_config=td.ledger, interval=args.interval,
                                       start_from="history", metrics_port=bridge_metrics, extra=extra, **bridge_sec),
                 BRIDGE_LOG),
            ]
            for name, argv, log in steps:
                with stopper.deferred():
                    p = Proc(argv, log=td.log(log))
                    procs.append((name, p))
                    run_info["pids"][name] = p.pid
                    td.write_json(td.run, run_info)
                try:
                    ready = p.wait_ready(60)
                except (RuntimeError, TimeoutError) as exc:
                    raise UserError(f"the twins {name} did not start: {exc}; last log line: {_last_log_line(td.log(log))}") from None
                if ready.get("metrics"):
                    run_info["metrics"][name] = ready["metrics"]
                    td.write_json(td.run, run_info)
            served = run_info["metrics"]
            metrics_text = ("metrics " + ", ".join(f"{n} {u}" for n, u in served.items()) + "; ") if served else ""
            say(f"running (simulators pid {procs[0][1].pid}, bridge pid {procs[1][1].pid}); {metrics_text}"
                + (f"stopping after {args.duration:g} s" if args.duration else "Ctrl-C stops everything"),
                event="running", pids={n: p.pid for n, p in procs}, metrics=served)
            t_live = time.monotonic()
            next_tick = t_live + 1.0
            while not stopper.requested:
                elapsed = time.monotonic() - t_live
                if args.duration and elapsed >= args.duration:
                    break
                dead = [(n, p) for n, p in procs if p.p.poll() is not None]
                if dead:
                    n, p = dead[0]
                    error = (f"the twins {n} stopped unexpectedly (exit {p.p.returncode}); "
                             f"last log line: {_last_log_line(td.log(SIM_LOG if n == 'simulators' else BRIDGE_LOG))}")
                    break
                time.sleep(max(0.0, min(next_tick, t_live + (args.duration or 1e9)) - time.monotonic()))
                if time.monotonic() >= next_tick:
                    next_tick += 1.0
                    live.update()
                    line = live.text(time.monotonic() - t_live)
                    if args.json:
                        print(json.dumps({"event": "live", "anchor": anchor_label(target),
                                          **live.fields(time.monotonic() - t_live)}), flush=True)
                    elif tty:  # refresh one line in place; a wrapped line could not be rewritten
                        print("\r\x1b[K" + line[:shutil.get_terminal_size().columns - 1], end="", flush=True)
                        refreshed = True
                    else:
                        print(line, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            # From here a signal only sets the flag: stopping is bounded (SIGTERM, then SIGKILL) and must finish.
            with stopper.deferred():
                t_end = time.monotonic()
                if stopper.requested:
                    reason = stopper.requested
                if refreshed:
                    print(flush=True)  # end the line refreshed in place
                codes = {}
                # bridge first: at SIGTERM it seals what is pending and waits for the anchorer
                for name, p in reversed(procs):
                    codes[name] = p.stop(timeout=20)
                run_info.update(stopped_at=time.time(), exit_codes=codes, pids={})
                if procs:
                    td.write_json(td.run, run_info)
    if error:
        raise UserError(error)
    st = live.update()
    c, b = st.get("counters", {}), st.get("bridge", {})
    bad = {n: code for n, code in codes.items() if code not in (0, -signal.SIGTERM)}
    say(f"stopped on {reason} after {(t_end or time.monotonic()) - t_live:.1f} s: {c.get('readings', 0)} values, "
        f"{c.get('batches', 0)} batches sealed, {c.get('anchored', 0)} anchored, {b.get('lost', 0)} lost, "
        f"{c.get('alerts_raised', 0)} alerts recorded"
        + (f"; exit codes {bad}" if bad else "")
        + f"; state kept in {td.root} (`twinledger twins status`, `twinledger verify reading ASSET SEQ`)",
        event="stopped", reason=reason, values=c.get("readings", 0), sealed=c.get("batches", 0),
        anchored=c.get("anchored", 0), lost=b.get("lost", 0), alerts_recorded=c.get("alerts_raised", 0), exit_codes=codes)
    return 1 if bad else 0


# --- twins status ----------------------------------------------------------------------------------------
def _asset_view(asset: str, snap: dict[str, Any]) -> dict[str, Any]:
    kind = snap.get("kind", "generic")
    est = snap.get("estimates", {})
    view: dict[str, Any] = {
        "asset": asset, "org": snap.get("org"), "kind": kind, "updates": snap.get("updates", 0),
        "signals": {k: est[k]["value"] for k in KEY_SIGNALS.get(kind, tuple(est)) if k in est},
    }
    if kind == "machine":
        pred = snap.get("prediction") or {}
        sus = snap.get("sustainability") or {}
        model = pred.get("model")
        view["risk"] = {"failure_probability": pred.get("probability"), "model": model,
                        "model_kind": (model or "none").split(":", 1)[0], "model_sha256": pred.get("model_sha256")}
        view["energy_kwh"], view["co2_kg"] = sus.get("energy_kwh"), sus.get("co2_kg")
        view["failures_observed"] = (snap.get("failures") or {}).get("MachineFailure", 0)
    elif kind == "patient":
        r = snap.get("risk") or {}
        view["risk"] = {"news2": r.get("score"), "band": r.get("risk"), "model": r.get("label"), "missing": r.get("missing")}
    return view


def twins_status(home: Path) -> dict[str, Any]:
    """What `twins status --json` prints (also the basis of the text view)."""
    from twins.anchoring.store import ReadingStore

    td = TwinsDir(home)
    anchor = _require_state(td)
    st = td.read_json(td.status) or {}
    running = td.running_pids()
    store = ReadingStore(td.store)
    try:
        last = store.recent_anchors(5)
        counts = {"readings": store.count("readings"), "batches": store.count("batches"),
                  "anchored": store.count("anchors"), "pending": len(store.pending_batches())}
        episodes = store.alerts()
        reports = store.reports()
    finally:
        store.close()
    label = anchor_label(anchor)
    for a in last:
        a["anchor"] = label
    # alert episodes as recorded by the bridge (twins.anchoring.alert_outbox): the tx id is the alert's id on the
    # ledger (`twins decide` takes it); None while it waits in the outbox
    ledger_alerts = [{"key": e["key"], "org": e["org"], "asset": e["asset"], "kind": e["kind"], "score": e["score"],
                      "detail": e["detail"], "model": (e["detail"] or {}).get("model"),
                      "model_sha256": (e["detail"] or {}).get("model_sha256"), "tx_id": e["tx_id"], "opened_at_us": e["opened_at_us"],
                      "closed_at_us": e["closed_at_us"], "anchor": label} for e in episodes[-ALERTS_SHOWN:]]
    counts.update(alerts=len(episodes), alerts_pending=sum(1 for e in episodes if not e["tx_id"]),
                  reports=len(reports))
    return {
        "home": str(td.root), "running": bool(running), "pids": running,
        "anchor": dict(anchor, label=label),
        "updated_at": st.get("time"),
        "assets": {a: _asset_view(a, s) for a, s in sorted(st.get("twins", {}).items())},
        "plants": st.get("plants", {}), "alerts": st.get("alerts", []), "models": st.get("models", {}),
        "counters": st.get("counters", {}), "bridge": st.get("bridge", {}), "store": counts, "last_anchors": last,
        "ledger_alerts": ledger_alerts,
        "sustainability_reports": [dict(org=o, period=p, **r, anchor=label) for (o, p), r in sorted(reports.items())][-ALERTS_SHOWN:],
        "latency_ms": st.get("latency_ms", {}),
    }


def model_lines(models: dict[str, Any]) -> list[str]:
    """`twins status`'s lines on the models in use (the bridge's status: twins.runtime.TwinRuntime.models_status)."""
    out = []
    for kind, m in sorted(models.items()):
        if m.get("state") == "federated":
            u = m.get("in_use") or {}
            out.append(f"model of the {kind} twins: {m['model']} (task {u.get('task')} round {u.get('round')}, sha256 "
                       f"{u.get('sha256')} verified against the ledger, commit tx {u.get('commit_tx_id')})")
        elif m.get("state") == "fallback":
            why = (f"task {m['task']} has no committed round on the ledger yet" if m.get("task") and not m.get("ledger_latest")
                   else m.get("note") or "no verified federated model yet")
            out.append(f"model of the {kind} twins: fallback:ai4i-rules-v1 (the AI4I rules: {why})")
        else:
            out.append(f"model of the {kind} twins: {m.get('model')} ({m.get('note', '')})")
        r = m.get("refused")
        if r:
            out.append(f"  NOT USED: {r.get('task')} round {r.get('round')} ({r.get('reason')}): {r.get('detail')}")
    return out


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def cmd_status(args: argparse.Namespace) -> int:
    s = twins_status(home_of(args))
    if args.json:
        print(json.dumps(s, indent=1, sort_keys=True))
        return 0
    label = s["anchor"]["label"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["updated_at"])) if s["updated_at"] else "never"
    print(f"twins in {s['home']}: {'RUNNING (pids ' + ', '.join(map(str, s['pids'].values())) + ')' if s['running'] else 'stopped'}; "
          f"status of {when}; anchors: {label}")
    st = s["store"]
    print(f"store: {st['readings']} readings in {st['batches']} sealed batches, {st['anchored']} anchored, "
          f"{st['pending']} waiting; lost {s['bridge'].get('lost', 0)}")
    print(f"\n{'ASSET':<16} {'ORG':<10} {'KIND':<8} {'RISK':<30} {'kWh':>8} {'CO2 kg':>8}  KEY SIGNALS")
    for a in s["assets"].values():
        r = a.get("risk", {})
        if a["kind"] == "machine":
            risk = f"P(fail) {_fmt(r.get('failure_probability'), '.3f')} [{r.get('model_kind')}]"
        elif a["kind"] == "patient":
            risk = f"NEWS2-like {_fmt(r.get('news2'), 'd')} {r.get('band') or ''}"
        else:
            risk = "-"
        sig = " ".join(f"{k}={_fmt(v, '.1f')}" for k, v in a["signals"].items())
        print(f"{a['asset']:<16} {a['org'] or '-':<10} {a['kind']:<8} {risk:<30} {_fmt(a.get('energy_kwh')):>8} "
              f"{_fmt(a.get('co2_kg')):>8}  {sig}")
    for line in model_lines(s["models"]) or (["models: " + "; ".join(sorted(
            {a["risk"]["model"] for a in s["assets"].values() if a.get("risk", {}).get("model")}))] if s["assets"] else []):
        print(line)
    if s["plants"]:
        print(f"\n{'PLANT':<10} {'kWh':>10} {'CO2 kg':>10} {'water L':>10} {'waste kg':>10} {'products':>9}")
        for org, t in s["plants"].items():
            print(f"{org:<10} {t['energy_kwh']:>10.2f} {t['co2_kg']:>10.2f} {t['water_l']:>10.1f} {t['waste_kg']:>10.2f} "
                  f"{t['products']:>9.0f}")
    print(f"\nalerts ({len(s['alerts'])}):" if s["alerts"] else "\nalerts: none")
    for al in s["alerts"]:
        print(f"  {al['level']:<10} {al['asset']:<16} {al['detail']} [{al.get('label')}]")
    print(f"alerts recorded on the ledger ({st['alerts']}, {st['alerts_pending']} waiting):" if s["ledger_alerts"]
          else "alerts recorded on the ledger: none")
    for al in s["ledger_alerts"]:
        state = "open" if al["closed_at_us"] is None else "closed"
        print(f"  {al['asset']:<16} {al['kind']:<13} score {al['score']}  {state:<6} {al['detail'].get('text', '')}  "
              f"[{al.get('model') or 'model not named'}]  tx {al['tx_id'] or 'waiting'}")
    for r in s["sustainability_reports"]:
        m = r["metrics"]
        print(f"sustainability {r['org']} {r['period']}: {m.get('energy_kwh', 0):.2f} kWh, {m.get('co2_kg', 0):.2f} kg CO2, "
              f"{m.get('products', 0)} products  tx {r['tx_id']}")
    print("last anchors:" if s["last_anchors"] else "last anchors: none yet")
    for a in s["last_anchors"]:
        at = time.strftime("%H:%M:%S", time.localtime(a["anchored_at_us"] / 1e6))
        print(f"  {at} {a['batch_id']:<22} {a['count']:>6} readings  root {a['merkle_root'][:16]}…  tx {a['tx_id']}")
    return 0


# --- twins whatif ----------------------------------------------------------------------------------------
def speed_factor(text: str, current_rpm: float | None) -> float:
    """``-10%``/``+5%`` (change), ``0.9``/``x0.9`` (factor of the current speed) or ``1400rpm`` (absolute
    rotational speed, divided by the twin's current estimate) -> the factor ``whatif_speed`` takes."""
    t = text.strip().lower().replace(" ", "")
    try:
        if t.endswith("%"):
            factor = 1.0 + float(t[:-1]) / 100.0
        elif t.endswith("rpm"):
            if not current_rpm:
                raise UserError("the twin has no rotational speed estimate yet; give --speed as a change (-10%) or factor")
            factor = float(t[:-3]) / current_rpm
        else:
            factor = float(t[1:] if t.startswith("x") else t)
        if not math.isfinite(factor):  # float() takes "nan" and "inf", and 1e999 is inf
            raise ValueError(text)
        return factor
    except ValueError:
        raise UserError(f"--speed {text!r}: give a change (-10%, +5%), a factor (0.9) or a speed (1400rpm)") from None


def cmd_whatif(args: argparse.Namespace) -> int:
    from twins.anchoring.store import ReadingStore
    from twins.bridge.mapping import MappingError, load_mapping
    from twins.model.twin import MachineTwin
    from twins.model.whatif import whatif_speed
    from twins.runtime import load_twin

    td = TwinsDir(home_of(args))
    _require_state(td)
    try:
        mapping = load_mapping(td.mapping)
    except (MappingError, OSError) as exc:
        raise UserError(f"cannot read the twins mapping {td.mapping}: {exc}") from None
    store = ReadingStore(td.store)
    try:
        twin = load_twin(store, mapping, args.asset)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
    if not isinstance(twin, MachineTwin):
        raise UserError(f"{args.asset} is a {twin.kind}; what-if changes a machine's speed (e.g. plant1.m1)")
    f = twin.features()
    factor = speed_factor(args.speed, f["rpm"] if f else None)
    try:
        res = whatif_speed(twin, factor, args.hours)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    res["speed_input"] = args.speed
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
        return 0
    sc, base = res["scenario"], res["baseline"]
    print(f"what-if {res['asset']}: speed {args.speed} (factor {factor:.3f}, {base['rpm']:.0f} → {sc['rpm']:.0f} rpm) "
          f"for {args.hours:g} h; model {res['model']}")
    rows = [("failure risk (P ≥1 failure)", "failure_risk", ".3f"), ("expected failures", "expected_failures", ".3f"),
            ("products", "products", "d"), ("energy kWh", "energy_kwh", ".2f"), ("CO2 kg", "co2_kg", ".2f"),
            ("water L", "water_l", ".1f"), ("waste kg", "waste_kg", ".2f"), ("tool changes", "tool_changes", "d")]
    print(f"{'':<28} {'baseline':>10} {'scenario':>10} {'change':>10}")
    for name, key, spec in rows:
        b, s = base[key], sc[key]
        print(f"{name:<28} {b:>10{spec}} {s:>10{spec}} {s - b:>+10{spec}}")
    return 0


# --- verify reading --------------------------------------------------------------------------------------
async def _verify(td: TwinsDir, anchor: dict[str, Any], asset: str, seq: int, prop: str | None) -> list:
    from twins.anchoring.anchorer import connect_ledger
    from twins.anchoring.store import ReadingStore
    from twins.anchoring.verify import verify_reading

    cfg = td.read_json(td.ledger) or {}
    # the readings were anchored on the ledger: without it there is nothing to prove them against
    ledger_config(td.home, sorted(cfg.get("orgs", {})))
    anchorer, gateways = connect_ledger(cfg)
    store = ReadingStore(td.store)
    try:
        return await verify_reading(store, anchorer, asset, seq, prop)
    finally:
        store.close()
        for g in gateways:
            await g.close()


def cmd_verify_reading(args: argparse.Namespace) -> int:
    from twins.anchoring.merkle import leaf_hash
    from twins.anchoring.record import BatchRecord
    from twins.anchoring.verify import VerificationError
    from twins.readings import us_to_iso

    td = TwinsDir(home_of(args))
    anchor = _require_state(td)
    label = anchor_label(anchor)
    try:
        res = asyncio.run(_verify(td, anchor, args.asset, args.seq, args.prop))
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "anchor": label}))
        raise UserError(f"VERIFICATION FAILED against the {label}: {exc}") from None
    if args.json:
        print(json.dumps({"ok": True, "anchor": label, "readings": [v.to_dict() for v in res]}, indent=1, sort_keys=True))
        return 0
    full = len(res) == 1  # one reading: every hash in full; several: one line each (full hashes with --prop or --json)
    shown: set[str] = set()
    for v in res:
        r, rec = v.reading, v.anchor["record"]
        var = f"{r.asset}/{r.prop}"
        if full:
            print(f"reading  {var} #{r.seq} = {r.value!r} at {us_to_iso(r.source_ts_us)} (org {r.org})")
            print(f"leaf     {leaf_hash(r.leaf_bytes()).hex()}  (index {v.leaf_index} of {rec['count']} in batch {v.batch_id})")
            for i, h in enumerate(v.proof, 1):
                print(f"proof {i:<2} {h}")
            print(f"root     {v.merkle_root}  (leaf + proof = stored root = anchored root)")
        else:
            print(f"reading  {var:<28} #{r.seq} = {r.value!r:<20} leaf {v.leaf_index:>5}/{rec['count']} of {v.batch_id}  "
                  f"proof {' '.join(h[:8] for h in v.proof)}")
        if v.batch_id not in shown:
            shown.add(v.batch_id)
            rng = f", {var} seq {BatchRecord.from_dict(rec).seq_range(r.asset, r.prop)}" if full else ""
            print(f"anchor   batch {v.batch_id}: root {rec['merkle_root']}, {rec['count']} readings{rng}, "
                  f"record hash {v.anchor.get('record_hash')}")
            print(f"tx       {v.anchor.get('tx_id')} on the {label}")
    print(f"OK: {len(res)} reading(s) of {args.asset} #{args.seq} match their anchor on the {label}")
    return 0


# --- twins decide / ack ----------------------------------------------------------------------------------
TWINS_CONTRACT = "twins"
#: What chaincode/twins.py's DecideMaintenance accepts (its DECISIONS).
ACTIONS = ("repair-now", "schedule", "monitor", "dismiss")
_TX_ID_RE = re.compile(r"[0-9a-f]{64}")


def _alert_of(home: Path, target: str) -> tuple[str, str | None]:
    """``twins decide``'s target -> (alert id, its org if known). An alert id (the RaiseAlert tx id, as `twins status`
    shows) is taken as is; an asset name means that asset's latest alert on the ledger, from the bridge's store."""
    if _TX_ID_RE.fullmatch(target):
        return target, None
    from twins.anchoring.store import ReadingStore

    td = TwinsDir(home)
    _require_state(td)
    store = ReadingStore(td.store)
    try:
        raised = [e for e in store.alerts() if e["asset"] == target and e["tx_id"]]
    finally:
        store.close()
    if not raised:
        raise UserError(f"no alert of {target} is on the ledger (`twinledger twins status` lists them); give an asset "
                        "with one, or an alert id")
    return raised[-1]["tx_id"], raised[-1]["org"]


def _owner(args: argparse.Namespace, read_function: str, record_id: str) -> str:
    """The org of an alert or decision on the ledger (any member may read it: the default identity does)."""
    from orchestrator.ledger_session import open_session

    with open_session(args) as session:
        return str(session.evaluate(TWINS_CONTRACT, read_function, record_id)["org"])


def cmd_decide(args: argparse.Namespace) -> int:
    from orchestrator.cli_data import short_actor
    from orchestrator.ledger_session import open_session
    from orchestrator.tables import emit, render_fields

    alert_id, org = _alert_of(home_of(args), args.target)
    if args.as_ is None:  # the contract lets only an operator of the alert's org decide
        args.as_ = org or _owner(args, "ReadAlert", alert_id)
    with open_session(args) as session:
        record, status = session.submit(TWINS_CONTRACT, "DecideMaintenance", alert_id, args.action)
    emit(args, record, render_fields([
        ("decision", f"{record['id']}"), ("alert", f"{record['alert']} ({record['asset']}, org {record['org']})"),
        ("action", record["decision"]), ("status", record["status"]), ("by", short_actor(record["decided_by"])),
        ("model", record.get("model") or "not named by the alert"),
        ("tx", f"{status.transaction_id} (block {status.block_number})"),
        ("next", f"twinledger twins ack {record['id']} once it is done"),
    ]))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from orchestrator.cli_data import short_actor
    from orchestrator.ledger_session import open_session
    from orchestrator.tables import emit, render_fields

    if not _TX_ID_RE.fullmatch(args.decision_id):
        raise UserError(f"{args.decision_id!r} is not a decision id (64 hex digits, as `twins decide` prints)")
    if args.as_ is None:  # an admin or operator of the decision's org acknowledges
        args.as_ = _owner(args, "ReadDecision", args.decision_id)
    with open_session(args) as session:
        record, status = session.submit(TWINS_CONTRACT, "AckDecision", args.decision_id)
    emit(args, record, render_fields([
        ("acknowledged", f"decision {record['id']} ({record['decision']} on {record['asset']}, alert {record['alert']})"),
        ("by", short_actor(record["acked_by"])), ("at", record["acked_at"]),
        ("tx", f"{status.transaction_id} (block {status.block_number})"),
    ]))
    return 0


def _paragraphs(text: str) -> str:
    """Wrap each paragraph of a help description (RawDescriptionHelpFormatter would keep one long line)."""
    return "\n\n".join(textwrap.fill(par, 100) for par in text.split("\n\n"))


# --- registration ----------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `twins run|status|whatif|decide|ack` and `verify reading` to the `twinledger` parser."""
    from twins.runtime import REPORT_EVERY
    t = sub.add_parser("twins", help="OPC-UA simulators, bridge and digital twins: run, status, what-if")
    ts = t.add_subparsers(dest="twins_command", required=True, metavar="SUBCOMMAND")

    r = ts.add_parser(
        "run", parents=[common], help="start simulators + bridge + twins and show them live",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs("Start the OPC-UA simulators and the bridge with its twins as processes, print one live line per "
                    "second (values/s, twins, sealed and anchored batches, lost values, alerts, top risk), and stop "
                    "everything cleanly at Ctrl-C (exit 0) or after --duration. State stays in HOME/twins for "
                    "`twins status`, `twins whatif` and `verify reading`.\n\n"
                    "Anchoring: on the ledger (each org's batches submitted as that org's operator through its "
                    "peer); if the network's peers are not up, run fails with the reason before starting anything. "
                    "A new twins state continues each org's chain of batches on the ledger after its last batch. "
                    "--json prints one JSON object per line instead.\n\n"
                    "Metrics: the simulators and the bridge serve Prometheus metrics at "
                    "http://127.0.0.1:PORT/metrics, by default the simulators on --port + 1 and the bridge on "
                    "--port + 2 (4841 and 4842 with the default --port 4840); the running line prints where. "
                    "--metrics-port P moves them to P and P + 1; --metrics-port 0 turns them off."))
    r.add_argument("--duration", type=cli_inputs.seconds, default=0.0, metavar="S", help="stop after S seconds (default 0: until Ctrl-C)")
    r.add_argument("--machines", type=_org_count, action="append", metavar="ORG:N",
                   help="N AI4I machines of plant ORG (repeatable; default plant1:2 plant2:2 when neither "
                        "--machines nor --monitors is given)")
    r.add_argument("--monitors", type=_org_count, action="append", metavar="ORG:N",
                   help="N bedside monitors of hospital ORG, replaying PhysioNet 2019 patients (repeatable; "
                        "default hospital1:1 hospital2:1 when neither is given)")
    r.add_argument("--machine-rate", type=cli_inputs.positive_rate, default=5.0, metavar="R", help="products per second per machine (14 values each; default 5)")
    r.add_argument("--monitor-rate", type=cli_inputs.positive_rate, default=1.0, metavar="R", help="chart hours replayed per second per monitor (default 1)")
    r.add_argument("--interval", type=cli_inputs.positive_seconds, default=1.0, metavar="S", help="seal and anchor one batch per org every S seconds (default 1)")
    r.add_argument("--port", type=cli_inputs.port(), default=4840, help="OPC-UA port of the simulators on 127.0.0.1 (default 4840)")
    r.add_argument("--opcua-org", metavar="ORG",
                   help="the org whose Fabric CA certifies the simulators and the bridge for OPC-UA (default: the org "
                        "of the first --machines, else of the first --monitors)")
    r.add_argument("--insecure-opcua", action="store_true",
                   help="run OPC-UA WITHOUT security (no encryption, any local client may connect); warns on every "
                        "run. Debugging only")
    r.add_argument("--metrics-port", type=cli_inputs.port(allow_zero=True), default=None, metavar="P",
                   help="Prometheus /metrics of the simulators on 127.0.0.1:P and of the bridge on P+1 (default: "
                        "--port + 1, so 4841 and 4842 with the default --port; 0: no metrics)")
    r.add_argument("--report-every", type=cli_inputs.whole(0, None, "a count"), default=REPORT_EVERY, metavar="N",
                   help="every N intervals (and at start) report each plant's completed UTC days of energy, CO2, "
                        "water and waste that are not reported yet (the contract keeps one report per org and day; "
                        f"default {REPORT_EVERY}, 0: never)")
    r.add_argument("--model-task", default="maintenance-v1", metavar="TASK",
                   help="the ledger task whose last committed round's model the machine twins use (default "
                        "maintenance-v1, as `fl run` names the plants' task); until it has a round they use the "
                        "labelled AI4I rules")
    r.add_argument("--model-store", metavar="DIR",
                   help="the model store holding the committed models by SHA-256 (default HOME/flower/store, "
                        "where `fl run` keeps them); a file is used only if it hashes to the ledger's hash")
    r.add_argument("--model-poll", type=cli_inputs.finite(0.0, above=True, what="number of seconds"), default=2.0, metavar="S",
                   help="ask the ledger for a new committed round every S seconds (default 2)")
    r.set_defaults(func=cmd_run)

    s = ts.add_parser("status", parents=[common], help="per-asset state, risk and model, energy/CO2, plant totals, anchors, alerts")
    s.set_defaults(func=cmd_status)

    w = ts.add_parser("whatif", parents=[common], help="predicted failure risk, energy and CO2 of a speed change vs the baseline")
    w.add_argument("asset", help="a machine, e.g. plant1.m1")
    w.add_argument("--speed", default="-10%",
                   help="a change (-10%%, +5%%), a factor of the current speed (0.9) or a speed (1400rpm); default -10%%")
    w.add_argument("--hours", type=cli_inputs.finite(0.0, above=True, maximum=WHATIF_MAX_HOURS, what="number of hours"), default=8.0, help="horizon in hours (default 8)")
    # "-10%" starts with "-": argparse would take it for an option; accept signed percentages as values
    w._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+%$")
    w.set_defaults(func=cmd_whatif)

    from orchestrator.ledger_session import add_ledger_command

    d = add_ledger_command(ts, common, "decide", cmd_decide,
                           "an operator of the alert's org records what to do about a twin alert (once per alert; "
                           "without --as: the operator of the alert's org)",
                           "operator")
    d.add_argument("target", metavar="ASSET|ALERT_ID",
                   help="an alert id (as `twins status` shows), or an asset: its latest alert on the ledger")
    d.add_argument("--action", required=True, choices=ACTIONS, help="the maintenance decision")
    k = add_ledger_command(ts, common, "ack", cmd_ack,
                           "an operator or admin of the decision's org acknowledges that it was carried out (once; "
                           "without --as: the operator of the decision's org)",
                           "operator")
    k.add_argument("decision_id", metavar="DECISION_ID", help="as `twins decide` prints it")

    v = sub.add_parser("verify", help="verify stored data against its anchors")
    vs = v.add_subparsers(dest="verify_command", required=True, metavar="SUBCOMMAND")
    vr = vs.add_parser("reading", parents=[common],
                       help="Merkle proof of one sensor reading against its anchor (exit 1 on any mismatch)")
    vr.add_argument("asset", help="e.g. plant1.m1 or hospital1.bed1")
    vr.add_argument("seq", type=cli_inputs.whole(1, None, "a sequence number"), help="the reading's sequence number (per variable; without --prop every property of it)")
    vr.add_argument("--prop", help="one property, e.g. Torque")
    vr.set_defaults(func=cmd_verify_reading)
