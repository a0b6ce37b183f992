"""Access checks per second and their latency: recorded checks (submit) and evaluate-only checks.

Fabric's peer and orderer binaries cannot be built on this machine (README "Status"), so no figure here is
a real Fabric figure. Two things that CAN be measured are, side by side in every run:

A. DOUBLE (not Fabric). The project's real Gateway client (``network/gateway.py`` through
   ``orchestrator/connect.py``: gRPC + TLS, signed proposals and envelopes, the real Fabric-CA identities
   of a real ``twinledger up`` home) against ``tests.fabric_double`` -- the TEST DOUBLE of the peers'
   Gateway service, one Python process running the REAL chaincode in-process on every peer port,
   verifying every signature and certificate, cutting blocks on a timer (``--block-ms``) and running
   MVCC / key-level-policy validation at commit. The bench first registers a data set (plant1's steward)
   and grants it to plant2 for a purpose, then plant2's client, over one gateway connection to its own
   org's peer, runs a closed loop with 1, 8, 32 calls in flight of
     * ``submit data:Check``: endorse, submit, wait for the commit status (recorded: every one must come
       back VALID, and the audit trail must hold exactly as many access records as VALID commits), once
       per block cutting interval of the double (default 20, 100 = the default spec's batch timeout, 500 ms);
     * ``evaluate data:CheckReadOnly`` (nothing ordered; the block interval plays no part).
B. CHAINCODE ALONE. ``python -m chaincode.server`` -- the real chaincode-as-a-service process, mutual
   TLS -- driven by the peer-role harness of ``tests/fabric_double/ccaas_peer.py`` (the same one
   tests/integration/test_chaincode_service.py uses): TRANSACTION messages with signed proposals,
   GET_STATE / range / metadata requests answered from memory. ``data:Check`` (its write set and event
   are produced; committing them is the peer's job, so nothing is committed) and ``data:CheckReadOnly``.
   This is the chaincode-side cost a real peer pays per call, to which real Fabric adds its own proposal
   checks, endorsement signing, ordering and block validation.

Each cell runs ``--warmup`` seconds, then counts completions and latencies for ``--duration`` seconds;
CPU seconds of the serving process (the double, or the chaincode server; from /proc) and of this process
(client or harness, all threads) and of the whole machine (/proc/stat: other tenants of the shared cores
included) are read at both ends of that window. Figures are medians over ``--runs``; each run starts a
fresh double per block interval and a fresh chaincode server, and every temporary home and process is
stopped at the end (``--home`` reuses a prepared home and leaves its CAs running).

    .venv/bin/python -m bench.governance                    # 3 runs, ~2-3 minutes on 2 cores
    .venv/bin/python -m bench.governance --runs 1 --duration 1 --block-ms 100 --concurrency 1 8

Ends with one ``key=value`` line (submit and evaluate at the highest concurrency and the spec's default
block interval, and the chaincode-alone figures at the highest concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from network.layout import Layout  # noqa: E402
from network.spec import Spec, load_spec  # noqa: E402
from orchestrator.bringup import CHAINCODE_NAME  # noqa: E402
from orchestrator.connect import connect  # noqa: E402
from peers.binaries import fabric_available  # noqa: E402
from tests.fabric_double.ccaas_peer import (  # noqa: E402
    FakePeer,
    Pki,
    ServerProcess,
    completed_response,
    make_pki,
    start_server,
    tls_channel,
)
from tests.fabric_double.process import DoubleProcess, down_home, prepare_home  # noqa: E402

DATASET = "bench-checks"
PURPOSE = "train:bench-v1"
OWNER, CHECKER = ("plant1", "steward"), ("plant2", "client")
#: A cell gives up when this many calls failed in a row (a broken setup, not a slow one).
MAX_CONSECUTIVE_ERRORS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A call came back wrong (denied, not VALID, not COMPLETED): the figures would mean nothing."""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat (other tenants included)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Cell:
    part: str            # "A" (double) or "B" (chaincode alone)
    call: str
    block_ms: int | None
    conc: int
    rate: float          # completed calls per second in the window
    p50: float           # ms
    p99: float           # ms
    n: int               # calls completed in the window
    server_cpu_ms: float  # serving process CPU per call
    client_cpu_ms: float  # this process's CPU per call
    server_util: float   # % of one core
    client_util: float
    host_util: float     # the whole machine, % of one core (up to 100 x cores): includes other tenants
    errors: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # mean ms of each phase (submit: endorse/submit/commit)
    extra: dict[str, float] = field(default_factory=dict)


async def closed_loop(call: Callable[[], Awaitable[dict[str, float]]], conc: int, warmup: float, duration: float,
                      server_pid: int) -> tuple[float, list[float], dict[str, list[float]], dict[str, float], int]:
    """``conc`` workers each issue the next call when the last one returns, for warmup + duration seconds.

    Returns (calls/s, latencies ms, phase latencies ms, CPU figures, errors) of the calls that completed
    inside the measurement window.
    """
    begin = time.perf_counter() + warmup
    end = begin + duration
    latencies: list[float] = []
    phases: dict[str, list[float]] = {}
    errors: list[BaseException] = []
    cpu: dict[str, float] = {}

    async def worker() -> None:
        failed_in_row = 0
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                parts = await call()
            except Exception as exc:  # noqa: BLE001 - counted and reported; a run of them stops the worker
                errors.append(exc)
                failed_in_row += 1
                if failed_in_row >= MAX_CONSECUTIVE_ERRORS:
                    return
                continue
            failed_in_row = 0
            done = time.perf_counter()
            if begin <= done <= end:
                latencies.append((done - started) * 1000)
                for name, seconds in parts.items():
                    phases.setdefault(name, []).append(seconds * 1000)

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        cpu["server0"], cpu["client0"], cpu["t0"] = proc_cpu(server_pid), time.process_time(), time.perf_counter()
        cpu["host0"], cpu["hosttotal0"] = host_cpu()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu["server1"], cpu["client1"], cpu["t1"] = proc_cpu(server_pid), time.process_time(), time.perf_counter()
        cpu["host1"], cpu["hosttotal1"] = host_cpu()

    await asyncio.wait_for(asyncio.gather(sample_cpu(), *(worker() for _ in range(conc))),
                           timeout=warmup + duration + 90)
    if errors and not latencies:
        raise BenchError(f"every call failed: {errors[0]!r}")
    window = cpu["t1"] - cpu["t0"]
    n = max(1, len(latencies))
    figures = {
        "server_cpu_ms": (cpu["server1"] - cpu["server0"]) * 1000 / n,
        "client_cpu_ms": (cpu["client1"] - cpu["client0"]) * 1000 / n,
        "server_util": (cpu["server1"] - cpu["server0"]) / window * 100,
        "client_util": (cpu["client1"] - cpu["client0"]) / window * 100,
        "host_util": (cpu["host1"] - cpu["host0"]) / max(1e-9, cpu["hosttotal1"] - cpu["hosttotal0"])
        * (os.cpu_count() or 1) * 100,
    }
    return len(latencies) / duration, latencies, phases, figures, len(errors)


def make_cell(part: str, call: str, block_ms: int | None, conc: int, measured: tuple[Any, ...],
              extra: dict[str, float] | None = None) -> Cell:
    rate, latencies, phases, cpu, errors = measured
    return Cell(part, call, block_ms, conc, rate, pct(latencies, 50), pct(latencies, 99), len(latencies),
                errors=errors, phases={k: statistics.fmean(v) for k, v in phases.items()} | (
                    {"total": statistics.fmean(latencies)} if phases else {}), extra=extra or {}, **cpu)


def progress(run: int, cell: Cell) -> None:
    block = f" block={cell.block_ms}ms" if cell.block_ms is not None else ""
    err = f" errors={cell.errors}" if cell.errors else ""
    print(f"  run {run} {cell.part} {cell.call:<24}{block:<14} in-flight={cell.conc:<3} {cell.rate:8.1f}/s "
          f"p50={cell.p50:7.1f} ms p99={cell.p99:7.1f} ms n={cell.n}{err}", file=sys.stderr, flush=True)


# --- A: the Gateway client against the peer double --------------------------------------------------


async def setup_grant(spec: Spec, layout: Layout) -> None:
    """plant1's steward registers the data set and grants it to plant2 for PURPOSE (each waits for its commit)."""
    async with connect(spec, layout, *OWNER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        manifest = hashlib.sha256(b"governance bench manifest").hexdigest()
        await data.submit("RegisterDataset", DATASET, "tabular", '{"rows": 10000}', manifest, "internal")
        await data.submit("Grant", DATASET, CHECKER[0], PURPOSE, "")


def _allowed(result: bytes) -> None:
    answer = json.loads(result)
    if not answer.get("allowed"):
        raise BenchError(f"check denied: {answer}")


async def measure_double(spec: Spec, layout: Layout, pid: int, block_ms: int, with_evaluate: bool,
                         args: argparse.Namespace, run: int) -> list[Cell]:
    await setup_grant(spec, layout)
    cells: list[Cell] = []
    valid = 0
    async with connect(spec, layout, *CHECKER) as gateway:
        data = gateway.network(spec.channel).contract(CHAINCODE_NAME, "data")
        _allowed(await data.evaluate("CheckReadOnly", DATASET, PURPOSE))  # connection and TLS set up

        async def evaluate() -> dict[str, float]:
            _allowed(await data.evaluate("CheckReadOnly", DATASET, PURPOSE))
            return {}

        async def submit() -> dict[str, float]:
            nonlocal valid
            t0 = time.perf_counter()
            transaction = await data.new_proposal("Check", DATASET, PURPOSE).endorse()
            t1 = time.perf_counter()
            commit = await transaction.submit()
            t2 = time.perf_counter()
            status = await commit.status()
            t3 = time.perf_counter()
            if not status.successful:
                raise BenchError(f"Check committed as {status.code_name}")
            valid += 1
            _allowed(transaction.result)
            return {"endorse": t1 - t0, "submit": t2 - t1, "commit": t3 - t2}

        for conc in args.concurrency:
            if with_evaluate:
                measured = await closed_loop(evaluate, conc, args.warmup, args.duration, pid)
                cells.append(make_cell("A", "evaluate CheckReadOnly", None, conc, measured))
                progress(run, cells[-1])
            measured = await closed_loop(submit, conc, args.warmup, args.duration, pid)
            cells.append(make_cell("A", "submit Check", block_ms, conc, measured))
            progress(run, cells[-1])

        # "Recorded": every VALID check is an access entry of the data set's audit trail, and nothing else is.
        trail = json.loads(await data.evaluate("Audit", DATASET))
        recorded = sum(1 for entry in trail["entries"] if entry["action"] == "access")
        if recorded != valid:
            raise BenchError(f"audit trail holds {recorded} access records for {valid} VALID checks")
    return cells


def run_double(home: Path, block_ms: int, with_evaluate: bool, args: argparse.Namespace, run: int) -> list[Cell]:
    spec, layout = load_spec(home / "spec.yaml"), Layout(home)
    double = DoubleProcess(home, block_ms=block_ms)  # a fresh in-memory ledger; registers every org
    try:
        return asyncio.run(measure_double(spec, layout, double.process.pid, block_ms, with_evaluate, args, run))
    finally:
        double.stop()


# --- B: the chaincode server alone, driven by a peer-role harness -----------------------------------


async def measure_chaincode(server: ServerProcess, pki: Pki, args: argparse.Namespace, run: int) -> list[Cell]:
    peer = FakePeer(tls_channel(server, pki, pki.peer_tls))
    cells: list[Cell] = []
    try:
        await peer.connect()
        for identity, function, call_args in [
            (pki.admin, "RegisterOrg", ("hospital1", "hospital")),
            (pki.plant_admin, "RegisterOrg", ("plant1", "plant")),
            (pki.steward, "data:RegisterDataset",
             (DATASET, "tabular", "{}", hashlib.sha256(b"governance bench manifest").hexdigest(), "internal")),
            (pki.steward, "data:Grant", (DATASET, "plant1", PURPOSE, "")),
        ]:
            _, response = await peer.submit(identity, function, *call_args)
            if response.status != 200:
                raise BenchError(f"{function}: {response.message}")

        calls = 0

        def invoke(function: str) -> Callable[[], Awaitable[dict[str, float]]]:
            async def call() -> dict[str, float]:
                nonlocal calls
                calls += 1
                reply, context = await peer.execute(pki.plant_admin, f"data:{function}", DATASET, PURPOSE)
                response = completed_response(reply)
                if response.status != 200:
                    raise BenchError(f"{function}: {response.message}")
                _allowed(response.payload)
                if function == "Check" and (len(context.writes) != 1 or
                                            reply.chaincode_event.event_name != "AccessChecked"):
                    raise BenchError("Check produced no access record")
                return {}
            return call

        for conc in args.concurrency:
            for function in ("Check", "CheckReadOnly"):
                requests_before, calls_before = len(peer.requests), calls
                measured = await closed_loop(invoke(function), conc, args.warmup, args.duration,
                                             server.process.pid)
                # Shim requests (chaincode -> peer round trips on the stream) per call, over all calls of the cell.
                trips = (len(peer.requests) - requests_before) / max(1, calls - calls_before)
                cells.append(make_cell("B", f"chaincode {function}", None, conc, measured, {"trips": trips}))
                progress(run, cells[-1])
    finally:
        await peer.close()
    return cells


def run_chaincode(work: Path, pki: Pki, args: argparse.Namespace, run: int) -> list[Cell]:
    server = start_server(work / f"chaincode-{run}.log", pki.files)
    try:
        return asyncio.run(measure_chaincode(server, pki, args, run))
    finally:
        server.stop()


# --- report -----------------------------------------------------------------------------------------


def median_cells(runs: list[list[Cell]]) -> list[tuple[Cell, float, float]]:
    """One cell per (part, call, block, concurrency): the median of every figure, with min and max rate."""
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for cells in runs:
        for cell in cells:
            groups.setdefault((cell.part, cell.call, cell.block_ms, cell.conc), []).append(cell)
    out = []
    for (part, call, block, conc), cells in groups.items():
        def med(attr: str) -> float:
            return statistics.median(getattr(c, attr) for c in cells)

        phases = {k: statistics.median(c.phases[k] for c in cells) for k in cells[0].phases}
        extra = {k: statistics.median(c.extra[k] for c in cells) for k in cells[0].extra}
        cell = Cell(part, call, block, conc, med("rate"), med("p50"), med("p99"), round(med("n")),
                    med("server_cpu_ms"), med("client_cpu_ms"), med("server_util"), med("client_util"),
                    med("host_util"),
                    errors=sum(c.errors for c in cells), phases=phases, extra=extra)
        out.append((cell, min(c.rate for c in cells), max(c.rate for c in cells)))
    order = {"A": 0, "B": 1}
    out.sort(key=lambda t: (order[t[0].part], t[0].call.startswith("submit"), t[0].call, t[0].block_ms or 0,
                            t[0].conc))
    return out


def print_table(rows: list[tuple[Cell, float, float]]) -> None:
    head = (f"{'system':<21} {'call':<24} {'block':>5} {'in':>3} {'checks/s':>8} {'(min-max)':>11} {'p50':>6} "
            f"{'p99':>6} {'endorse':>7} {'commit':>7} {'srv CPU':>7} {'cli CPU':>7} {'srv':>4} {'cli':>4} "
            f"{'host':>4} {'n':>5}")
    units = (f"{'':<21} {'':<24} {'ms':>5} {'fl.':>3} {'':>8} {'':>11} {'ms':>6} {'ms':>6} {'mean ms':>7} "
             f"{'wait ms':>7} {'ms/call':>7} {'ms/call':>7} {'%':>4} {'%':>4} {'%':>4} {'':>5}")
    print(head)
    print(units)
    print("-" * len(head))
    for cell, lo, hi in rows:
        system = "A DOUBLE (not Fabric)" if cell.part == "A" else "B chaincode alone"
        block = str(cell.block_ms) if cell.block_ms is not None else "-"
        endorse = f"{cell.phases['endorse']:.1f}" if "endorse" in cell.phases else "-"
        commit = f"{cell.phases['commit']:.1f}" if "commit" in cell.phases else "-"
        errors = f"  ({cell.errors} errors)" if cell.errors else ""
        print(f"{system:<21} {cell.call:<24} {block:>5} {cell.conc:>3} {cell.rate:>8.1f} {f'({lo:.0f}-{hi:.0f})':>11} "
              f"{cell.p50:>6.1f} {cell.p99:>6.1f} {endorse:>7} {commit:>7} {cell.server_cpu_ms:>7.2f} "
              f"{cell.client_cpu_ms:>7.2f} {cell.server_util:>4.0f} {cell.client_util:>4.0f} {cell.host_util:>4.0f} "
              f"{cell.n:>5}{errors}")


def find(rows: list[tuple[Cell, float, float]], part: str, call: str, conc: int, block: int | None = None
         ) -> Cell | None:
    for cell, _, _ in rows:
        if (cell.part, cell.call, cell.conc, cell.block_ms) == (part, call, conc, block):
            return cell
    return None


def explain(rows: list[tuple[Cell, float, float]], blocks: list[int], concs: list[int], default_block: int) -> None:
    low, high = min(concs), max(concs)
    cores = os.cpu_count() or 1
    print()
    print(f"What each row is, and what bounds it ({cores} shared cores = {cores * 100}% CPU; 'host' is the whole machine,")
    print("other tenants included, so host - srv - cli is what others took from this run):")
    print("A = the project's Gateway client (gRPC+TLS, real Fabric-CA identities) -> tests.fabric_double, a TEST DOUBLE")
    print("    of the peers: one Python process, the real chaincode in-process. NOT Fabric: no Go peer, no CCaaS hop,")
    print("    no Raft orderers; blocks are cut by a timer in the double; one in-memory ledger.")
    for block in blocks:
        one = find(rows, "A", "submit Check", low, block)
        if one:
            ph = one.phases
            print(f"  submit Check, block {block} ms, {low} in flight: p50 {one.p50:.1f} ms; mean {ph['total']:.1f} ms ="
                  f" endorse {ph['endorse']:.1f} + submit {ph['submit']:.1f} + commit wait {ph['commit']:.1f} ms: the"
                  f" commit wait is the block interval.")
    for block in blocks:
        many = find(rows, "A", "submit Check", high, block)
        if not many:
            continue
        ph = many.phases
        ceiling = high * 1000 / block  # every call waits one block, nothing else: in flight / block interval
        split = (f"mean {ph['total']:.0f} ms = endorse {ph['endorse']:.0f} + submit {ph['submit']:.0f} + commit wait"
                 f" {ph['commit']:.0f}")
        cpu = (f"the double {many.server_cpu_ms:.1f} ms + client {many.client_cpu_ms:.1f} ms CPU per check, machine"
               f" {many.host_util:.0f}% busy")
        head = f"  submit Check, block {block} ms, {high} in flight: {many.rate:.0f}/s, p50 {many.p50:.1f} ms, {split}"
        if ph["commit"] >= ph["total"] * 2 / 3:
            print(f"{head}: bound by block cutting (in flight / block interval = {ceiling:.0f}/s).")
        elif ph["commit"] <= ph["total"] / 3:
            print(f"{head}: bound by CPU, not the block -- calls queue to be endorsed and submitted; {cpu}.")
        else:
            print(f"{head}: both -- the block alone would allow {ceiling:.0f}/s, CPU queueing takes the rest; {cpu}.")
    ev1, ev = find(rows, "A", "evaluate CheckReadOnly", low), find(rows, "A", "evaluate CheckReadOnly", high)
    if ev1 and ev:
        print(f"  evaluate CheckReadOnly (no block): {ev1.rate:.0f}/s at {low} in flight, p50 {ev1.p50:.1f} ms ~ the double's"
              f" {ev1.server_cpu_ms:.2f} + the client's {ev1.client_cpu_ms:.2f} ms CPU in series; {ev.rate:.0f}/s at {high}"
              f" in flight (p50 {ev.p50:.1f} ms): bound by CPU -- the double's one Python event loop (signature and")
        print(f"    certificate checks + chaincode; {ev.server_util:.0f}% of a core) and the client ({ev.client_util:.0f}%),"
              f" with the machine {ev.host_util:.0f}% busy.")
    print("B = the real CCaaS chaincode process (python -m chaincode.server, gRPC + mutual TLS) driven by a peer-role")
    print("    harness in this process; no endorsement, ordering or commit.")
    cc1, cc = find(rows, "B", "chaincode Check", low), find(rows, "B", "chaincode Check", high)
    ro = find(rows, "B", "chaincode CheckReadOnly", high)
    if cc1 and cc and ro:
        print(f"  Check: {cc1.rate:.0f}/s at {low} in flight (p50 {cc1.p50:.1f} ms), {cc.rate:.0f}/s at {high}; CheckReadOnly"
              f" {ro.rate:.0f}/s at {high}. Per call the chaincode sends {cc.extra.get('trips', 0):.0f} requests to the peer")
        print(f"    on its one stream (+ TRANSACTION in, COMPLETED out) and uses {cc.server_cpu_ms:.2f} ms CPU; the harness"
              f" {cc.client_cpu_ms:.2f} ms. Bound by CPU: two Python event loops ({cc.server_util:.0f}% + {cc.client_util:.0f}%"
              f" of a core) on a machine {cc.host_util:.0f}% busy.")
    if ev and cc:
        print(f"  The chaincode process alone spends {cc.server_cpu_ms:.2f} ms CPU per check, more than the double's"
              f" {ev.server_cpu_ms:.2f} ms for a whole evaluate: on real peers every endorsement and evaluate runs")
        print("    through this Python process. Real Fabric adds (not measured: no binaries) the Go peer's proposal checks and endorsement")
        print(f"    signature, Raft ordering with its batch timeout (the spec's {default_block} ms), and block validation")
        print("    and commit (signature checks, MVCC, LevelDB, history DB).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.governance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds per cell before measuring")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="calls in flight")
    parser.add_argument("--block-ms", type=int, nargs="+", default=[20, 100, 500],
                        help="block cutting intervals of the double to submit under")
    parser.add_argument("--parts", nargs="+", choices=["double", "chaincode"], default=["double", "chaincode"])
    parser.add_argument("--home", type=Path, help="an existing home prepared by `twinledger up` (default: a "
                        "temporary one, brought up and down by the bench)")
    args = parser.parse_args(argv)

    if "double" in args.parts and fabric_available() is None:
        print("bench.governance: the Fabric binaries are installed, so `twinledger up` starts real peers on the "
              "ports the double would serve; run with --parts chaincode, or benchmark the real network instead",
              file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="tl-bench-gov-"))
    home = args.home.resolve() if args.home else work / "net"
    own_home = args.home is None
    print(f"governance bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; runs={args.runs} "
          f"duration={args.duration}s warmup={args.warmup}s in-flight={args.concurrency} block_ms={args.block_ms}",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    runs: list[list[Cell]] = []
    try:
        if "double" in args.parts and own_home:
            prepare_home(home)  # real Fabric CAs and identities; stops at the missing peer binaries
        pki = make_pki(work / "pki") if "chaincode" in args.parts else None
        default_block = load_spec(home / "spec.yaml").batch.timeout_ms if "double" in args.parts else 100
        for run in range(1, args.runs + 1):
            cells: list[Cell] = []
            if "double" in args.parts:
                for index, block in enumerate(args.block_ms):
                    cells += run_double(home, block, index == 0, args, run)
            if pki is not None:
                cells += run_chaincode(work, pki, args, run)
            runs.append(cells)
    finally:
        if "double" in args.parts and own_home and (home / "spec.yaml").exists():
            down_home(home)
        shutil.rmtree(work, ignore_errors=True)

    rows = median_cells(runs)
    print(f"\nAccess checks: medians of {args.runs} run(s), {args.duration} s measured per cell "
          f"({time.monotonic() - started:.0f} s in all; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after)\n")
    print_table(rows)
    print("\ncolumns: block = the double's block cutting interval; in fl. = calls in flight (closed loop); endorse /"
          " commit wait = mean ms of the endorse call and of the wait for the commit status after submit; srv = the"
          " serving process (A: the double, B: the chaincode server); cli = this process (A: the Gateway client, B:"
          " the peer-role harness); host = the whole machine; CPU from /proc over the measured window, % of one"
          " core; n = calls measured per run.")
    explain(rows, args.block_ms, args.concurrency, default_block)

    high = max(args.concurrency)
    block = default_block if default_block in args.block_ms else args.block_ms[0]
    figures: dict[str, str] = {}
    for prefix, cell in [
        ("submit", find(rows, "A", "submit Check", high, block)),
        ("eval", find(rows, "A", "evaluate CheckReadOnly", high)),
        ("cc_check", find(rows, "B", "chaincode Check", high)),
        ("cc_readonly", find(rows, "B", "chaincode CheckReadOnly", high)),
    ]:
        if cell is not None:
            figures[f"{prefix}_per_s"] = f"{cell.rate:.1f}"
            figures[f"{prefix}_p50_ms"] = f"{cell.p50:.1f}"
            figures[f"{prefix}_p99_ms"] = f"{cell.p99:.1f}"
    for b in args.block_ms:
        cell = find(rows, "A", "submit Check", min(args.concurrency), b)
        if cell is not None and "double" in args.parts:
            figures[f"submit_c{cell.conc}_b{b}_p50_ms"] = f"{cell.p50:.1f}"
    figures.update(in_flight=str(high), block_ms=str(block), runs=str(args.runs))
    print()
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
