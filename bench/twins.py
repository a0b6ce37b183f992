"""Sensor → twin → sealed-batch benchmark over real OPC-UA sockets.

For each offered rate (values/s) a fresh simulator process (``python -m twins.simulators``, two plants of five
AI4I machines, 14 variables each = 140 variables) publishes at that rate; the bridge, twins and batcher run in
this process with a file anchorer. After a warm-up, for ``--step`` seconds it measures:

- achieved values/s delivered in order to the twins (and gaps/replays/losses),
- sensor → twin latency p50/p99: twin updated − OPC-UA SourceTimestamp (the sample's scheduled time),
- sensor → sealed latency p50/p99: batch committed to the local store − SourceTimestamp (bounded below by the
  anchoring interval: a reading waits on average interval/2 for its batch),
- anchor records per second (one per org per interval when data flows: should be flat),
- simulator lag p50/p99: publish time − scheduled sample time (how late the server itself is),
- CPU of the simulator process and of the bridge process (% of one core).

On-ledger anchoring is not included (no Fabric peers yet): "sealed" is where the ledger submission starts.

    .venv/bin/python -m bench.twins                       # rates 100 1000 3000 10000, 4 s each
    .venv/bin/python -m bench.twins --rates 100 10000 --step 3 --interval 0.5

Ends with one ``key=value`` line (figures of the highest rate).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twins.anchoring.anchorer import FileAnchorer  # noqa: E402
from twins.bridge.client import OpcUaBridge  # noqa: E402
from twins.bridge.mapping import load_mapping  # noqa: E402
from twins.procs import Proc, simulator_argv  # noqa: E402
from twins.runtime import TwinRuntime  # noqa: E402

MACHINES = ["plant1:5", "plant2:5"]
VARS_PER_MACHINE = 14


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _step(rate: float, seconds: float, warmup: float, interval: float, work: Path) -> dict:
    n_machines = 10
    products_per_s = rate / (n_machines * VARS_PER_MACHINE)
    port = _free_port()
    sim = Proc(simulator_argv(port=port, data_dir=work / "sim", machines=MACHINES, machine_rate=products_per_s,
                              mapping_out=work / "mapping.yaml", tick=0.02), log=work / "sim.log")
    try:
        sim.wait_ready(60)
        mapping = load_mapping(work / "mapping.yaml")
        rt = TwinRuntime(mapping, work / "readings.sqlite", FileAnchorer(work / "anchors.jsonl"), interval=interval)
        bridge = OpcUaBridge(mapping, rt.on_reading, publish_ms=20)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(bridge.run(stop)), asyncio.create_task(rt.run_anchoring(stop, drain_timeout=2))]
        await asyncio.sleep(warmup)
        rt.twin_latency.reset()
        rt.seal_latency.reset()
        r0, b0, a0 = rt.readings, rt.batches, rt.anchored
        c_sim0, c_me0, t0 = sim.cpu_seconds(), time.process_time(), time.monotonic()
        t0_wall_us = time.time_ns() // 1000
        await asyncio.sleep(seconds)
        dt = time.monotonic() - t0
        c_sim, c_me = sim.cpu_seconds() - c_sim0, time.process_time() - c_me0
        r1, b1, a1 = rt.readings, rt.batches, rt.anchored
        t50, t99 = rt.twin_latency.percentiles(50, 99)
        s50, s99 = rt.seal_latency.percentiles(50, 99)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        rt.close()
        lag50, lag99 = _sim_lag(work / "sim" / "history.sqlite", t0_wall_us, t0_wall_us + int(dt * 1e6))
        return {
            "offered": rate, "achieved": (r1 - r0) / dt, "twin_p50": t50, "twin_p99": t99, "sealed_p50": s50,
            "sealed_p99": s99, "anchors_per_s": (b1 - b0) / dt, "anchored_per_s": (a1 - a0) / dt,
            "cpu_sim": 100 * c_sim / dt, "cpu_bridge": 100 * c_me / dt, "gaps": bridge.seq.gaps,
            "replayed": bridge.seq.replayed, "lost": bridge.seq.lost, "lag_p50": lag50, "lag_p99": lag99,
        }
    finally:
        sim.stop()


def _sim_lag(path: Path, lo_us: int, hi_us: int) -> tuple[float | None, float | None]:
    """Simulator lag: publish (ServerTimestamp) − scheduled sample time (SourceTimestamp), ms."""
    import sqlite3

    db = sqlite3.connect(path)
    v = sorted((st - ts) / 1000.0 for ts, st in db.execute("SELECT ts_us, server_ts_us FROM samples WHERE ts_us BETWEEN ? AND ?", (lo_us, hi_us)))
    db.close()
    if not v:
        return None, None
    return v[len(v) // 2], v[min(len(v) - 1, int(0.99 * (len(v) - 1)))]


def _f(x: float | None, nd: int = 0) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.twins", description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=[100, 1000, 3000, 10000], help="offered values/s")
    p.add_argument("--step", type=float, default=4.0, help="measured seconds per rate (default 4)")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--interval", type=float, default=1.0, help="anchoring interval in seconds (default 1)")
    p.add_argument("--log", type=Path, default=None, help="write the bridge's warnings here (default: stderr)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, filename=args.log, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    rows = []
    started = time.monotonic()
    for rate in args.rates:
        with tempfile.TemporaryDirectory(prefix="bench-twins-") as d:
            rows.append(asyncio.run(_step(rate, args.step, args.warmup, args.interval, Path(d))))
    hdr = (f"{'offered/s':>9} {'achieved/s':>10} {'twin p50':>8} {'twin p99':>8} {'sealed p50':>10} {'sealed p99':>10} "
           f"{'anchors/s':>9} {'sim lag p50':>11} {'sim lag p99':>11} {'cpu sim%':>8} {'cpu bridge%':>11} {'gaps':>5} {'replayed':>8} {'lost':>4}")
    print(f"sensor → twin → sealed batch, 10 AI4I machines x 14 variables, anchoring interval {args.interval:g} s, "
          f"{os.cpu_count()} cores (latencies in ms)")
    print(hdr)
    for r in rows:
        print(f"{r['offered']:>9.0f} {r['achieved']:>10.0f} {_f(r['twin_p50']):>8} {_f(r['twin_p99']):>8} "
              f"{_f(r['sealed_p50']):>10} {_f(r['sealed_p99']):>10} {r['anchors_per_s']:>9.2f} {_f(r['lag_p50']):>11} {_f(r['lag_p99']):>11} {r['cpu_sim']:>8.0f} "
              f"{r['cpu_bridge']:>11.0f} {r['gaps']:>5} {r['replayed']:>8} {r['lost']:>4}")
    top = rows[-1]
    print(f"rate={top['offered']:.0f} achieved_per_s={top['achieved']:.0f} twin_p50_ms={_f(top['twin_p50'])} "
          f"twin_p99_ms={_f(top['twin_p99'])} sealed_p50_ms={_f(top['sealed_p50'])} sealed_p99_ms={_f(top['sealed_p99'])} "
          f"anchors_per_s={top['anchors_per_s']:.2f} sim_lag_p99_ms={_f(top['lag_p99'])} cpu_sim_pct={top['cpu_sim']:.0f} cpu_bridge_pct={top['cpu_bridge']:.0f} "
          f"lost={top['lost']} wall_s={time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
