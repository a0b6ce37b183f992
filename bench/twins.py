"""Sensor → twin → sealed batch → anchored on Fabric, over real OPC-UA sockets and a real Fabric network.

The bridge, twins, batcher and anchorer run in this process (``TwinRuntime`` + ``OpcUaBridge``, as
``python -m twins.bridge run`` does); a simulator process (``python -m twins.simulators``) publishes; each org's
batches are anchored on the ledger as that org's operator through its own peer (``connect_ledger`` with the config
`twinledger twins run` writes), i.e. ``twins:AnchorSensorBatch`` endorsed, ordered by Raft and committed. Without
``--home`` the bench brings its own network up (`twinledger up` on free ports, ``bench/network.py``) and down.

Two sweeps, each step with a fresh store (which joins each org's chain on the ledger after its last batch):

1. **sensor rate** (``--rates``, values/s): two plants of five AI4I machines (140 variables), anchoring interval
   ``--interval``; after a warm-up, for ``--step`` seconds: achieved values/s; sensor → twin, → sealed (batch in the
   local store) and → anchored (its transaction committed on Fabric) latency p50/p99, from the OPC-UA
   SourceTimestamp; anchor transactions committed per second; simulator lag; CPU of the simulator and of the bridge.
2. **anchor rate** (``--intervals``, s): 4 orgs (plant1:2, plant2:2 machines, hospital1:1, hospital2:1 monitors)
   at a modest sensor rate, sealing one batch per org per interval, so the offered anchor rate is 4 / interval tx/s:
   anchor tx/s committed, submit → commit p50/p99 per transaction, sensor → anchored p50/p99, and the backlog
   (batches sealed but not anchored) at the end of the window.

    .venv/bin/python -m bench.twins                     # 100 1000 3000 10000 values/s; intervals 1 0.5 0.25 0.1
    .venv/bin/python -m bench.twins --quick             # 100 3000 values/s; intervals 1 0.25; 3 s steps
    .venv/bin/python -m bench.twins --home DIR          # an already running network (left running)
    .venv/bin/python -m bench.twins --opcua both --intervals   # sweep 1 with and without OPC-UA security, side by side

Ends with one ``key=value`` line: the highest sensor rate's figures and the best committed anchor rate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# gRPC's "skipping fork() handlers" notice each time a simulator is started beside the open gateways: noise here
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.network import BenchNetwork, bench_network  # noqa: E402
from orchestrator.twins_state import ledger_config  # noqa: E402
from twins.anchoring.anchorer import Anchorer, connect_ledger  # noqa: E402
from twins.anchoring.record import BatchRecord  # noqa: E402
from twins.bridge.client import OpcUaBridge  # noqa: E402
from twins.bridge.mapping import load_mapping  # noqa: E402
from twins.procs import Proc, simulator_argv  # noqa: E402
from twins.runtime import LatencyRecorder, TwinRuntime  # noqa: E402
from twins.security import POLICY_NAME, ClientSecurity, prepare_pki  # noqa: E402

RATE_MACHINES = ["plant1:5", "plant2:5"]
VARS_PER_MACHINE = 14
ANCHOR_MACHINES, ANCHOR_MONITORS = ["plant1:2", "plant2:2"], ["hospital1:1", "hospital2:1"]
ANCHOR_PRODUCTS_PER_S = 5.0  # per machine: 4 x 5 x 14 = 280 values/s, plus the monitors


class TimedAnchorer:
    """The ledger anchorer, with the submit → commit time of every batch transaction recorded (ms)."""

    def __init__(self, inner: Anchorer) -> None:
        self.inner = inner
        self.name = inner.name
        self.commit = LatencyRecorder()

    async def submit_anchor(self, record: BatchRecord) -> str:
        t0 = time.perf_counter()
        tx = await self.inner.submit_anchor(record)
        self.commit.add((time.perf_counter() - t0) * 1000.0)
        return tx

    def __getattr__(self, name: str) -> Any:  # get_anchor, raise_alert, report_sustainability, chain_head
        return getattr(self.inner, name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _step(net: BenchNetwork, work: Path, *, machines: list[str], monitors: list[str], products_per_s: float,
                seconds: float, warmup: float, interval: float, insecure: bool = False) -> dict:
    orgs = sorted({m.partition(":")[0] for m in machines + monitors})
    # as `twins run`: SignAndEncrypt with certificates from the first org's CA, unless measuring without security
    pki = None if insecure else prepare_pki(net.home, machines[0].partition(":")[0], orgs, work / "pki")
    sec = {"insecure": True} if pki is None else {"cert": pki.server.cert, "key": pki.server.key, "trust": [pki.trust]}
    sim = Proc(simulator_argv(port=_free_port(), data_dir=work / "sim", machines=machines, monitors=monitors,
                              machine_rate=products_per_s, monitor_rate=2.0, mapping_out=work / "mapping.yaml",
                              tick=0.02, **sec), log=work / "sim.log")
    gateways: list = []
    try:
        sim.wait_ready(60)
        mapping = load_mapping(work / "mapping.yaml")
        routed, gateways = connect_ledger(ledger_config(net.home, orgs))
        anchorer = TimedAnchorer(routed)
        rt = TwinRuntime(mapping, work / "readings.sqlite", anchorer, interval=interval, report_every=0)
        security = None if pki is None else ClientSecurity(pki.bridge.cert, pki.bridge.key, [pki.trust])
        bridge = OpcUaBridge(mapping, rt.on_reading, publish_ms=20, security=security)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(rt.run_anchoring(stop, drain_timeout=3))]
        await asyncio.sleep(warmup)
        for rec in (rt.twin_latency, rt.seal_latency, rt.anchor_latency, anchorer.commit):
            rec.reset()
        r0, b0, a0 = rt.readings, rt.batches, rt.anchored
        c_sim0, c_me0, t0 = sim.cpu_seconds(), time.process_time(), time.monotonic()
        t0_wall_us = time.time_ns() // 1000
        await asyncio.sleep(seconds)
        dt = time.monotonic() - t0
        c_sim, c_me = sim.cpu_seconds() - c_sim0, time.process_time() - c_me0
        r1, b1, a1 = rt.readings, rt.batches, rt.anchored
        backlog = sum(rt.pending_by_org.values())
        t50, t99 = rt.twin_latency.percentiles(50, 99)
        s50, s99 = rt.seal_latency.percentiles(50, 99)
        an50, an99 = rt.anchor_latency.percentiles(50, 99)
        c50, c99 = anchorer.commit.percentiles(50, 99)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        errors = rt.anchor_errors
        rt.close()
        lag50, lag99 = _sim_lag(work / "sim" / "history.sqlite", t0_wall_us, t0_wall_us + int(dt * 1e6))
        return {
            "orgs": len(orgs), "interval": interval, "achieved": (r1 - r0) / dt, "twin_p50": t50, "twin_p99": t99,
            "sealed_p50": s50, "sealed_p99": s99, "anchored_p50": an50, "anchored_p99": an99, "commit_p50": c50,
            "commit_p99": c99, "sealed_per_s": (b1 - b0) / dt, "anchored_per_s": (a1 - a0) / dt, "backlog": backlog,
            "anchor_errors": errors, "cpu_sim": 100 * c_sim / dt, "cpu_bridge": 100 * c_me / dt,
            "lost": bridge.seq.lost, "lag_p50": lag50, "lag_p99": lag99,
        }
    finally:
        for g in gateways:
            await g.close()
        sim.stop()


def _sim_lag(path: Path, lo_us: int, hi_us: int) -> tuple[float | None, float | None]:
    """Simulator lag: publish (ServerTimestamp) − scheduled sample time (SourceTimestamp), ms."""
    db = sqlite3.connect(path)
    v = sorted((st - ts) / 1000.0 for ts, st in db.execute("SELECT ts_us, server_ts_us FROM samples WHERE ts_us BETWEEN ? AND ?", (lo_us, hi_us)))
    db.close()
    if not v:
        return None, None
    return v[len(v) // 2], v[min(len(v) - 1, int(0.99 * (len(v) - 1)))]


def _f(x: float | None, nd: int = 0) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _run(net: BenchNetwork, **kw: Any) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-twins-") as d:
        return asyncio.run(_step(net, Path(d), **kw))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.twins", description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[100, 1000, 3000, 10000], help="offered values/s (sweep 1)")
    p.add_argument("--intervals", type=float, nargs="*", default=[1.0, 0.5, 0.25, 0.1],
                   help="anchoring intervals in s, 4 orgs (sweep 2; nothing: skip it)")
    p.add_argument("--step", type=float, default=5.0, help="measured seconds per step (default 5)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--interval", type=float, default=1.0, help="anchoring interval of sweep 1 in seconds (default 1)")
    p.add_argument("--quick", action="store_true", help="rates 100 3000, intervals 1 0.25, 3 s steps")
    p.add_argument("--home", type=Path, help="a running network (default: a temporary one, up and down)")
    p.add_argument("--log", type=Path, default=None, help="write the bridge's warnings here (default: stderr)")
    p.add_argument("--opcua", choices=("secure", "insecure", "both"), default="secure",
                   help=f"OPC-UA {POLICY_NAME} SignAndEncrypt as `twins run` (default), NoSecurity, or sweep 1 with both "
                        "side by side")
    args = p.parse_args(argv)
    if args.quick:
        args.rates, args.intervals, args.step, args.warmup = [100, 3000], [1.0, 0.25], 3.0, 1.5
    logging.basicConfig(level=logging.WARNING, filename=args.log, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    started = time.monotonic()
    n_machines = 10
    with bench_network(args.home, say=lambda m: print(m, file=sys.stderr, flush=True)) as net:
        modes = {"secure": [False], "insecure": [True], "both": [False, True]}[args.opcua]
        rows = [dict(_run(net, machines=RATE_MACHINES, monitors=[], products_per_s=rate / (n_machines * VARS_PER_MACHINE),
                          seconds=args.step, warmup=args.warmup, interval=args.interval, insecure=insecure),
                     offered=rate, opcua="none" if insecure else "S&E")
                for rate in args.rates for insecure in modes]
        arows = [_run(net, machines=ANCHOR_MACHINES, monitors=ANCHOR_MONITORS, products_per_s=ANCHOR_PRODUCTS_PER_S,
                      seconds=args.step, warmup=args.warmup, interval=iv, insecure=modes[0]) for iv in args.intervals]
        up = f", network up in {net.up_seconds:.0f} s" if net.up_seconds is not None else ""

    print(f"1. sensor → twin → sealed → anchored on Fabric: 10 AI4I machines x 14 variables in 2 plant orgs, interval "
          f"{args.interval:g} s, {args.step:g} s steps, {os.cpu_count()} cores{up}; OPC-UA S&E = {POLICY_NAME} "
          "SignAndEncrypt, none = NoSecurity (latencies in ms)")
    print(f"{'opcua':>5} {'offered/s':>9} {'achieved/s':>10} {'twin p50':>8} {'twin p99':>8} {'sealed p50':>10} {'sealed p99':>10} "
          f"{'anchored p50':>12} {'anchored p99':>12} {'sealed/s':>8} {'anchor tx/s':>11} {'sim lag p99':>11} {'cpu sim%':>8} "
          f"{'cpu bridge%':>11} {'lost':>4}")
    for r in rows:
        print(f"{r['opcua']:>5} {r['offered']:>9.0f} {r['achieved']:>10.0f} {_f(r['twin_p50']):>8} {_f(r['twin_p99']):>8} "
              f"{_f(r['sealed_p50']):>10} {_f(r['sealed_p99']):>10} {_f(r['anchored_p50']):>12} {_f(r['anchored_p99']):>12} "
              f"{r['sealed_per_s']:>8.2f} {r['anchored_per_s']:>11.2f} {_f(r['lag_p99']):>11} {r['cpu_sim']:>8.0f} {r['cpu_bridge']:>11.0f} {r['lost']:>4}")
    if arows:
        print(f"\n2. anchor rate: 4 orgs (2 plants x 2 machines at {ANCHOR_PRODUCTS_PER_S:g} products/s, 2 hospitals x 1 "
              "monitor), one AnchorSensorBatch per org per interval (latencies in ms)")
        print(f"{'interval s':>10} {'offered tx/s':>12} {'sealed/s':>8} {'anchor tx/s':>11} {'commit p50':>10} "
              f"{'commit p99':>10} {'anchored p50':>12} {'anchored p99':>12} {'backlog':>7} {'errors':>6} {'cpu bridge%':>11}")
        for r in arows:
            print(f"{r['interval']:>10g} {r['orgs'] / r['interval']:>12.1f} {r['sealed_per_s']:>8.1f} "
                  f"{r['anchored_per_s']:>11.2f} {_f(r['commit_p50']):>10} {_f(r['commit_p99']):>10} "
                  f"{_f(r['anchored_p50']):>12} {_f(r['anchored_p99']):>12} {r['backlog']:>7} {r['anchor_errors']:>6} "
                  f"{r['cpu_bridge']:>11.0f}")
    top = [r for r in rows if r["opcua"] == rows[0]["opcua"]][-1]
    best = max(arows, key=lambda r: r["anchored_per_s"]) if arows else None
    print(f"opcua={top['opcua']} rate={top['offered']:.0f} achieved_per_s={top['achieved']:.0f} twin_p99_ms={_f(top['twin_p99'])} "
          f"sealed_p50_ms={_f(top['sealed_p50'])} sealed_p99_ms={_f(top['sealed_p99'])} "
          f"anchored_p50_ms={_f(top['anchored_p50'])} anchored_p99_ms={_f(top['anchored_p99'])} "
          f"anchor_tx_per_s={top['anchored_per_s']:.2f} cpu_bridge_pct={top['cpu_bridge']:.0f} lost={top['lost']} "
          + (f"best_anchor_tx_per_s={best['anchored_per_s']:.2f} best_interval_s={best['interval']:g} "
             f"commit_p50_ms={_f(best['commit_p50'])} " if best else "")
          + f"wall_s={time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
