"""`twinledger twins run`: the OPC-UA simulators and the bridge with its twins as processes, one live line a second.

With ``--endpoint``/``--mapping`` it bridges external OPC-UA servers instead (orchestrator.cli_twins_endpoints); the
running part, the same for both, is orchestrator.cli_twins_live."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from network.files import private_dir
from network.spec_model import _NAME_RE as ORG_NAME_RE, Placement
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of
from orchestrator.cli_twins_endpoints import add_endpoint_arguments, cmd_run_endpoints
from orchestrator.cli_twins_live import BRIDGE_LOG, SIM_LOG, run_processes
from orchestrator.twins_state import TwinsDir, anchor_label, ledger_config, not_on_ledger, org_placement

# When the user names no assets: the default consortium's plants and hospitals (network/default_spec.yaml).
DEFAULT_MACHINES = ("plant1:2", "plant2:2")
DEFAULT_MONITORS = ("hospital1:1", "hospital2:1")




def models_config(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What the bridge reads from HOME/twins/models.json (twins.model.ledger_watch.ModelsConfig)."""
    from orchestrator.cli_fl import _check_task_id  # the chaincode's own task-ID rule

    tasks = {"machine": args.model_task, "patient": args.patient_model_task}
    for task in tasks.values():
        _check_task_id(task)
    store = Path(args.model_store).expanduser().resolve() if args.model_store else home / "flower" / "store"
    return {"tasks": tasks, "store": str(store), "poll_s": args.model_poll}


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


#: The bind check run inside an org's network namespace (its host's ports exist only there): exit 3 and
#: "ERRNO STRERROR" when the bind fails, so that a failure to enter the namespace (ip's own exit code) is told apart.
_BIND_PROBE = ("import socket, sys\n"
               "s = socket.socket()\n"
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "try:\n"
               "    s.bind((sys.argv[1], int(sys.argv[2])))\n"
               "except OSError as e:\n"
               "    print(e.errno, e.strerror)\n"
               "    sys.exit(3)\n")


def _bind_error(place: Placement, port: int) -> OSError | None:
    """Why ``place.host:port`` cannot be listened on now, or None. In the placement's network namespace when it
    has one: the check runs there through ``ip netns exec`` (the same way the processes start)."""
    if place.netns is None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((place.host, port))
            except OSError as exc:
                return exc
        return None
    try:
        r = subprocess.run(["ip", "netns", "exec", place.netns, sys.executable, "-c", _BIND_PROBE, place.host, str(port)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run a check in network namespace {place.netns}: {exc}") from None
    if r.returncode == 3:
        code, _, text = r.stdout.strip().partition(" ")
        return OSError(int(code), text)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"ip netns exec exited with {r.returncode}"])[-1]
        raise UserError(f"cannot run the twins in network namespace {place.netns}: {last}")
    return None


def _port_free(port: int) -> bool:
    """``port`` is free on 127.0.0.1 of this machine (where the bridge to external servers runs)."""
    return _bind_error(Placement(), port) is None


def _port_problem(place: Placement, port: int, role: str = "") -> str | None:
    """None when ``port`` is free on the placement's host, else what to tell the user: "port P on HOST (ROLE) is in
    use", or why HOST:P cannot be listened on at all (e.g. HOST is no address there)."""
    exc = _bind_error(place, port)
    if exc is None:
        return None
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {place.host}{role} is in use"
    where = f"network namespace {place.netns}" if place.netns else "this machine"
    hint = f", {place.host} is no address of {where}" if exc.errno == errno.EADDRNOTAVAIL else ""
    return f"cannot listen on port {port} on {place.host}{role} in {where} ({exc.strerror or exc}{hint})"


def stranded_orgs(bridge: Placement, placements: dict[str, Placement]) -> list[str]:
    """Orgs of a run whose peers the bridge cannot reach from where it runs: from inside a network namespace,
    this machine's loopback (an org without a host of its own) is out of reach."""
    if bridge.netns is None:
        return []
    return sorted(org for org, p in placements.items() if p.netns is None and ipaddress.ip_address(p.host).is_loopback)


def cmd_run(args: argparse.Namespace) -> int:
    from twins.procs import bridge_argv, simulator_argv

    if args.endpoint or args.mapping:
        return cmd_run_endpoints(args)  # external OPC-UA servers: no simulators
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
        raise not_on_ledger(td, previous)
    opcua_org = args.opcua_org or (machines or monitors)[0].partition(":")[0]
    if opcua_org not in orgs:
        raise UserError(f"--opcua-org {opcua_org} has no assets in this run (orgs: {', '.join(orgs)})")
    # the simulators and the bridge run on the OPC-UA org's host, in its network namespace if it has one
    place = org_placement(home, opcua_org)
    stranded = stranded_orgs(place, {org: org_placement(home, org) for org in orgs})
    if stranded:
        raise UserError(f"the bridge runs in {opcua_org}'s network namespace {place.netns} and cannot reach the peers "
                        f"of {', '.join(stranded)} on this machine's loopback, so their batches could not be anchored; "
                        f"run their twins in a `twins run` of their own (--opcua-org {stranded[0]})")
    problem = _port_problem(place, args.port)
    if problem:
        raise UserError(f"{problem}; pick a free one with --port")
    sim_metrics, bridge_metrics = metrics_ports(args.port, args.metrics_port)
    if not 0 <= sim_metrics <= 65534:
        raise UserError(f"metrics ports {sim_metrics} and {sim_metrics + 1} are not valid ports; give --metrics-port P "
                        "(1 to 65534: simulators on P, bridge on P+1), or --metrics-port 0 for none")
    for what, p in (("simulators", sim_metrics), ("bridge", bridge_metrics)):
        if not p:
            continue
        how = "--metrics-port" if args.metrics_port is not None else f"--port + {p - args.port}"
        role = f" (metrics of the {what}, {how})"
        problem = f"port {p} on {place.host}{role} is in use" if p == args.port else _port_problem(place, p, role)
        if problem:
            raise UserError(f"{problem}; give --metrics-port P (simulators on P, bridge on P+1), or --metrics-port 0 "
                            "for none")
    td.root.mkdir(parents=True, exist_ok=True)
    private_dir(td.log(SIM_LOG).parent)  # HOME/logs: 0700, like the supervisor's
    pki = None
    if not args.insecure_opcua:
        from network.ca import EnrolmentError
        from twins.security import prepare_pki

        try:
            pki = prepare_pki(home, opcua_org, orgs, td.pki, place.host)
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
    url = f"opc.tcp://{place.host}:{args.port}"
    netns_text = f" in network namespace {place.netns}" if place.netns else ""
    say(f"twins in {td.root}: {what}; OPC-UA on {url}{netns_text} ({opcua_text}); anchoring every "
        f"{args.interval:g} s to the {anchor_text}", event="starting", opcua=opcua_text)
    say(f"models: machine twins use the last committed round of {models['tasks']['machine']} on the ledger, each model "
        f"checked against its committed SHA-256 (store {models['store']}, asked every {models['poll_s']:g} s; the AI4I "
        "rules, labelled fallback, until then); patient twins: NEWS2-like rules", event="models", models=models)

    sim_sec: dict[str, Any] = {"insecure": True} if pki is None else {
        "cert": pki.server.cert, "key": pki.server.key, "trust": [pki.trust]}
    bridge_sec: dict[str, Any] = {"insecure": True} if pki is None else {
        "cert": pki.bridge.cert, "key": pki.bridge.key, "trust": [pki.trust]}
    run_info: dict[str, Any] = {"pids": {}, "started_at": time.time(), "anchor": target, "port": args.port,
                                "host": place.host, "netns": place.netns, "opcua": opcua_text,
                                "machines": machines, "monitors": monitors, "duration": args.duration, "metrics": {}}
    steps = [
        ("simulators", simulator_argv(host=place.host, port=args.port, data_dir=td.sim, machines=machines, monitors=monitors,
                                      machine_rate=args.machine_rate, monitor_rate=args.monitor_rate,
                                      mapping_out=td.mapping, metrics_port=sim_metrics, **sim_sec), SIM_LOG),
        # history: a fresh bridge starts from each variable's first value, so nothing published is skipped
        ("bridge", bridge_argv(mapping=td.mapping, home=td.root, ledger_config=td.ledger, interval=args.interval,
                               start_from="history", metrics_port=bridge_metrics, metrics_host=place.host, extra=extra,
                               **bridge_sec),
         BRIDGE_LOG),
    ]
    return run_processes(td, steps, run_info, say, target=target, duration=args.duration, json_out=args.json,
                         netns=place.netns)


def _paragraphs(text: str) -> str:
    """Wrap each paragraph of a help description (RawDescriptionHelpFormatter would keep one long line)."""
    return "\n\n".join(textwrap.fill(par, 100) for par in text.split("\n\n"))


def add_run_parser(ts: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from twins.runtime import REPORT_EVERY

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
                    "Placement: the simulators and the bridge run on the OPC-UA org's host from the network's spec "
                    "(127.0.0.1 unless the org names a host; inside its network namespace when it names one): the "
                    "simulators listen on HOST:--port, the bridge connects there.\n\n"
                    "Metrics: the simulators and the bridge serve Prometheus metrics at "
                    "http://HOST:PORT/metrics, by default the simulators on --port + 1 and the bridge on "
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
    r.add_argument("--port", type=cli_inputs.port(), default=4840, help="OPC-UA port of the simulators on the OPC-UA org's host (default 4840)")
    r.add_argument("--opcua-org", metavar="ORG",
                   help="the org whose Fabric CA certifies the simulators and the bridge for OPC-UA (default: the org "
                        "of the first --machines, else of the first --monitors)")
    r.add_argument("--insecure-opcua", action="store_true",
                   help="run OPC-UA WITHOUT security (no encryption, any local client may connect); warns on every "
                        "run. Debugging only")
    r.add_argument("--metrics-port", type=cli_inputs.port(allow_zero=True), default=None, metavar="P",
                   help="Prometheus /metrics of the simulators on HOST:P and of the bridge on P+1 (default: "
                        "--port + 1, so 4841 and 4842 with the default --port; 0: no metrics)")
    r.add_argument("--report-every", type=cli_inputs.whole(0, None, "a count"), default=REPORT_EVERY, metavar="N",
                   help="every N intervals (and at start) report each plant's completed UTC days of energy, CO2, "
                        "water and waste that are not reported yet (the contract keeps one report per org and day; "
                        f"default {REPORT_EVERY}, 0: never)")
    r.add_argument("--model-task", default="maintenance-v1", metavar="TASK",
                   help="the ledger task whose last committed round's model the machine twins use (default "
                        "maintenance-v1, as `fl run` names the plants' task); until it has a round they use the "
                        "labelled AI4I rules")
    r.add_argument("--patient-model-task", default="sepsis-v1", metavar="TASK",
                   help="the ledger task whose last committed round's model the patient twins use (default "
                        "sepsis-v1, as `fl run` names the hospitals' sepsis task); until it has a round they use the "
                        "labelled NEWS2-like rules")
    r.add_argument("--model-store", metavar="DIR",
                   help="the model store holding the committed models by SHA-256 (default HOME/flower/store, "
                        "where `fl run` keeps them); a file is used only if it hashes to the ledger's hash")
    r.add_argument("--model-poll", type=cli_inputs.finite(0.0, above=True, what="number of seconds"), default=2.0, metavar="S",
                   help="ask the ledger for a new committed round every S seconds (default 2)")
    add_endpoint_arguments(r)
    r.set_defaults(func=cmd_run)
