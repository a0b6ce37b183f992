"""The `twinledger` command: one CLI for every capability (see DESIGN.md for the shared contract).

Errors a user can meet print one line starting with ``twinledger:`` and exit 1; no stack trace.
Command-line mistakes argparse finds (a missing argument, a value of the wrong type, an unknown
option) print one line too, ``twinledger: error: COMMAND: what is wrong (see `COMMAND --help`)``,
and exit 2: argparse's usage exit status, which scripts tell from a failed command.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

from network.layout import Layout, resolve_home
from network.spec import SpecError, load_spec
from network.spec_model import Node
from orchestrator.bringup import up
from orchestrator.fabric_stage import FabricStepError
from network.processes.health import scrape
from network.processes.control import SupervisorError, read_state, stop_supervisor, supervisor_pid
from orchestrator.readiness import NotConverged
from orchestrator import cli_dashboard, cli_data, cli_demo, cli_fl, cli_inputs, cli_nodes, cli_twins
from orchestrator.cli_common import UserError
from peers.binaries import BinariesMissing

# Each capability's commands live in their own module and register themselves on the parser.
COMMAND_GROUPS = (cli_data, cli_fl, cli_twins, cli_dashboard, cli_demo, cli_nodes)


def _home(args: argparse.Namespace) -> Path:
    return resolve_home(args.home)


def cmd_up(args: argparse.Namespace) -> int:
    home = _home(args)
    up(home, Path(args.spec) if args.spec else None, args.port_base, progress=lambda m: print(m, flush=True))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    home = _home(args)
    if stop_supervisor(home):
        print(f"stopped every process of {home}; state kept (`twinledger up` resumes it)")
    else:
        print(f"nothing running for {home}")
    return 0


def _metric_height(node: Node) -> int | None:
    """Block height from the node's Prometheus metrics (ledger_blockchain_height), if it has a channel."""
    heights = scrape(node.ports.operations, "ledger_blockchain_height", host=node.host)
    return int(max(heights.values())) if heights else None


def status_nodes(home: Path) -> list[dict]:
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; run `twinledger up` first")
    spec = load_spec(layout.spec_file)
    running = supervisor_pid(home) is not None
    procs = {p["name"]: p for p in read_state(home).get("processes", [])} if running else {}
    out = []
    names = [n.name for n in spec.nodes()] + [n for n in procs if n not in {x.name for x in spec.nodes()}]
    nodes = {n.name: n for n in spec.nodes()}
    for name in names:
        p = procs.get(name, {})
        node_type = p.get("type") or spec.node(name).type
        healthy = bool(p.get("healthy"))
        height = _metric_height(nodes[name]) if healthy and node_type in ("peer", "orderer") and name in nodes else None
        out.append({
            "name": name,
            "org": p.get("org") or spec.node(name).org,
            "type": node_type,
            "address": nodes[name].address if name in nodes else None,
            "healthy": healthy,
            "height": height,
            "pid": p.get("pid"),
            "restarts": p.get("restarts", 0),
            "last_error": p.get("last_error"),
            "waiting_for_space": p.get("waiting_for_space"),
        })
    return out


def status_orgs(home: Path) -> list[dict]:
    """Each hospital and plant with its membership: member, joining, leaving or removed (its nodes are gone
    from the node list then; `twinledger org remove`)."""
    spec = load_spec(Layout(home).spec_file)
    return [{"name": o.name, "kind": o.kind, "msp_id": o.msp_id,
             "state": "removed" if o.removed else "leaving" if o.leaving else "joining" if o.joining else "member"}
            for o in spec.orgs if o.kind != "orderer"]


def cmd_status(args: argparse.Namespace) -> int:
    home = _home(args)
    nodes = status_nodes(home)
    orgs = status_orgs(home)
    if args.json:
        print(json.dumps({"nodes": nodes, "orgs": orgs}))
        return 0
    print(f"{'NODE':<22} {'ORG':<11} {'TYPE':<9} {'HEALTH':<9} {'HEIGHT':>6} {'PID':>8} {'RESTARTS':>8}")
    for n in nodes:
        health = "healthy" if n["healthy"] else ("down" if not n["pid"] else "starting")
        print(f"{n['name']:<22} {n['org']:<11} {n['type']:<9} {health:<9} {n['height'] if n['height'] is not None else '-':>6} "
              f"{n['pid'] or '-':>8} {n['restarts']:>8}")
    for n in nodes:
        if n["waiting_for_space"]:
            w = n["waiting_for_space"]
            free = f"{w['free_bytes'] // 1024} KiB free" if w.get("free_bytes") is not None else "free space unknown"
            print(f"{n['name']}: disk full at {w['path']} ({free}); restarts by itself once "
                  f"{w['needs_bytes'] // (1024 * 1024)} MiB are free")
        elif n["last_error"] and not n["healthy"]:
            print(f"{n['name']}: last exit: {n['last_error']}")
    for o in orgs:
        if o["state"] != "member":
            print(f"org {o['name']} ({o['msp_id']}): {o['state']}"
                  + (" (`twinledger org remove` did not finish; run it again)" if o["state"] == "leaving" else ""))
    if not supervisor_pid(home):
        print(f"(supervisor not running; `twinledger up --home {home}` starts the network)")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    home = _home(args)
    if not _LOG_NAME.fullmatch(args.node):  # a node name, never a path out of the logs folder
        raise UserError(f"{args.node!r} is not a node name (e.g. peer0.hospital1, ca.plant1, supervisor)")
    f = Layout(home).log_file(args.node)
    if not f.exists():
        known = sorted(p.stem for p in Layout(home).logs.glob("*.log"))
        raise UserError(f"no log for {args.node!r} in {Layout(home).logs}; known: {', '.join(known) or 'none'}")
    with open(f, "rb") as fh:
        lines = fh.readlines()[-args.lines:]
        sys.stdout.write(b"".join(lines).decode(errors="replace"))
        sys.stdout.flush()
        while args.follow:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.3)
    return 0


_LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def cmd_clean(args: argparse.Namespace) -> int:
    home = _home(args)
    if not home.exists():
        print(f"nothing to clean at {home}")
        return 0
    if not Layout(home).spec_file.exists():
        raise UserError(f"{home} is not a TwinLedger home (no spec.yaml); not removing it")
    stop_supervisor(home)
    shutil.rmtree(home)
    print(f"removed {home}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage and then the error (two lines or more); a user needs the error,
    and where the usage is. Sub-parsers inherit this class (argparse makes them of the parent's type)."""

    #: The innermost (sub-)parser that parsed: argparse reports unknown arguments from the top parser,
    #: but the user needs the help of the command they typed.
    _innermost: argparse.ArgumentParser | None = None

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        OneLineParser._innermost = self
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        prog = (OneLineParser._innermost or self).prog if message.startswith("unrecognized") else self.prog
        where = prog.removeprefix("twinledger").strip()
        message = " ".join(message.split())
        self.exit(2, f"twinledger: error: {where + ': ' if where else ''}{message} (see `{prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    # --home and --json are accepted before or after the command. The top-level parser holds the
    # defaults; the sub-commands' copies default to SUPPRESS, otherwise a sub-parser's default would
    # overwrite a value given before the command (`twinledger --home X status`).
    top = argparse.ArgumentParser(add_help=False)
    common = argparse.ArgumentParser(add_help=False)
    for parser, default_home, default_json in ((top, None, False), (common, argparse.SUPPRESS, argparse.SUPPRESS)):
        parser.add_argument("--home", default=default_home, help="state folder (default $TL_HOME or ./.twinledger/twinledger)")
        parser.add_argument("--json", action="store_true", default=default_json, help="machine-readable output")
    p = OneLineParser(prog="twinledger", description="TwinLedger: a consortium ledger for hospitals and plants",
                                parents=[top])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("up", parents=[common], help="start (or resume) the local network")
    s.add_argument("--spec", help="consortium spec YAML (default: 2 hospitals, 2 plants, 3 orderers)")
    s.add_argument("--port-base", type=cli_inputs.port_base, help="first port; every node's ports derive from it (default 17000)")
    s.set_defaults(func=cmd_up)
    sub.add_parser("down", parents=[common], help="stop every process, keep the state").set_defaults(func=cmd_down)
    sub.add_parser("status", parents=[common], help="nodes, health and block height").set_defaults(func=cmd_status)
    s = sub.add_parser("logs", parents=[common], help="show a node's log")
    s.add_argument("node", help="e.g. peer0.hospital1, orderer0.orderer, ca.plant1, supervisor")
    s.add_argument("-n", "--lines", type=cli_inputs.positive, default=50, help="last N lines (default 50)")
    s.add_argument("-f", "--follow", action="store_true")
    s.set_defaults(func=cmd_logs)
    sub.add_parser("clean", parents=[common], help="stop everything and remove the state folder").set_defaults(func=cmd_clean)
    for group in COMMAND_GROUPS:
        group.register(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, SpecError, SupervisorError, BinariesMissing, FabricStepError, NotConverged) as e:
        print(f"twinledger: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # The file system refused (permission, no space, a file where a folder must be): the user can fix that.
        where = f" {e.filename}" if e.filename else ""
        print(f"twinledger: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
