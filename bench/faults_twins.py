"""Readings under faults: kill -9 the OPC-UA bridge or the simulator mid-stream, count what reached the twins.

One run, on the bench's real Fabric network (``bench.network``), set up as `twinledger twins run` does it: OPC-UA
SignAndEncrypt with application certificates from plant1's Fabric CA and a trust list of the asset orgs' CAs
(``twins.security.prepare_pki``), a simulator process (2 plant1 machines, 1 hospital1 monitor) publishing at a
stated rate, and a bridge process anchoring every org's batches on the ledger as that org's operator
(``orchestrator.twins_state.ledger_config``). Part-way, SIGKILL of the victim (the bridge, or the simulator); the
bench restarts it at once with the same command line (the part a supervisor plays). The load's clock (duration,
kill-at) starts once the first batch is anchored. Then:

* published: every sample in the simulator's own ``history.sqlite`` (it commits each there before publishing
  it), split at the kill (before / after by source time);
* lost: published but not in the bridge's store with the same value; duplicated: Merkle leaves sealed in batches
  beyond the distinct readings stored, plus stored readings the simulator never published;
* batches: every sealed batch verified as a whole against its anchor on the ledger (``verify_all_batches``),
  verified / failed; one never anchored fails;
* recovery: seconds from the kill to the first reading published *after* the kill reaching the twin (the
  bridge's status file, rewritten every anchoring interval: a bound of +interval); back: the victim ready again.

Production is paused (SIGUSR1: the simulator keeps serving) and the bridge given time to catch up before it is
stopped (SIGTERM: it seals what is pending) and the store read. Survived: 0 lost, 0 duplicated, every batch
verifies, readings flowing again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from network.files import write_private
from orchestrator.twins_state import ledger_config
from tests.ports import free_port_base  # the same free-range finder bench.network uses
from twins.anchoring import ReadingStore, verify_store_on_ledger
from twins.procs import Proc, bridge_argv, simulator_argv
from twins.security import prepare_pki
from twins.simulators import machine, patient
from twins.simulators.history import read_published

SCENARIOS = ("bridge", "simulator")
MACHINES, MONITORS, ORGS = ["plant1:2"], ["hospital1:1"], ["hospital1", "plant1"]
MONITOR_RATE = 1.0  # chart hours per second per monitor
INTERVAL = 0.5      # anchoring interval (s): also how often the bridge rewrites its status
READY_S = 120.0     # a simulator start builds asyncua's address space in Python: up to ~70 s seen on a loaded box
CATCH_UP_S = 90.0


def now() -> float:
    return time.monotonic()


def offered_rate(machine_rate: float) -> float:
    """Readings per second the simulator is asked for: 14 values per machine product, 9 per monitor chart hour."""
    machines = sum(int(m.partition(":")[2]) for m in MACHINES)
    monitors = sum(int(m.partition(":")[2]) for m in MONITORS)
    return machines * len(machine.PROPS) * machine_rate + monitors * len(patient.PROPS) * MONITOR_RATE


@dataclass
class TwinsOutcome:
    scenario: str
    victim: str
    rate: float          # readings/s published before the kill (the stream's rate)
    duration: float
    kill_at: float
    before: int = 0      # published before the kill
    after: int = 0       # published after it
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    batches: int = 0
    verified: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    recovery: float | None = None  # s after the kill: a reading published after the kill in the twin
    back: float | None = None      # s after the kill: the restarted victim ready
    seq_holes: int = 0             # the simulator's own sequences not 1..n (its restart must continue them)
    bridge: dict = field(default_factory=dict)  # the bridge's own counters (replayed, duplicates dropped, lost)

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} published readings not in the store")
        if self.duplicated:
            out.append(f"{self.duplicated} readings duplicated")
        if self.failed or self.verified != self.batches or not self.batches:
            out.append(f"{len(self.failed)} of {self.batches} batches do not verify: {next(iter(self.failed.values()), '')}")
        if self.recovery is None:
            out.append("no reading published after the kill reached the twin")
        if self.seq_holes:
            out.append(f"{self.seq_holes} variables' published sequences have holes")
        return out

    def describe(self) -> str:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        b = self.bridge
        return (f"  {self.scenario} victim={self.victim} rate={self.rate:.0f}/s published={self.before}+{self.after} "
                f"stored={self.stored} lost={self.lost} dup={self.duplicated} batches={self.verified}/{self.batches} "
                f"recovery+{f(self.recovery)} back+{f(self.back)} replayed={b.get('replayed')} "
                f"dropped_dups={b.get('duplicates')} bridge_lost={b.get('lost')}")


def summary(runs: list[TwinsOutcome]) -> dict:
    """The table's row for one scenario (the columns bench.faults prints for both kinds)."""
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    recovery = [o.recovery for o in runs if o.recovery is not None]
    return {"fault": {"bridge": "OPC-UA bridge", "simulator": "OPC-UA simulator"}[runs[0].scenario],
            "unit": "readings", "load": f"{med([o.rate for o in runs]):.0f}/s, {runs[0].duration:.0f} s",
            "before": med([o.before for o in runs]), "after": med([o.after for o in runs]),
            "lost": sum(o.lost for o in runs), "dup": sum(o.duplicated for o in runs), "leader": None,
            "recovery": med(recovery), "max": max(recovery, default=None),
            "back": med([o.back for o in runs if o.back is not None]),
            "notes": f"stored {sum(o.stored for o in runs)}, batches verified {sum(o.verified for o in runs)} "
                     f"failed {sum(o.batches - o.verified for o in runs)}"}


def setup(machine_rate: float) -> str:
    return (f"readings: an OPC-UA simulator (SignAndEncrypt, ~{offered_rate(machine_rate):.0f}/s offered), the bridge "
            f"anchoring every {INTERVAL:g} s, the bench restarts the killed one at once")


def tail(runs: list[TwinsOutcome]) -> str:
    """The readings' part of the bench's last line."""
    return (f" readings={sum(o.before + o.after for o in runs)} duplicated={sum(o.duplicated for o in runs)} "
            f"batches_verified={sum(o.verified for o in runs)} batches_failed={sum(o.batches - o.verified for o in runs)}"
            ) if runs else ""


class TwinsFaults:
    """Certificates and the ledger config, made once for all runs (as `twins run` makes them once per home)."""

    def __init__(self, home: Path, say=print) -> None:
        self.home, self.say = home, say
        self.work = Path(tempfile.mkdtemp(prefix="tl-bench-twins-"))
        self.pki = prepare_pki(home, "plant1", ORGS, self.work / "pki")
        self.config = ledger_config(home, ORGS)
        self.ledger = self.work / "ledger.json"
        write_private(self.ledger, json.dumps(self.config))
        self.runs = 0

    def close(self, keep: bool = False) -> None:
        if keep:
            self.say(f"  twins runs kept in {self.work} (logs, stores, histories)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def run(self, scenario: str, machine_rate: float, duration: float, kill_at: float) -> TwinsOutcome:
        self.runs += 1
        work = self.work / f"{scenario}-{self.runs}"
        sim_dir, home, mapping = work / "sim", work / "bridge", work / "mapping.yaml"
        pki = self.pki
        sim_argv = simulator_argv(port=free_port_base(1), data_dir=sim_dir, machines=MACHINES, monitors=MONITORS,
                                  machine_rate=machine_rate, monitor_rate=MONITOR_RATE, mapping_out=mapping,
                                  cert=pki.server.cert, key=pki.server.key, trust=[pki.trust])
        br_argv = bridge_argv(mapping=mapping, home=home, ledger_config=self.ledger, interval=INTERVAL,
                              start_from="history", cert=pki.bridge.cert, key=pki.bridge.key, trust=[pki.trust])
        starts = {"simulator": 0, "bridge": 0}
        procs: dict[str, Proc] = {}

        def start(name: str) -> Proc:
            starts[name] += 1
            p = Proc(sim_argv if name == "simulator" else br_argv, log=work / f"{name}-{starts[name]}.log")
            procs[name] = p
            p.wait_ready(READY_S)
            return p

        work.mkdir(parents=True)
        status = home / "status.json"
        try:
            start("simulator")
            start("bridge")
            wait_for(lambda: read_status(status).get("counters", {}).get("anchored", 0) >= 1, READY_S, "the first anchor")
            t_load = now()
            time.sleep(kill_at)
            victim = f"{scenario} (pid {procs[scenario].pid})"
            procs[scenario].kill()  # SIGKILL
            t_kill, t_kill_us = now(), time.time_ns() // 1000
            # a reading is new when the simulator published it after the kill: past every seq it had by then
            at_kill = {k: max(v) for k, v in read_published(sim_dir / "history.sqlite").items()}
            watch = FirstNewReading(status, at_kill)
            start(scenario)  # at once, same command line: what a supervisor does
            back = now() - t_kill
            self.say(f"  kill -9 {scenario} at {kill_at:.0f} s; ready again after {back:.1f} s")
            # not within the bound: the run is recorded as not survived (recovery None), the bench goes on
            wait_for(lambda: watch.seen_at is not None, CATCH_UP_S, "a new reading in the twin", fail=False)
            time.sleep(max(0.0, t_load + duration - now()))
            procs["simulator"].signal(signal.SIGUSR1)  # production paused, still serving: the bridge catches up
            time.sleep(0.3)
            published = read_published(sim_dir / "history.sqlite")
            wait_for(lambda: caught_up(read_status(status), published), CATCH_UP_S, "the bridge to catch up", fail=False)
            watch.stop()
            procs["bridge"].stop()  # SIGTERM: seals what is pending, drains the anchorer
            procs["simulator"].stop()
        finally:
            for p in procs.values():
                p.stop(timeout=5)
        outcome = TwinsOutcome(scenario, victim, 0.0, duration, kill_at, back=back,
                               recovery=None if watch.seen_at is None else watch.seen_at - t_kill_us / 1e6)
        count(outcome, published, home / "readings.sqlite", t_kill_us)
        # the stream's rate: what was published before the kill, over the time it took (from the first sample)
        first_us = min(ts for v in published.values() for ts, _ in v.values())
        outcome.rate = outcome.before / max(1e-6, (t_kill_us - first_us) / 1e6)
        outcome.bridge = read_status(status).get("bridge", {})
        outcome.verified, outcome.failed = asyncio.run(verify(self.config, home / "readings.sqlite"))
        return outcome


def count(o: TwinsOutcome, published: dict, store_path: Path, t_kill_us: int) -> None:
    store = ReadingStore(store_path)
    try:
        stored: dict[tuple[str, str, int], float] = {(r.asset, r.prop, r.seq): r.value for r in store.iter_readings()}
        o.stored, o.batches = len(stored), store.count("batches")
        leaves = sum(store.batch(b).count for b in store.batch_ids())  # type: ignore[union-attr]
    finally:
        store.close()
    pub = {(a, p, s): v for (a, p), samples in published.items() for s, (_, v) in samples.items()}
    o.before = sum(1 for samples in published.values() for ts, _ in samples.values() if ts <= t_kill_us)
    o.after = len(pub) - o.before
    o.lost = sum(1 for k, v in pub.items() if stored.get(k) != v)
    o.duplicated = (leaves - len(stored)) + sum(1 for k in stored if k not in pub)
    o.seq_holes = sum(1 for samples in published.values() if sorted(samples) != list(range(1, len(samples) + 1)))


async def verify(config: dict, store_path: Path) -> tuple[int, dict[str, str]]:
    """Every sealed batch against the ledger, through each org's operator (as `twinledger verify reading`)."""
    store = ReadingStore(store_path)
    try:
        return await verify_store_on_ledger(store, config)
    finally:
        store.close()


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def caught_up(status: dict, published: dict) -> bool:
    twins = status.get("twins", {})
    return all(twins.get(a, {}).get("last_seq", {}).get(p) == max(s) for (a, p), s in published.items())


def wait_for(pred, timeout: float, what: str, fail: bool = True) -> bool:
    deadline = now() + timeout
    while now() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    if fail:
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


class FirstNewReading:
    """Polls the bridge's status file from the kill on; ``seen_at``: the status time (epoch s) of the first one in
    which a twin holds a reading past ``at_kill`` (the status is rewritten every interval, from the twins' memory)."""

    def __init__(self, status: Path, at_kill: dict[tuple[str, str], int]) -> None:
        self.status, self.at_kill = status, at_kill
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.seen_at is None:
            st = read_status(self.status)
            twins = st.get("twins", {})
            if any(twins.get(a, {}).get("last_seq", {}).get(p, 0) > seq for (a, p), seq in self.at_kill.items()):
                self.seen_at = float(st["time"])
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
