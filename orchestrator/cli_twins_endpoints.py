"""`twinledger twins run --endpoint URL --mapping FILE`: bridge OPC-UA servers that are not ours (PLCs, gateways,
a machine builder's server) — no simulators; twins, anchoring, status and the live line as for the simulators.

Each ``--endpoint`` goes with the ``--mapping`` in the same position (repeatable: several servers per org, one bridge
process, one store, one chain of batches per org); without ``--endpoint`` a mapping's own ``server:`` is used. A
mapping comes from `twinledger twins map` (orchestrator.cli_twins_map) or is written by hand (twins.bridge.mapping).
An endpoint with more than ``--max-per-connection`` variables is split across connections (twins.bridge.group).

OPC-UA security, shared with `twins map` (``add_security_arguments`` / ``endpoint_security``): SignAndEncrypt
(twins.security.POLICY_NAME) with the bridge's application certificate from the Fabric CA of ``--opcua-org``; the
server's certificate must chain to the CAs of the orgs with assets in the run or to a CA in an ``--opcua-trust``
folder (a plant's own PKI), and with ``--server-cert`` be exactly that certificate. ``--insecure-opcua``: none, said
on every run.

History: a fresh bridge starts from each variable's first value in the server's history. A server that keeps no
history gives what it has live; every break it cannot refill becomes a gap record sealed into the anchored batch
(`twinledger verify gaps` lists them, verified against the ledger).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from network.files import private_dir, write_atomic
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of
from orchestrator.twins_state import TwinsDir, anchor_label, ledger_config, not_on_ledger


INSECURE_EXTERNAL = ("WARNING: OPC-UA WITHOUT SECURITY (--insecure-opcua): values travel in plain text and the server "
                     "is not authenticated; use this for debugging only")


def check_url(url: str) -> str:
    """``opc.tcp://HOST:PORT[/path]``, or a one-line UserError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"bad OPC-UA endpoint URL {url!r}: {exc}") from None
    if parts.scheme != "opc.tcp" or not parts.hostname:
        raise UserError(f"bad OPC-UA endpoint URL {url!r}: expected opc.tcp://HOST:PORT[/PATH]")
    if port is None:
        raise UserError(f"bad OPC-UA endpoint URL {url!r}: give the port (opc.tcp://HOST:PORT, 4840 is the usual one)")
    return url


def add_security_arguments(p: argparse.ArgumentParser, *, with_org: bool) -> None:
    """The OPC-UA security options of an external server (``with_org``: also --opcua-org and --insecure-opcua,
    which `twins run` already has)."""
    if with_org:
        p.add_argument("--opcua-org", metavar="ORG",
                       help="the org whose Fabric CA certifies the bridge's OPC-UA client (default: --org)")
        p.add_argument("--insecure-opcua", action="store_true",
                       help="connect WITHOUT OPC-UA security (plain text, no certificates); warns. Debugging only")
    p.add_argument("--opcua-trust", type=Path, action="append", default=[], metavar="DIR",
                   help="external servers: a folder of CA certificates (*.pem, *.der) the server's certificate may "
                        "chain to, besides the Fabric CAs of the orgs with assets (repeatable)")
    p.add_argument("--server-cert", type=Path, metavar="PEM",
                   help="external servers: accept only this server certificate (pinned)")


def endpoint_security(home: Path, args: argparse.Namespace, orgs: list[str], pki_root: Path,
                      trust_dir: Path | None = None) -> tuple[Any, str]:
    """(twins.security.ClientSecurity or None for --insecure-opcua, a one-line description). The bridge's certificate
    lives under ``pki_root/ORG/bridge`` (reused while valid), the CAs of ``orgs`` in ``trust_dir`` (default
    ``pki_root/trust``)."""
    if args.insecure_opcua:
        if args.opcua_trust or args.server_cert:
            raise UserError("--insecure-opcua excludes --opcua-trust and --server-cert")
        print(f"twinledger: {INSECURE_EXTERNAL}", file=sys.stderr, flush=True)  # loud, on every run
        return None, "OPC-UA WITHOUT SECURITY"
    from network.layout import Layout

    if not Layout(home).spec_file.exists():
        raise UserError(f"OPC-UA security needs the network's Fabric CAs and there is no network in {home}; start it "
                        "with `twinledger up` (or give --insecure-opcua, debugging only)")
    from network.ca import EnrolmentError
    from twins.security import POLICY_NAME, ClientSecurity, TrustList, issue_app_certificate, trust_folder

    org = args.opcua_org or orgs[0]
    if org not in orgs:
        raise UserError(f"--opcua-org {org} has no assets here (orgs: {', '.join(orgs)})")
    for d in args.opcua_trust:
        try:
            TrustList([d])
        except ValueError as exc:
            raise UserError(f"--opcua-trust: {exc}") from None
    if args.server_cert is not None and not args.server_cert.is_file():
        raise UserError(f"--server-cert {args.server_cert}: no such file")
    try:
        trust = trust_folder(home, orgs, trust_dir or pki_root / "trust")
        cert = issue_app_certificate(home, org, "bridge", pki_root / org / "bridge")
    except (EnrolmentError, OSError, ValueError) as exc:
        raise UserError(f"cannot get the OPC-UA client certificate from ca-{org}: {exc}") from None
    extra = f" and {', '.join(map(str, args.opcua_trust))}" if args.opcua_trust else ""
    text = f"OPC-UA {POLICY_NAME} SignAndEncrypt, client certificate from ca-{org}, trusting the CAs of {', '.join(orgs)}{extra}"
    return ClientSecurity(cert.cert, cert.key, [trust, *args.opcua_trust], args.server_cert), text


def add_endpoint_arguments(r: argparse.ArgumentParser) -> None:
    from twins.bridge.group import MAX_PER_CONNECTION

    r.add_argument("--endpoint", action="append", default=[], metavar="URL",
                   help="bridge this external OPC-UA server (opc.tcp://HOST:PORT/...) instead of starting simulators, "
                        "with the --mapping in the same position (repeatable)")
    r.add_argument("--mapping", type=Path, action="append", default=[], metavar="FILE",
                   help="the mapping of the --endpoint in the same position (`twinledger twins map` writes one; "
                        "without --endpoint its 'server:' is used)")
    r.add_argument("--max-per-connection", type=cli_inputs.whole(1, 1_000_000, "a count"), default=MAX_PER_CONNECTION, metavar="N",
                   help=f"external servers: at most N variables per OPC-UA connection; more are split across "
                        f"connections (default {MAX_PER_CONNECTION})")
    add_security_arguments(r, with_org=False)


def cmd_run_endpoints(args: argparse.Namespace) -> int:
    from orchestrator.cli_twins_live import BRIDGE_LOG, run_processes
    from orchestrator.cli_twins_run import _port_free, metrics_ports
    from twins.bridge.mapping import MappingError, dump_mapping, load_mapping, merge_mappings
    from twins.procs import bridge_argv

    home = home_of(args)
    td = TwinsDir(home)
    if args.machines or args.monitors:
        raise UserError("--endpoint/--mapping bridge external servers: --machines and --monitors start simulators; "
                        "give one or the other")
    if not args.mapping:
        raise UserError("give a --mapping FILE for each --endpoint (`twinledger twins map --endpoint URL --out FILE` "
                        "writes one)")
    if args.endpoint and len(args.endpoint) != len(args.mapping):
        raise UserError(f"{len(args.endpoint)} --endpoint for {len(args.mapping)} --mapping: give them in pairs")
    if args.duration < 0 or args.interval <= 0 or args.report_every < 0:
        raise UserError("--duration and --report-every must be >= 0 and --interval > 0")
    parts = []
    for path in args.mapping:
        try:
            parts.append(load_mapping(path))
        except MappingError as exc:
            raise UserError(str(exc)) from None
    urls = [check_url(u) for u in args.endpoint] or [m.server or "" for m in parts]
    for path, url in zip(args.mapping, urls):
        if not url:
            raise UserError(f"{path} names no 'server:': give its --endpoint URL")
        check_url(url)
    try:
        merged = merge_mappings(parts)
    except MappingError as exc:
        raise UserError(str(exc)) from None
    running = td.running_pids()
    if running:
        raise UserError(f"the twins of {home} already run (pids {', '.join(map(str, running.values()))}); "
                        "stop that run first (Ctrl-C in its terminal)")
    orgs = merged.orgs()
    ledger = ledger_config(home, orgs)  # the ledger must answer before anything starts: nowhere else to anchor
    target: dict[str, Any] = {"kind": "ledger", "channel": ledger["channel"], "chaincode": ledger["chaincode"]}
    previous = td.read_json(td.anchor)
    if previous and previous.get("kind") != "ledger":
        raise not_on_ledger(td, previous)
    _, bridge_metrics = metrics_ports(args.port, args.metrics_port)
    if bridge_metrics and not _port_free(bridge_metrics):
        raise UserError(f"port {bridge_metrics} on 127.0.0.1 (metrics of the bridge) is in use; give --metrics-port P "
                        "(the bridge serves on P+1), or --metrics-port 0 for none")
    td.root.mkdir(parents=True, exist_ok=True)
    private_dir(td.log(BRIDGE_LOG).parent)
    security, opcua_text = endpoint_security(home, args, orgs, td.pki)
    td.write_json(td.anchor, target)
    td.write_json(td.ledger, ledger)
    from orchestrator.cli_twins_run import models_config

    models = models_config(home, args)
    td.write_json(td.models, models)
    # the assets of this run where `twins whatif` reads them (the bridge reads the mappings given)
    write_atomic(td.mapping, dump_mapping(urls[0], None, merged.assets, merged.nodes,
                                          "The assets of the last `twinledger twins run --endpoint` (" + ", ".join(urls)
                                          + "), for `twins whatif`.\nThe bridge reads the --mapping files themselves."))

    def say(line: str, **fields: Any) -> None:
        if args.json:
            import json

            print(json.dumps({"message": line, "anchor": anchor_label(target), **fields}), flush=True)
        else:
            print(line, flush=True)

    say(f"twins in {td.root}: {len(merged.nodes)} variables of {len(merged.assets)} assets ({', '.join(orgs)}) from "
        f"{', '.join(urls)} ({opcua_text}); anchoring every {args.interval:g} s to the {anchor_label(target)}",
        event="starting", opcua=opcua_text, endpoints=urls)
    sec: dict[str, Any] = {"insecure": True} if security is None else {
        "cert": security.cert, "key": security.key, "trust": list(security.trust)}
    extra = ["--report-every", str(args.report_every), "--max-per-connection", str(args.max_per_connection)]
    for url in urls:  # the bridge pairs its --url and --mapping options by position, like ours
        extra += ["--url", url]
    for path in args.mapping[1:]:
        extra += ["--mapping", str(Path(path).resolve())]
    if security is not None and security.server_cert:
        extra += ["--server-cert", str(security.server_cert)]
    argv = bridge_argv(mapping=Path(args.mapping[0]).resolve(), home=td.root, ledger_config=td.ledger,
                       interval=args.interval, start_from="history", metrics_port=bridge_metrics, extra=extra, **sec)
    run_info: dict[str, Any] = {"pids": {}, "started_at": time.time(), "anchor": target, "endpoints": urls,
                                "mappings": [str(Path(p).resolve()) for p in args.mapping], "opcua": opcua_text,
                                "duration": args.duration, "metrics": {}}
    return run_processes(td, [("bridge", argv, BRIDGE_LOG)], run_info, say, target=target, duration=args.duration,
                         json_out=args.json)
