"""A peer's ledger disk fills up under load: a clear error, the network goes on, recovery when space returns.

The scenario is bench/faults_disk.py's (one code path for the figures and the test), on a network of its
own (the session network's peers must not share this fate): hospital2's peer keeps its ledger on a 32 MiB
tmpfs mounted before `twinledger up`; with recorded checks in flight the file system is filled to 64 KiB.
On the real peer this test sees:

* the peer panics on its next block (Fabric's own ``no space left on device``); the supervisor does not
  crash-loop it but waits for space, and ``twinledger status`` says so in one line naming the path;
* the checks keep committing through the other peers (MAJORITY of 4 orgs is 3);
* once the space is freed the supervisor restarts the peer by itself at once, its ledger recovers from
  its last complete block, it catches up from the orderers, and every check acknowledged before, during
  and after the outage is VALID on every peer and recorded once -- nothing lost, nothing half-applied.

Mounting a tmpfs needs CAP_SYS_ADMIN (the test machine and CI run as root); without it the test says so.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.faults_disk import CannotMount, DiskOutcome, on_small_disk, run_disk_full
from bench.network import bench_network

IN_FLIGHT = 4
HOLD_S = 4.0
#: The supervisor looks at the full disk's free space every tick (0.25 s); the peer then starts in ~1 s.
BACK_BOUND_S = 10.0


def test_peer_disk_full_is_reported_then_recovers_with_nothing_lost() -> None:
    try:
        with bench_network(around=on_small_disk) as net:
            outcome: DiskOutcome = asyncio.run(asyncio.wait_for(
                run_disk_full(net.spec, net.layout, net.home, IN_FLIGHT, hold=HOLD_S), timeout=300))
            data = net.layout.node_data(outcome.victim)
    except CannotMount as exc:
        pytest.skip(str(exc))
    print(outcome.describe())

    before, after = outcome.before_after()
    assert before > 0 and after > 0, f"checks must commit before ({before}) and after ({after}) the disk filled"
    assert outcome.problems() == []
    # One line, naming the full file system's path and what happens next.
    assert outcome.status_line.startswith(f"{outcome.victim}: disk full at {data}")
    assert "restarts by itself" in outcome.status_line
    assert outcome.restarts_while_full == 0
    assert outcome.restarted_after is not None and outcome.restarted_after < BACK_BOUND_S, (
        f"{outcome.victim} back {outcome.restarted_after} s after space returned")
    assert outcome.rejoined_after is not None, f"{outcome.victim} did not catch up"
