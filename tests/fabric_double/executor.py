"""What runs a proposal: the real TwinLedger chaincode, in-process, over the shared ledger.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. The gateway service hands every verified proposal to an ``Executor``; the one used
for a TwinLedger home is ``ChaincodeExecutor``, which runs ``chaincode.app.build_chaincode()`` — the
same ContractChaincode a peer's chaincode server runs — with a stub whose creator, tx id, timestamp
and transient map come from the signed proposal. Tests of the gateway client itself plug in a toy
executor instead (tests/integration/test_gateway_fake_server.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from fabric_protos.peer import chaincode_event_pb2, proposal_response_pb2, transaction_pb2

from chaincode.app import build_chaincode
from tests.fabric_double.ledger import Ledger
from tests.fabric_double.msp import Rejected
from tests.fabric_double.proposal import ProposalView

#: Validates a simulated transaction at commit and, when valid, applies it: (block, tx number,
#: endorsing MSP IDs) -> Fabric validation code.
Committer = Callable[[int, int, set[str]], int]


@dataclass
class Simulated:
    """A simulation's outcome: the chaincode response, its event and how to commit it later."""

    response: proposal_response_pb2.Response
    event: chaincode_event_pb2.ChaincodeEvent | None
    commit: Committer
    #: Orgs whose peers must endorse beyond the gateway's own (key-level policies of the written keys).
    required_orgs: frozenset[str] = frozenset()


class Executor(Protocol):
    async def simulate(self, view: ProposalView) -> Simulated: ...


class ChaincodeExecutor:
    """Runs the real chaincode named ``name`` (one ContractChaincode, as one chaincode server serves)."""

    def __init__(self, ledger: Ledger, name: str = "twinledger") -> None:
        self.ledger = ledger
        self.name = name
        self._chaincode = build_chaincode()

    async def simulate(self, view: ProposalView) -> Simulated:
        if view.chaincode != self.name:
            # Fabric's gateway, asked for a chaincode that has no definition on the channel.
            raise Rejected(grpc.StatusCode.FAILED_PRECONDITION,
                           f"no combination of peers can be derived which satisfy the endorsement policy: "
                           f"No metadata was found for chaincode {view.chaincode} in channel {view.channel}")
        stub = self.ledger.new_stub(
            view.creator.shim_creator(), view.args[0].decode("utf-8", errors="replace"),
            [a.decode("utf-8", errors="replace") for a in view.args[1:]], txid=view.tx_id, timestamp=view.timestamp,
            transient=view.transient, channel_id=view.channel, chaincode_name=self.name,
        )
        response = await self._chaincode.invoke(stub)
        event = None
        if stub.events:
            # One event per transaction, the last one set (as the shim sends it, compat b); the peer
            # fills in the chaincode name.
            event = chaincode_event_pb2.ChaincodeEvent()
            event.CopyFrom(stub.events[-1])
            event.chaincode_id = self.name

        def commit(block: int, number: int, endorsers: set[str]) -> int:
            code = self.ledger.validate(stub, endorsers)
            if code == transaction_pb2.VALID:
                self.ledger.apply(stub, (block, number))
            return code

        return Simulated(response, event, commit, frozenset(self.ledger.required_orgs(stub)))
