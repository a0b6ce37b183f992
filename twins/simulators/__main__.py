"""``python -m twins.simulators``: run plant-machine and bedside-monitor OPC-UA simulators on 127.0.0.1 (or --host).

Examples::

    python -m twins.simulators --port 4840 --data-dir .twinledger/sim \\
        --machines plant1:3 --machines plant2:2 --machine-rate 5 \\
        --monitors hospital1:2 --monitor-rate 1 --write-mapping .twinledger/sim/mapping.yaml

    # SignAndEncrypt (Aes256_Sha256_RsaPss) only, accepting clients whose certificate chains to a trusted CA:
    python -m twins.simulators ... --cert sim.pem --key sim.key --trust cas/

    # no security at all: only with --insecure, which prints a warning line at every start
    python -m twins.simulators ... --insecure

    # on the OPC-UA org's host (its spec ``host``; started in its network namespace when it has one):
    ip netns exec tl-plant1 python -m twins.simulators --host 10.77.0.11 ...

Prints one JSON line ``{"event": "ready", "endpoint": ...}`` on stdout once it accepts connections (with
``"metrics": URL`` when ``--metrics-port`` serves Prometheus metrics, see ``twins.metrics``).
SIGTERM/SIGINT stop it cleanly; SIGKILL loses nothing that was published (history is written first).
SIGUSR1 pauses production (the server keeps serving subscriptions and HistoryRead), SIGUSR2 resumes it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import yaml

from twins.metrics import SimulatorMetrics, metrics_url, start_server, stop_server
from twins.simulators.machine import MachineSource
from twins.simulators.patient import PatientSource, default_sepsis_dir, load_patients, pick_patients
from twins.security import check_security_flags
from twins.simulators.server import ServerSecurity, SimulatorServer, ready_line


def _org_count(text: str) -> tuple[str, int]:
    org, _, n = text.partition(":")
    if not org or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected ORG:COUNT (e.g. plant1:2), got {text!r}")
    return org, int(n)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m twins.simulators", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1",
                   help="IPv4 address to listen on, OPC-UA and metrics: loopback or this host's own, never 0.0.0.0 "
                        "(default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4840, help="TCP port on --host (default 4840)")
    p.add_argument("--data-dir", type=Path, required=True, help="folder for history.sqlite (persists across restarts)")
    p.add_argument("--machines", type=_org_count, action="append", default=[], metavar="ORG:N", help="N AI4I machines of plant ORG (repeatable)")
    p.add_argument("--monitors", type=_org_count, action="append", default=[], metavar="ORG:N", help="N bedside monitors of hospital ORG (repeatable)")
    p.add_argument("--machine-rate", type=float, default=5.0, help="products per second per machine (14 values each; default 5)")
    p.add_argument("--monitor-rate", type=float, default=1.0, help="chart hours replayed per second per monitor (default 1)")
    p.add_argument("--patients", default="", help="comma-separated patient ids (default: alternate septic / non-septic from MANIFEST.csv)")
    p.add_argument("--sepsis-dir", type=Path, default=None, help="PhysioNet 2019 subset folder (default: shared/data/…, or $TL_SEPSIS_DIR)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--tick", type=float, default=0.02, help="publishing tick in seconds (default 0.02)")
    p.add_argument("--retention", type=float, default=86400.0, help="history retention in seconds (default 86400)")
    p.add_argument("--write-mapping", type=Path, default=None, help="write the bridge's mapping YAML here")
    p.add_argument("--cert", type=Path, help="application certificate (PEM, URI SAN = application URI): SignAndEncrypt only")
    p.add_argument("--key", type=Path, help="its private key (PEM)")
    p.add_argument("--trust", type=Path, action="append", default=[],
                   help="folder of CA certificates (*.pem) that client certificates must chain to (repeatable)")
    p.add_argument("--insecure", action="store_true",
                   help="no security (the None policy, any client): instead of --cert/--key/--trust, for debugging only")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = run until signalled)")
    p.add_argument("--metrics-port", type=int, default=0, metavar="P",
                   help="serve Prometheus metrics at http://HOST:P/metrics (default 0: not served)")
    p.add_argument("--log-level", default="WARNING")
    return p


def make_sources(args: argparse.Namespace) -> list:
    sources: list = []
    for org, n in args.machines:
        for i in range(1, n + 1):
            sources.append(MachineSource(f"{org}.m{i}", org, args.seed, args.machine_rate))
    n_beds = sum(n for _, n in args.monitors)
    if n_beds:
        data_dir = args.sepsis_dir or default_sepsis_dir()
        ids = [x.strip() for x in args.patients.split(",") if x.strip()] or pick_patients(data_dir, n_beds)
        if len(ids) < n_beds:
            raise SystemExit(f"error: {n_beds} monitors but only {len(ids)} patients given; add ids to --patients")
        rows = load_patients(data_dir, ids[:n_beds])
        k = 0
        for org, n in args.monitors:
            for i in range(1, n + 1):
                pid = ids[k]
                sources.append(PatientSource(f"{org}.bed{i}", org, pid, rows[pid], args.monitor_rate))
                k += 1
    return sources


async def amain(args: argparse.Namespace) -> None:
    check_security_flags(args.insecure, args.cert, args.key, args.trust)
    sources = make_sources(args)
    if not sources:
        raise SystemExit("error: nothing to simulate: give --machines ORG:N and/or --monitors ORG:N")
    security = None if args.insecure else ServerSecurity(args.cert, args.key, list(args.trust))
    args.data_dir.mkdir(parents=True, exist_ok=True)
    sim = SimulatorServer(sources, args.data_dir / "history.sqlite", host=args.host, port=args.port, tick_s=args.tick,
                          security=security, retention_s=args.retention)
    await sim.setup()
    if args.write_mapping:
        args.write_mapping.parent.mkdir(parents=True, exist_ok=True)
        args.write_mapping.write_text(yaml.safe_dump(sim.mapping(), sort_keys=True))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sim.stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(sim, "paused", True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(sim, "paused", False))
    if args.duration > 0:
        loop.call_later(args.duration, sim.stop)
    metrics_server = None
    if args.metrics_port:
        metrics_server = start_server(SimulatorMetrics(sim).registry, args.metrics_port, "simulators", sim.host)
    try:
        await sim.server.start()
        print(ready_line(sim, metrics_url(args.metrics_port, sim.host) if metrics_server else None), flush=True)
        try:
            await sim._loop()
        finally:
            await sim.server.stop()
    finally:
        stop_server(metrics_server)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(amain(args))
    except (OSError, ValueError) as exc:  # port in use, unreadable data, unknown patient …
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
