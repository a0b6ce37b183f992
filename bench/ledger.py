"""Ledger throughput and latency on the real Fabric network: recorded and evaluate-only access checks.

What is measured: the project's Gateway client (gRPC + TLS, real Fabric-CA identities) against a real
`twinledger up` network (3 Raft orderers, 4 peers, 4 Python chaincode servers, all on this machine).
plant1's steward registers a data set and grants it to plant2 for a purpose; then plant2's client, over
one gateway connection to its own org's peer, runs a closed loop with N calls in flight of
  * ``submit data:Check``  -- a recorded check: endorsed by the peers the policy needs, ordered by Raft,
    validated and committed; a call ends when its commit status arrives. Every one must come back VALID
    (anything else is counted with its reason), and at the end the data set's audit trail must hold
    exactly one access record per VALID commit;
  * ``evaluate data:CheckReadOnly`` -- answered by one peer and its chaincode, nothing ordered.
For each cell: calls per second in the measured window, p50 / p99 submit-to-commit (or evaluate)
latency, and CPU milliseconds per completed call of each kind of process -- the peers, the orderers,
the chaincode servers (all from /proc/<pid>/stat of the supervised processes) and this client -- plus
how busy the whole machine was (/proc/stat; other tenants of the shared cores included).

    .venv/bin/python -m bench.ledger                  # sweep 1 -> 256 in flight, 3 runs; ~6 minutes
    .venv/bin/python -m bench.ledger --quick          # 1, 16, 64 in flight, one short run: <= 60 s
    .venv/bin/python -m bench.ledger --home DIR       # an already running network (left running)
    .venv/bin/python -m bench.ledger --profile DIR    # + profiles of plant2's peer and chaincode server
    .venv/bin/python -m bench.ledger --batch-timeout-ms 20 100   # one network per block cutting, side by side

Figures are medians over ``--runs`` sweeps. The last line is ``key=value``: ``tx_per_s`` is the best
recorded-check rate of the sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ledger_profile import LedgerProfiler  # noqa: E402
from bench.network import BenchNetwork, bench_network  # noqa: E402
from network.spec import DEFAULT_SPEC_PATH  # noqa: E402
from network.gateway_errors import GatewayError  # noqa: E402
from orchestrator.bringup import CHAINCODE_NAME  # noqa: E402
from orchestrator.connect import connect  # noqa: E402

PURPOSE = "train:bench-ledger"
OWNER, CHECKER = ("plant1", "steward"), ("plant2", "client")
KINDS = ("peer", "orderer", "chaincode")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A worker stops after this many failures in a row: a broken setup, not a slow one.
MAX_FAILURES_IN_A_ROW = 5


class BenchError(RuntimeError):
    """The figures would mean nothing (a check denied, the audit trail not matching the commits)."""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all threads); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Cell:
    call: str                  # "submit Check" or "evaluate CheckReadOnly"
    conc: int
    rate: float                # completed calls per second in the window
    p50: float                 # ms
    p99: float                 # ms
    n: int
    cpu_ms: dict[str, float]   # per completed call: peer, orderer, chaincode, client
    host_util: float           # % of the machine (all cores), other tenants included
    failures: dict[str, int] = field(default_factory=dict)


class CpuMeter:
    """CPU seconds of every supervised process by kind and of this client, between two reads."""

    def __init__(self, net: BenchNetwork) -> None:
        self.pids = net.pids_by_type()

    def read(self) -> dict[str, float]:
        out = {kind: sum(proc_cpu(p) for p in self.pids.get(kind, [])) for kind in KINDS}
        out["client"] = time.process_time()
        out["host_busy"], out["host_total"] = host_cpu()
        out["wall"] = time.perf_counter()
        return out


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return f"{type(exc).__name__}: {getattr(exc, 'validation_name', None) or (exc.code.name if exc.code else '')}"
    return f"{type(exc).__name__}: {exc}"


async def closed_loop(call: Callable[[], Awaitable[None]], conc: int, warmup: float, duration: float,
                      meter: CpuMeter) -> tuple[list[float], dict[str, int], dict[str, float], dict[str, float]]:
    """``conc`` workers, each issuing its next call when the last returns, for warmup + duration seconds.
    Returns the latencies (ms) of the calls completed inside the window, failures by reason, CPU at both ends."""
    begin = time.perf_counter() + warmup
    end = begin + duration
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    marks: dict[str, dict[str, float]] = {}

    async def worker() -> None:
        in_a_row = 0
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                await call()
            except Exception as exc:  # noqa: BLE001 -- counted by reason and reported
                failures[failure_reason(exc)] += 1
                in_a_row += 1
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    return
                continue
            in_a_row = 0
            done = time.perf_counter()
            if begin <= done <= end:
                latencies.append((done - started) * 1000)

    async def sample() -> None:
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        marks["t0"] = meter.read()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        marks["t1"] = meter.read()

    await asyncio.wait_for(asyncio.gather(sample(), *(worker() for _ in range(conc))),
                           timeout=warmup + duration + 120)
    return latencies, dict(failures), marks["t0"], marks["t1"]


def make_cell(call: str, conc: int, duration: float, measured: tuple) -> Cell:
    latencies, failures, t0, t1 = measured
    n = len(latencies)
    per_call = {k: (t1[k] - t0[k]) * 1000 / max(1, n) for k in (*KINDS, "client")}
    window = t1["host_total"] - t0["host_total"]
    host = (t1["host_busy"] - t0["host_busy"]) / window * 100 if window > 0 else float("nan")
    return Cell(call, conc, n / duration, pct(latencies, 50), pct(latencies, 99), n, per_call, host, failures)


async def sweep(net: BenchNetwork, concurrency: list[int], warmup: float, duration: float, run: int,
                calls: tuple[str, ...] = ("evaluate", "submit"), profiler: LedgerProfiler | None = None) -> list[Cell]:
    spec, layout = net.spec, net.layout
    dataset = f"{OWNER[0]}.bench-{secrets.token_hex(3)}"  # a fresh data set per run: its own audit trail
    async with connect(spec, layout, *OWNER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        manifest = hashlib.sha256(b"bench.ledger manifest").hexdigest()
        await data.submit("RegisterDataset", dataset, "tabular", '{"rows": 10000}', manifest, "internal")
        await data.submit("Grant", dataset, CHECKER[0], PURPOSE, "")

    meter = CpuMeter(net)
    cells: list[Cell] = []
    valid = 0
    async with connect(spec, layout, *CHECKER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")

        def allowed(raw: bytes) -> None:
            answer = json.loads(raw)
            if not answer.get("allowed"):
                raise BenchError(f"check denied: {answer}")

        allowed(await data.evaluate("CheckReadOnly", dataset, PURPOSE))  # connection and TLS warmed up

        async def evaluate() -> None:
            allowed(await data.evaluate("CheckReadOnly", dataset, PURPOSE))

        async def submit() -> None:
            nonlocal valid
            transaction = await data.new_proposal("Check", dataset, PURPOSE).endorse()
            commit = await transaction.submit()
            status = await commit.status()
            if not status.successful:
                raise BenchError(f"committed as {status.code_name}")
            valid += 1
            allowed(transaction.result)

        for conc in concurrency:
            kinds = {"evaluate": ("evaluate CheckReadOnly", evaluate), "submit": ("submit Check", submit)}
            for name, call in (kinds[k] for k in calls):
                # The profiles cover the busiest recorded-check cell of the first sweep.
                profiled = profiler is not None and run == 1 and call is submit and conc == max(concurrency)
                with profiler.cell(warmup, duration) if profiled else contextlib.nullcontext():
                    measured = await closed_loop(call, conc, warmup, duration, meter)
                cell = make_cell(name, conc, duration, measured)
                cells.append(cell)
                fails = f" failures={cell.failures}" if cell.failures else ""
                print(f"  run {run} {name:<22} in flight {conc:>3}: {cell.rate:7.1f}/s p50 {cell.p50:7.1f} ms "
                      f"p99 {cell.p99:7.1f} ms{fails}", file=sys.stderr, flush=True)

        # Recorded means recorded: one access entry per VALID check, and nothing else.
        trail = json.loads(await data.evaluate("Audit", dataset))
        recorded = sum(1 for entry in trail["entries"] if entry["action"] == "access")
        if recorded != valid:
            raise BenchError(f"audit trail of {dataset} holds {recorded} access records for {valid} VALID checks")
        print(f"  run {run}: audit trail of {dataset} holds {recorded} access records = {valid} VALID checks",
              file=sys.stderr, flush=True)
    return cells


def medians(runs: list[list[Cell]]) -> list[Cell]:
    groups: dict[tuple[str, int], list[Cell]] = {}
    for cells in runs:
        for c in cells:
            groups.setdefault((c.call, c.conc), []).append(c)
    out = []
    for (call, conc), cells in groups.items():
        failures: collections.Counter[str] = collections.Counter()
        for c in cells:
            failures.update(c.failures)
        out.append(Cell(
            call, conc, statistics.median(c.rate for c in cells), statistics.median(c.p50 for c in cells),
            statistics.median(c.p99 for c in cells), round(statistics.median(c.n for c in cells)),
            {k: statistics.median(c.cpu_ms[k] for c in cells) for k in cells[0].cpu_ms},
            statistics.median(c.host_util for c in cells), dict(failures)))
    out.sort(key=lambda c: (c.call.startswith("submit"), c.conc))
    return out


def print_table(cells: list[Cell], net: BenchNetwork, runs: int) -> None:
    batch = net.spec.batch
    orderers = len(net.spec.nodes_of(net.spec.orderer_org.name, "orderer"))
    peers = sum(len(net.spec.nodes_of(o.name, "peer")) for o in net.spec.member_orgs)
    print(f"Fabric v3.1.5, {orderers} Raft orderers, {peers} peers, {peers} Python chaincode servers, all on this machine "
          f"({os.cpu_count()} cores); block cutting: BatchTimeout {batch.timeout_ms} ms, MaxMessageCount "
          f"{batch.max_message_count}; medians of {runs} run(s)")
    head = (f"{'call':<22} {'in flight':>9} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'n':>6} "
            f"{'peer':>6} {'orderer':>7} {'cc':>6} {'client':>6} {'host %':>6}  failures")
    print(head)
    print(f"{'':<22} {'':>9} {'':>8} {'':>8} {'':>8} {'':>6} {'CPU ms per call':^30} {'':>6}")
    print("-" * len(head))
    for c in cells:
        fails = ", ".join(f"{k} x{v}" for k, v in c.failures.items()) or "-"
        print(f"{c.call:<22} {c.conc:>9} {c.rate:>8.1f} {c.p50:>8.1f} {c.p99:>8.1f} {c.n:>6} "
              f"{c.cpu_ms['peer']:>6.2f} {c.cpu_ms['orderer']:>7.2f} {c.cpu_ms['chaincode']:>6.2f} "
              f"{c.cpu_ms['client']:>6.2f} {c.host_util:>6.0f}  {fails}")


def summary(cells: list[Cell]) -> str:
    submits = [c for c in cells if c.call.startswith("submit")]
    evaluates = [c for c in cells if c.call.startswith("evaluate")]
    parts = []
    if submits:
        best = max(submits, key=lambda c: c.rate)
        one = min(submits, key=lambda c: c.conc)
        cpu = sum(best.cpu_ms[k] for k in (*KINDS, "client"))
        parts.append(f"tx_per_s={best.rate:.1f} tx_in_flight={best.conc} tx_p50_ms={best.p50:.0f} "
                     f"tx_p99_ms={best.p99:.0f} one_in_flight_p50_ms={one.p50:.0f} cpu_ms_per_tx={cpu:.1f}")
    if evaluates:
        best_eval = max(evaluates, key=lambda c: c.rate)
        parts.append(f"evaluate_per_s={best_eval.rate:.1f} evaluate_in_flight={best_eval.conc}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64, 256], help="calls in flight")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per cell before measuring")
    parser.add_argument("--runs", type=int, default=3, help="sweeps; figures are their medians")
    parser.add_argument("--quick", action="store_true", help="1, 16, 64 in flight, 3 s cells, one run (<= 60 s)")
    parser.add_argument("--home", type=Path, help="a running network to measure (default: a temporary one)")
    parser.add_argument("--calls", choices=("both", "submit", "evaluate"), default="both",
                        help="which calls to measure (default both: evaluate-only and recorded checks)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also profile the checking org's peer (Go pprof) and its chaincode server (cProfile) "
                             "during the busiest recorded-check cell, files into DIR (temporary network only)")
    parser.add_argument("--batch-timeout-ms", type=int, nargs="+", metavar="MS",
                        help="measure a network per BatchTimeout (block cutting), one after the other, side by side")
    args = parser.parse_args(argv)
    calls = ("evaluate", "submit") if args.calls == "both" else (args.calls,)
    if args.quick:
        args.concurrency, args.duration, args.warmup, args.runs = [1, 16, 64], 3.0, 1.0, 1
    if any(c < 1 for c in args.concurrency) or args.duration <= 0 or args.runs < 1:
        parser.error("--concurrency values, --duration and --runs must be positive")
    if args.profile and args.home:
        parser.error("--profile restarts a peer and a chaincode server with profiling on: only for the bench's own "
                     "temporary network, not with --home")
    if args.profile and "submit" not in calls:
        parser.error("--profile profiles the busiest recorded-check cell: measure submit too")

    if args.batch_timeout_ms and args.home:
        parser.error("--batch-timeout-ms starts a network per setting: not with --home")
    if any(t < 1 for t in args.batch_timeout_ms or []):
        parser.error("--batch-timeout-ms values must be positive")

    t0 = time.monotonic()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory(prefix="tl-bench-specs-") as specs:
        for timeout_ms in args.batch_timeout_ms or [None]:
            spec = spec_with_batch_timeout(Path(specs), timeout_ms) if timeout_ms else None
            if timeout_ms:
                say(f"block cutting: BatchTimeout {timeout_ms} ms")
            results.append(measure(args, calls, spec, say))
    print(f"(whole bench {time.monotonic() - t0:.0f} s)")
    if len(results) == 1:
        print(summary(results[0][1]))
    else:  # one set of keys per block cutting, side by side
        print(" ".join(f"{key}_bt{timeout}={value}" for timeout, cells in results
                       for key, value in (kv.split("=", 1) for kv in summary(cells).split())))
    return 0


def spec_with_batch_timeout(folder: Path, timeout_ms: int) -> Path:
    """The default spec with another BatchTimeout (everything else as `twinledger up` would make it)."""
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec.setdefault("batch", {})["timeout_ms"] = timeout_ms
    path = folder / f"spec-batch-{timeout_ms}ms.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def measure(args: argparse.Namespace, calls: tuple[str, ...], spec: Path | None, say) -> tuple[int, list[Cell]]:
    """Every sweep on one network; prints its table (and profiles). Returns (BatchTimeout ms, median cells)."""
    with bench_network(args.home, say=say, spec=spec) as net:
        profiler = LedgerProfiler(net, net.spec.nodes_of(CHECKER[0], "peer")[0].name, args.profile, say) if args.profile else None
        if profiler:
            profiler.enable()
        runs = []
        try:
            for r in range(args.runs):
                runs.append(asyncio.run(sweep(net, args.concurrency, args.warmup, args.duration, r + 1, calls, profiler)))
                if profiler and r == 0:
                    profiler.finish()  # the profilers slow what they watch: later sweeps run without them
        finally:
            if profiler:
                profiler.finish()
        cells = medians(runs)
        print_table(cells, net, args.runs)
        if profiler:
            profiler.report()
        return net.spec.batch.timeout_ms, cells


if __name__ == "__main__":
    sys.exit(main())
