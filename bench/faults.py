"""Faults under load on the real Fabric network: kill -9 a node while recorded checks run, count what survived.

Each scenario runs the same closed loop as ``bench.ledger`` (``submit data:Check``: endorsed, ordered by
Raft, validated, committed; the client waits for the commit status) with N checks in flight, and
kill -9s one supervised process part-way through; the supervisor restarts it. Then:

* acknowledged: every check whose commit status came back VALID. Each must be VALID on *every* peer
  afterwards (qscc ``GetTransactionByID`` through each org's own Gateway), and the data set's audit trail
  must hold exactly one access record per acknowledged check -- ``lost`` counts the ones that are not;
* failed: the checks the client was told did not commit, each with its reason (counted by reason);
* recovery: seconds from the kill to the first check *started after the kill* that committed (commits
  resumed end to end; the goal for the Raft leader is 3 s); also when a Raft leader was seen again;
* back: the killed process restarted (new pid, healthy) and, for a peer or orderer, at the height the
  others have.

Scenarios: ``orderer-leader`` (the orderer that is Raft leader), ``peer`` (plant1's peer: an endorser
of every check, the data owner's), ``chaincode`` (that peer's chaincode server), ``gateway-peer``
(plant2's peer, the one the checking client is connected to: its calls fail until it is back). A run
counts as survived when nothing acknowledged is lost, every failure has a reason, commits resumed and
the node rejoined. About 30 s per run. ``bridge`` and ``simulator`` kill the digital-twin path instead, under
a stream of readings (``bench.faults_twins``, ~40 s a run); in the one table ``unit`` says what before / after /
lost count, and recovery is the service resumed end to end for both. ``disk-full`` fills a peer's ledger disk
under the same check load and frees it after a hold (``bench.faults_disk``, on a network of its own whose
peer keeps its ledger on a tmpfs: needs root): recovery is then the checks committing on without that peer,
back the peer level with the others after space returned.

    .venv/bin/python -m bench.faults                       # every scenario, 3 runs each, temporary network
    .venv/bin/python -m bench.faults --scenario orderer-leader --runs 1 --home DIR
    .venv/bin/python -m bench.faults --scenario bridge --scenario simulator --runs 3
    .venv/bin/python -m bench.faults --scenario disk-full --runs 2

The last line is ``key=value``: ``faults=N survived=N lost=N`` plus the median leader-kill recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import faults_disk, faults_twins  # noqa: E402
from bench.faults_checks import (  # noqa: E402
    CHECKER, OWNER, FaultBenchError, Outcome, Tx, load, median, now, prepare, processes, rel, verify,
    wait_caught_up,
)
from bench.network import bench_network  # noqa: E402
from network.configtx import ETCDRAFT_OPTIONS  # noqa: E402
from network.layout import Layout  # noqa: E402
from network.processes.control import wait_healthy  # noqa: E402
from network.processes.health import scrape  # noqa: E402
from network.spec import Spec  # noqa: E402
from orchestrator.bringup import CHAINCODE_NAME  # noqa: E402
from orchestrator.readiness import wait_converged, wait_ordering  # noqa: E402

SCENARIOS = ("orderer-leader", "peer", "chaincode", "gateway-peer") + faults_twins.SCENARIOS + ("disk-full",)
POLL_S = 0.05


# --- what the nodes said -------------------------------------------------------------------------------------
class Watcher:
    """Polls every orderer's ``consensus_etcdraft_is_leader`` and every peer's height in a thread."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.orderers = spec.nodes_of(spec.orderer_org.name, "orderer")
        self.peers = [n for o in spec.member_orgs for n in spec.nodes_of(o.name, "peer")]
        self.label = f'channel="{spec.channel}"'
        self.samples: list[tuple[float, str | None, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def leader(self) -> str | None:
        leaders = [n.name for n in self.orderers
                   if (scrape(n.ports.operations, "consensus_etcdraft_is_leader", 0.5) or {}).get(self.label) == 1]
        return leaders[0] if len(leaders) == 1 else None

    def heights(self) -> dict[str, int]:
        out = {}
        for n in self.peers:
            sample = scrape(n.ports.operations, "ledger_blockchain_height", 0.5) or {}
            if self.label in sample:
                out[n.name] = int(sample[self.label])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((now(), self.leader(), self.heights()))
            self._stop.wait(POLL_S)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def leader_back(self, after: float, old: str) -> float | None:
        """When a leader other than ``old``, or ``old`` again, was first seen after ``after``."""
        for t, leader, _ in self.samples:
            if t > after and leader is not None:
                return t
        return None

    def first_block_after(self, after: float) -> float | None:
        """When any peer's height first grew past what every peer had at ``after``."""
        base = max((h for t, _, hs in self.samples if t <= after for h in hs.values()), default=0)
        for t, _, hs in self.samples:
            if t > after and any(h > base for h in hs.values()):
                return t
        return None


def kill9(home: Path, name: str) -> int:
    pid = processes(home)[name]["pid"]
    if not pid:
        raise FaultBenchError(f"{name} is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(home: Path, name: str, old_pid: int, timeout: float = 60.0) -> float:
    deadline = now() + timeout
    while now() < deadline:
        p = processes(home).get(name, {})
        if p.get("pid") not in (None, old_pid) and p.get("healthy"):
            return now()
        time.sleep(0.1)
    raise FaultBenchError(f"the supervisor did not bring {name} back within {timeout:.0f} s")


def victim_of(scenario: str, spec: Spec, watcher: Watcher) -> str:
    if scenario == "orderer-leader":
        leader = watcher.leader()
        if leader is None:
            raise FaultBenchError("no Raft leader to kill")
        return leader
    if scenario == "gateway-peer":  # the peer the checking client is connected to
        return spec.nodes_of(CHECKER[0], "peer")[0].name
    # An endorser of the checks: the data owner's peer and its chaincode server.
    peer = spec.nodes_of(OWNER[0], "peer")[0]
    if scenario == "peer":
        return peer.name
    return f"{CHAINCODE_NAME}.{peer.name}"  # the supervisor's name for that peer's chaincode server


async def run_scenario(spec: Spec, layout: Layout, home: Path, scenario: str, conc: int, duration: float,
                       kill_at: float, say=print) -> Outcome:
    dataset = await prepare(spec, layout)
    txs: list[Tx] = []
    started = asyncio.Event()
    with Watcher(spec) as watcher:
        victim = victim_of(scenario, spec, watcher)
        task = asyncio.create_task(load(spec, layout, dataset, conc, duration, txs, started.set))
        await started.wait()
        await asyncio.sleep(kill_at)
        if scenario == "orderer-leader":
            victim = watcher.leader() or victim
        old_pid = kill9(home, victim)
        t_kill = now()
        say(f"  kill -9 {victim} (pid {old_pid}) at {kill_at:.0f} s, {conc} checks in flight")
        back = await asyncio.to_thread(wait_restarted, home, victim, old_pid)
        rejoined: float | None = back
        if victim in {n.name for n in spec.nodes()}:  # a peer or orderer: back at the others' height
            rejoined = await asyncio.to_thread(wait_caught_up, spec, victim, 30.0)
        await task
    outcome = Outcome(scenario, victim, conc, duration, kill_at, txs, t_kill,
                      rel(watcher.leader_back(t_kill, victim), t_kill) if scenario == "orderer-leader" else None,
                      rel(watcher.first_block_after(t_kill), t_kill),
                      rel(min((t.done for t in txs if t.valid and t.started > t_kill), default=None), t_kill),
                      back - t_kill, rel(rejoined, t_kill))
    await verify(spec, layout, dataset, outcome)
    return outcome


def summary(runs: list[Outcome]) -> dict:
    """The table's row for one transaction scenario (``faults_twins.summary`` makes the readings rows)."""
    failures: collections.Counter[str] = collections.Counter()
    for o in runs:
        failures.update(o.failures)
    recovery = [o.first_commit_after for o in runs if o.first_commit_after is not None]
    return {"fault": {"orderer-leader": "Raft leader", "peer": "endorsing peer", "chaincode": "chaincode server",
                      "gateway-peer": "client's gateway peer", "disk-full": "peer ledger disk full"}[runs[0].scenario],
            "unit": "tx", "load": f"{runs[0].conc} checks, {runs[0].duration:.0f} s",
            "before": statistics.median(o.before_after()[0] for o in runs),
            "after": statistics.median(o.before_after()[1] for o in runs),
            "lost": sum(len(o.lost) for o in runs), "dup": None, "leader": median([o.leader_after for o in runs]),
            "recovery": median(recovery), "max": max(recovery, default=None),
            "back": median([o.rejoined_after for o in runs]),
            "notes": "failed: " + (", ".join(f"{k} x{v}" for k, v in failures.items()) or "-")
                     + disk_notes(runs)}


def disk_notes(runs: list[Outcome]) -> str:
    disk = [o for o in runs if isinstance(o, faults_disk.DiskOutcome)]
    if not disk:
        return ""
    return (f"; reported {median([o.reported_after for o in disk]):.1f} s after the fill, "
            f"{sum(o.restarts_while_full for o in disk)} restarts while full, held full "
            f"{median([o.freed_after for o in disk]):.0f} s")


def print_table(outcomes: list) -> None:
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    head = (f"{'fault':<22} {'runs':>4} {'unit':<8} {'load':>15} {'before':>6} {'after':>6} {'lost':>4} "
            f"{'dup':>3} {'leader s':>8} {'recovery s':>10} {'max s':>6} {'back s':>6}  notes")
    print(head)
    print("-" * len(head))
    for scenario in dict.fromkeys(o.scenario for o in outcomes):
        runs = [o for o in outcomes if o.scenario == scenario]
        r = faults_twins.summary(runs) if scenario in faults_twins.SCENARIOS else summary(runs)
        print(f"{r['fault']:<22} {len(runs):>4} {r['unit']:<8} {r['load']:>15} {r['before']:>6.0f} {r['after']:>6.0f} "
              f"{r['lost']:>4} {f(r['dup'], 0):>3} {f(r['leader']):>8} {f(r['recovery']):>10} {f(r['max']):>6} "
              f"{f(r['back']):>6}  {r['notes']}")
    print("before / after the kill (median of runs): tx acknowledged VALID, readings published (simulator history); "
          "lost (all runs): tx not VALID on every peer or not in the audit trail, readings not in the bridge's store; "
          "dup: readings sealed twice or never published; leader: a Raft leader again; recovery: a check started after "
          "the kill committed, or a reading published after it reached its twin (status, +0.5 s); back: the node "
          "restarted and level with the others, or the twins process ready again (restarted by the bench). Disk full: the "
          "kill is the fill, back counts from the space freed.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="default: all")
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--conc", type=int, default=16, help="recorded checks in flight")
    parser.add_argument("--machine-rate", type=float, default=10.0,
                        help="twins scenarios: products/s per simulated machine (14 readings each)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--kill-at", type=float, default=6.0, help="seconds into the load")
    parser.add_argument("--home", type=Path, help="a running network (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.conc < 1 or args.machine_rate <= 0 or not 0 < args.kill_at < args.duration:
        parser.error("--runs, --conc and --machine-rate must be positive and --kill-at inside --duration")
    scenarios = args.scenario or list(SCENARIOS)
    if "disk-full" in scenarios and args.home:
        parser.error("disk-full brings up a network of its own (a peer's ledger on a tmpfs): run it without --home")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = now()
    outcomes: list = []
    twins = None
    on_shared = [s for s in scenarios if s != "disk-full"]
    with bench_network(args.home, say=say) if on_shared else contextlib.nullcontext() as net:
        try:
            for scenario in on_shared:
                for _ in range(args.runs):
                    if scenario in faults_twins.SCENARIOS:
                        twins = twins or faults_twins.TwinsFaults(net.home, say)
                        o = twins.run(scenario, args.machine_rate, args.duration, args.kill_at)
                    else:
                        o = asyncio.run(run_scenario(net.spec, net.layout, net.home, scenario, args.conc,
                                                     args.duration, args.kill_at, say))
                    say(o.describe())
                    for problem in o.problems():
                        say(f"  NOT SURVIVED: {problem}")
                    outcomes.append(o)
                    # The next run starts from a whole network: every process healthy, a leader, peers level.
                    await_ready(net.spec, net.layout, net.home)
        finally:
            if twins:
                twins.close(keep=any(o.problems() for o in outcomes) or len(outcomes) < len(on_shared) * args.runs)
    if "disk-full" in scenarios:
        outcomes += disk_full_runs(args.runs, args.conc, say)
    print(f"Fabric v3.1.5 on this machine ({os.cpu_count()} cores), Raft {ETCDRAFT_OPTIONS['TickInterval']} tick x "
          f"{ETCDRAFT_OPTIONS['ElectionTick']}; kill -9 at {args.kill_at:.0f} s of {args.duration:.0f} s of load; tx: "
          f"{args.conc} recorded checks in flight, the supervisor restarts the node; {faults_twins.setup(args.machine_rate)}")
    print_table(outcomes)
    print(f"(whole bench {now() - t0:.0f} s)")
    tx = [o for o in outcomes if isinstance(o, Outcome)]
    rd = [o for o in outcomes if isinstance(o, faults_twins.TwinsOutcome)]
    leader = [o.first_commit_after for o in tx if o.scenario == "orderer-leader"]
    survived = sum(1 for o in outcomes if not o.problems())
    tail = (f" leader_kill_recovery_s_median={median(leader):.2f} leader_kill_recovery_s_max="
            f"{max(r for r in leader if r is not None):.2f}") if median(leader) is not None else ""
    tail += faults_twins.tail(rd)
    acked = f" acknowledged={sum(len(o.acknowledged) for o in tx)}" if tx else ""
    print(f"faults={len(outcomes)} survived={survived} lost={sum(len(o.lost) for o in tx) + sum(o.lost for o in rd)}"
          f"{acked}{tail}")
    return 0 if survived == len(outcomes) else 1


def disk_full_runs(runs: int, conc: int, say) -> list[Outcome]:
    """The disk-full scenario on a network of its own, whose victim's ledger is on a small tmpfs."""
    out: list[Outcome] = []
    try:
        with bench_network(say=say, around=faults_disk.on_small_disk) as net:
            for _ in range(runs):
                o = asyncio.run(faults_disk.run_disk_full(net.spec, net.layout, net.home, conc, say=say))
                say(o.describe())
                for problem in o.problems():
                    say(f"  NOT SURVIVED: {problem}")
                out.append(o)
                await_ready(net.spec, net.layout, net.home)
    except faults_disk.CannotMount as exc:
        say(f"  disk-full NOT RUN: {exc}")
    return out


def await_ready(spec: Spec, layout: Layout, home: Path, timeout: float = 90.0) -> None:
    wait_healthy(home, list(processes(home)), timeout)
    wait_ordering(spec, timeout)
    wait_converged(spec, layout, CHAINCODE_NAME, timeout)


if __name__ == "__main__":
    sys.exit(main())

