"""Faults under load on the session's real network: kill -9 the Raft leader, an endorsing peer or its chaincode
server while recorded checks run.

The scenario is bench/faults.py's (one code path for the figures and the test): plant2's client keeps
``IN_FLIGHT`` recorded checks (``submit data:Check``) in flight for ``LOAD_S`` seconds against a data set
of its own; ``KILL_AT_S`` seconds in, the orderer that is Raft leader gets SIGKILL and the supervisor
restarts it. Afterwards every check the client saw committed must be VALID on every peer (qscc
GetTransactionByID through each org's own peer) and recorded exactly once in the audit trail, every
other check must have failed with a reason, commits must have resumed, and the killed orderer must be
back at the others' height. The run is bounded (load, restart and catch-up each have a deadline) and
leaves the network whole for the tests after it.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fabric_protos.peer.transaction_pb2 import VALID, ProcessedTransaction

from bench.faults import Outcome, run_scenario
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import block_height, wait_height

IN_FLIGHT = 12
LOAD_S = 14.0
KILL_AT_S = 4.0
#: The goal is 3 s (issue 13; bench.faults measures medians of 2.2-2.7 s on a busy 2-core machine). The
#: shared CI machine can lose a vote to a stale cluster stream and need a second election round, so the
#: test asserts a looser bound; the figures it prints show the real value.
RESUME_BOUND_S = 8.0


def test_raft_leader_killed_under_load_loses_nothing(fabric_net: FabricNet) -> None:
    net = fabric_net
    restarts_before = {name: p["restarts"] for name, p in net.processes().items()}
    t0 = time.monotonic()
    try:
        outcome: Outcome = asyncio.run(asyncio.wait_for(
            run_scenario(net.spec, net.layout, net.home, "orderer-leader", IN_FLIGHT, LOAD_S, KILL_AT_S,
                         say=print),
            timeout=150))
    finally:
        net.wait_ready()  # later tests find the network whole, whatever happened here
    print(outcome.describe(), f"(test {time.monotonic() - t0:.0f} s)")

    assert net.node(outcome.victim).type == "orderer"
    assert net.processes()[outcome.victim]["restarts"] == restarts_before[outcome.victim] + 1
    before, after = outcome.before_after()
    assert before > 0 and after > 0, f"checks must commit both before ({before}) and after ({after}) the kill"
    # Nothing the client was told is committed went missing, and nothing was recorded twice.
    assert outcome.lost == []
    assert outcome.audit_records == len(outcome.acknowledged)
    # Every check that did not commit says why.
    unexplained = [t.tx_id for t in outcome.txs if t.done and not t.valid and not t.reason]
    assert unexplained == []
    assert outcome.leader_after is not None, "no Raft leader after the kill"
    assert outcome.first_commit_after is not None and outcome.first_commit_after <= RESUME_BOUND_S, (
        f"commits resumed {outcome.first_commit_after} s after the kill (bound {RESUME_BOUND_S} s)")
    assert outcome.rejoined_after is not None, f"{outcome.victim} did not catch up with the other orderers"
    assert outcome.problems() == []


@pytest.mark.parametrize("scenario", ["peer", "chaincode"])
def test_endorser_or_its_chaincode_killed_under_load_loses_nothing(fabric_net: FabricNet, scenario: str) -> None:
    """kill -9 the data owner's peer (an endorser of every check) or its chaincode server while checks run:
    the supervisor restarts it, nothing acknowledged is lost or recorded twice (no half-applied check: each
    is VALID on every peer and in the audit trail once, or failed with a reason), commits go on, and a
    restarted peer is level with the others again."""
    net = fabric_net
    restarts_before = {name: p["restarts"] for name, p in net.processes().items()}
    try:
        outcome: Outcome = asyncio.run(asyncio.wait_for(
            run_scenario(net.spec, net.layout, net.home, scenario, IN_FLIGHT, LOAD_S, KILL_AT_S, say=print),
            timeout=150))
    finally:
        net.wait_ready()
    print(outcome.describe())
    victim = net.processes()[outcome.victim]
    assert victim["type"] == ("peer" if scenario == "peer" else "chaincode")
    assert victim["restarts"] == restarts_before[outcome.victim] + 1
    before, after = outcome.before_after()
    assert before > 0 and after > 0, f"checks must commit both before ({before}) and after ({after}) the kill"
    assert outcome.lost == [] and outcome.audit_records == len(outcome.acknowledged)
    assert outcome.problems() == []


def test_the_same_envelope_sent_again_commits_once(fabric_net: FabricNet) -> None:
    """What the client's resend relies on, on the real peers: copies of one signed envelope -- in the same
    block or a later one -- commit once; the commit status is the first copy's (VALID), the others are
    DUPLICATE_TXID and change nothing."""
    net, ds = fabric_net, fabric_net.unique("resend")

    async def body() -> None:
        async with net.connect("plant1", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            await data.submit("RegisterDataset", ds, "tabular", "{}", "ab" * 32, "internal")
            transaction = await data.new_proposal("Grant", ds, "plant2", "train:resend", "").endorse()
            commit = await transaction.submit()
            await transaction.send(5.0)  # at once: likely the same block as the first copy
            assert (await commit.status()).successful
            await transaction.send(5.0)  # after the commit: a later block
            await wait_next_block(net)
            status = await commit.status()
            assert status.successful and status.code_name == "VALID"
            processed = ProcessedTransaction.FromString(await gateway.network(net.spec.channel).contract("qscc")
                                                        .evaluate("GetTransactionByID", net.spec.channel,
                                                                  transaction.transaction_id))
            assert processed.validationCode == VALID
            trail = json.loads(await data.evaluate("Audit", ds))
            assert [e["action"] for e in trail["entries"]].count("granted") == 1, trail

    asyncio.run(body())


async def wait_next_block(net: FabricNet) -> None:
    """Until the next block after the current one is committed by plant1's peer (the resent copy's)."""
    peer = net.peer("plant1").name
    await asyncio.to_thread(wait_height, net, peer, block_height(net, peer) + 1, 10.0)
