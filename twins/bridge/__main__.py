"""``python -m twins.bridge``: run the bridge + twins + anchoring, verify a reading, or run a what-if.

::

    # run: subscribe per the mapping, keep twins current, seal a batch per org every second
    python -m twins.bridge run --mapping sim/mapping.yaml --home .twinledger/twins --ledger-config ledger.json
    #   (--mapping repeatable: one per OPC-UA server, each with its 'server:' or a --url in the same order;
    #    --max-per-connection N: an endpoint with more variables is split across several connections, see
    #    twins.bridge.group)
    #   (--ledger-config F, required: anchor on the ledger, one Fabric identity per org, see
    #    twins.anchoring.anchorer.connect_ledger; --cert/--key/--trust, required unless --insecure:
    #    SignAndEncrypt, the server's certificate must chain to a --trust CA; --status-file: JSON status rewritten every interval and at the stop;
    #    --metrics-port P: Prometheus /metrics on 127.0.0.1:P, or on --metrics-host H (the OPC-UA org's host when
    #    `twinledger twins run` places the bridge there), see twins.metrics)

    python -m twins.bridge verify --home .twinledger/twins --ledger-config ledger.json plant1.m1 42 [--prop Torque]
    python -m twins.bridge whatif --home .twinledger/twins --mapping sim/mapping.yaml plant1.m1 --speed 0.9 --hours 8

The store is ``HOME/readings.sqlite``. SIGTERM/SIGINT seal what is pending and stop; after a SIGKILL the next
start resumes after the last sealed reading of every variable (the rest comes back from the server's history).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from network.files import write_private
from twins.anchoring.anchorer import AnchorConflict, connect_ledger
from twins.anchoring.store import ReadingStore
from twins.anchoring.verify import VerificationError, verify_reading
from twins.bridge.group import MAX_PER_CONNECTION, BridgeGroup
from twins.bridge.mapping import MappingError, load_mapping, merge_mappings
from twins.metrics import listen_host, metrics_url, start_server, stop_server
from twins.model.twin import MachineTwin
from twins.model.whatif import whatif_speed
from twins.runtime import REPORT_EVERY, TwinRuntime, load_twin
from twins.security import ClientSecurity, check_security_flags


def _write_json_atomic(path: Path, data: object) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True, default=str))  # 0600, as it was through mkstemp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m twins.bridge", description="OPC-UA bridge, twins and anchoring")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the bridge until signalled")
    r.add_argument("--mapping", type=Path, action="append", required=True,
                   help="mapping file (repeatable: one per OPC-UA server)")
    r.add_argument("--home", type=Path, required=True, help="state folder (readings.sqlite, status.json)")
    r.add_argument("--url", action="append", default=[],
                   help="OPC-UA endpoint of the mapping in the same position (default: 'server' in the mapping)")
    r.add_argument("--max-per-connection", type=int, default=MAX_PER_CONNECTION, metavar="N",
                   help=f"variables per OPC-UA connection; more are split across connections (default {MAX_PER_CONNECTION})")
    r.add_argument("--ledger-config", type=Path, required=True,
                   help="the ledger to anchor on: JSON config (channel, chaincode, per-org gateway identity), as "
                        "`twinledger twins run` writes it to HOME/twins/ledger.json")
    r.add_argument("--interval", type=float, default=1.0, help="anchoring interval in seconds (default 1)")
    r.add_argument("--report-every", type=int, default=REPORT_EVERY, metavar="N",
                   help="look for due sustainability reports (completed UTC days) every N intervals and at start "
                        f"(default {REPORT_EVERY}; 0: never)")
    r.add_argument("--publish-ms", type=float, default=20.0, help="OPC-UA publishing interval (default 20 ms)")
    r.add_argument("--start-from", choices=("live", "history"), default="live",
                   help="for variables never seen before: from the first live value, or from the start of history")
    r.add_argument("--cert", type=Path, help="client application certificate (PEM, URI SAN): SignAndEncrypt")
    r.add_argument("--key", type=Path, help="its private key (PEM)")
    r.add_argument("--trust", type=Path, action="append", default=[],
                   help="folder of CA certificates (*.pem) the server's certificate must chain to (repeatable)")
    r.add_argument("--server-cert", type=Path, help="also pin the server certificate (PEM)")
    r.add_argument("--insecure", action="store_true",
                   help="no OPC-UA security (instead of --cert/--key/--trust), for debugging only")
    r.add_argument("--status-file", type=Path, help="JSON status rewritten every interval (default HOME/status.json)")
    r.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until signalled)")
    r.add_argument("--metrics-port", type=int, default=0, metavar="P",
                   help="serve Prometheus metrics at http://HOST:P/metrics (default 0: not served)")
    r.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="IPv4 address of the metrics listener: loopback or this host's own, never 0.0.0.0 "
                        "(default 127.0.0.1)")
    r.add_argument("--log-level", default="WARNING")
    v = sub.add_parser("verify", help="verify a stored reading against its anchor")
    v.add_argument("--home", type=Path, required=True)
    v.add_argument("--ledger-config", type=Path, required=True)
    v.add_argument("asset")
    v.add_argument("seq", type=int)
    v.add_argument("--prop")
    w = sub.add_parser("whatif", help="what-if on a machine twin's latest sealed state")
    w.add_argument("--home", type=Path, required=True)
    w.add_argument("--mapping", type=Path, required=True)
    w.add_argument("asset")
    w.add_argument("--speed", type=float, default=0.9, help="speed factor (0.9 = −10 %%)")
    w.add_argument("--hours", type=float, default=8.0)
    return p


async def run(args: argparse.Namespace) -> None:
    check_security_flags(args.insecure, args.cert, args.key, args.trust)
    try:  # before anything opens
        metrics_host = listen_host(args.metrics_host, "bridge --metrics-host")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    security = None if args.insecure else ClientSecurity(args.cert, args.key, list(args.trust), args.server_cert)
    parts = [load_mapping(m) for m in args.mapping]
    if len(args.url) > len(parts):
        raise MappingError(f"{len(args.url)} --url for {len(parts)} --mapping: give at most one URL per mapping")
    urls = list(args.url) + [None] * (len(parts) - len(args.url))
    for m, u, path in zip(parts, urls, args.mapping):
        if not (u or m.server):
            raise MappingError(f"{path}: no server URL: give --url or 'server:' in the mapping file")
    if args.max_per_connection < 1:
        raise MappingError("--max-per-connection must be at least 1")
    mapping = parts[0] if len(parts) == 1 else merge_mappings(parts)
    home: Path = args.home
    home.mkdir(parents=True, exist_ok=True)
    ledger = json.loads(args.ledger_config.read_text())
    anchorer, gateways = connect_ledger(ledger)
    anchor_info = {"kind": "ledger", "channel": ledger["channel"], "chaincode": ledger["chaincode"]}
    rt = TwinRuntime(mapping, home / "readings.sqlite", anchorer, interval=args.interval, report_every=args.report_every)
    # gap records (a server without history could not refill a break) are sealed with the org's next batch
    bridge = BridgeGroup(list(zip(parts, urls)), rt.on_reading, on_gap=rt.batcher.add_gap,
                         max_per_connection=args.max_per_connection, positions=rt.positions(), security=security,
                         publish_ms=args.publish_ms, start_from=args.start_from)
    rt.metrics.attach_bridge(bridge)
    metrics_server = None
    if args.metrics_port:
        try:
            metrics_server = start_server(rt.metrics.registry, args.metrics_port, "bridge", metrics_host)
        except SystemExit:
            rt.close()
            for g in gateways:
                await g.close()
            raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.duration > 0:
        loop.call_later(args.duration, stop.set)
    status_path = args.status_file or home / "status.json"

    def write_status(running: bool) -> None:
        st = rt.status()
        st["bridge"] = bridge.status()
        st["bridge"]["gaps_sealed"] = rt.batcher.gaps_sealed
        st["anchor"] = anchor_info
        st["running"] = running
        _write_json_atomic(status_path, st)

    async def status_loop() -> None:
        while not stop.is_set():
            write_status(True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.interval)
            except asyncio.TimeoutError:
                pass

    ready = {"event": "ready", "home": str(home), "variables": len(mapping.nodes)}
    if metrics_server is not None:
        ready["metrics"] = metrics_url(args.metrics_port, metrics_host)
    print(json.dumps(ready), flush=True)
    tasks = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(status_loop())]
    try:
        await rt.run_anchoring(stop)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # the last status counts the batches sealed at the stop, so it matches the store readers see afterwards
        write_status(False)
        stop_server(metrics_server)
        rt.close()
        for g in gateways:
            await g.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            asyncio.run(run(args))
        except (MappingError, AnchorConflict) as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    store = ReadingStore(args.home / "readings.sqlite")
    try:
        if args.cmd == "verify":
            async def verify() -> list:
                anchorer, gateways = connect_ledger(json.loads(args.ledger_config.read_text()))
                try:
                    return await verify_reading(store, anchorer, args.asset, args.seq, args.prop)
                finally:
                    for g in gateways:
                        await g.close()
            try:
                res = asyncio.run(verify())
            except VerificationError as exc:
                raise SystemExit(f"verification FAILED: {exc}") from None
            print(json.dumps([v.to_dict() for v in res], indent=1))
        elif args.cmd == "whatif":
            mapping = load_mapping(args.mapping)
            try:
                twin = load_twin(store, mapping, args.asset)
                if not isinstance(twin, MachineTwin):
                    raise ValueError(f"{args.asset} is not a machine (what-if changes a machine's speed)")
                print(json.dumps(whatif_speed(twin, args.speed, args.hours), indent=1))
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
    finally:
        store.close()


if __name__ == "__main__":
    main()
