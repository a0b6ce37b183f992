"""One channel shared by every simulated peer: endorsement planning, ordering and commit validation.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. Each peer's gateway service (service.py) calls into the one ``Channel``, so a
transaction endorsed through peer0.hospital1 is visible through peer0.plant2 once its block commits.

Endorsement follows Fabric's gateway: with ``endorsing_organizations`` the client's orgs endorse,
otherwise the gateway's own org plus the orgs the key-level policies of the written keys name. The
proposal is simulated once (every Fabric peer would compute the same result on the same state) and
each planned org's peer signs the response with its real enrolment key. At commit, the endorsements
in the client's signed envelope are verified like a committer does, and they decide the key-level
policy checks. The chaincode-level endorsement policy is not evaluated (the double has one copy of
the state, so "enough orgs agree" is always true).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_event_pb2, proposal_response_pb2, transaction_pb2

from network.gateway_errors import ErrorDetail
from tests.fabric_double.executor import Executor, Simulated
from tests.fabric_double.msp import MspRegistry, Rejected
from tests.fabric_double.ordering import BlockCutter
from tests.fabric_double.proposal import PeerSigner, ProposalView, endorsing_msps, prepare_transaction


@dataclass(frozen=True)
class PeerInfo:
    """A simulated peer as clients address it."""

    name: str
    msp_id: str
    address: str


@dataclass
class Counters:
    """How many signatures of each kind the double verified (lets tests prove the double checked them)."""

    proposal_signatures: int = 0
    envelope_signatures: int = 0
    commit_status_signatures: int = 0
    events_signatures: int = 0
    endorsing_orgs: list[list[str]] = field(default_factory=list)


class Channel:
    """Must be created on the event loop that serves it (the block cutter's timers live there)."""

    def __init__(self, name: str, msps: MspRegistry, executor: Executor, peer_signers: dict[str, PeerSigner],
                 block_interval: float = 0.02, max_block_count: int = 500) -> None:
        self.name = name
        self.msps = msps
        self.executor = executor
        self.peer_signers = peer_signers  # one endorsing peer per MSP ID
        self.counters = Counters()
        self.cutter = BlockCutter(self._validate, block_interval, max_block_count)
        self._endorsed: dict[str, Simulated] = {}
        self._ordered: dict[str, tuple[Simulated, bytes]] = {}

    @staticmethod
    def chaincode_failure(peer: PeerInfo, response: proposal_response_pb2.Response) -> ErrorDetail:
        # The text Fabric's gateway puts in the ErrorDetail of an error response from the chaincode.
        return ErrorDetail(peer.address, peer.msp_id, f"chaincode response {response.status}, {response.message}")

    async def evaluate(self, view: ProposalView, peer: PeerInfo) -> proposal_response_pb2.Response:
        simulated = await self.executor.simulate(view)
        if simulated.response.status >= 400:
            detail = self.chaincode_failure(peer, simulated.response)
            raise Rejected(grpc.StatusCode.UNKNOWN, f"evaluate call to endorser returned error: {detail.message}",
                           [detail])
        return simulated.response

    async def endorse(self, view: ProposalView, peer: PeerInfo, endorsing_orgs: Sequence[str]) -> common_pb2.Envelope:
        # A peer refuses a proposal whose transaction is already ordered or committed; endorsing the
        # same proposal again (a client retry) is allowed, as on Fabric.
        if self.cutter.is_known(view.tx_id):
            raise Rejected(grpc.StatusCode.FAILED_PRECONDITION, f"duplicate transaction found [{view.tx_id}]")
        self.counters.endorsing_orgs.append(list(endorsing_orgs))
        simulated = await self.executor.simulate(view)
        if simulated.response.status >= 400:
            raise Rejected(grpc.StatusCode.ABORTED, "failed to endorse transaction, see attached details for more info",
                           [self.chaincode_failure(peer, simulated.response)])
        orgs = list(endorsing_orgs) or [peer.msp_id, *sorted(simulated.required_orgs - {peer.msp_id})]
        missing = [org for org in orgs if org not in self.peer_signers]
        if missing:
            raise Rejected(grpc.StatusCode.UNAVAILABLE,
                           f"failed to find any endorsing peers for org(s): {', '.join(missing)}")
        self._endorsed[view.tx_id] = simulated
        # The gateway strips the response payload from the endorsed response only when sending it on;
        # the prepared transaction carries the result, which is where the client reads it.
        return prepare_transaction(view, simulated.response, simulated.event, [self.peer_signers[o] for o in orgs])

    def submit(self, tx_id: str, envelope: common_pb2.Envelope) -> None:
        """Hand a client-signed prepared transaction to ordering (the signature is checked by the caller)."""
        simulated = self._endorsed.pop(tx_id, None)
        if simulated is None:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "transaction was not endorsed here")
        self._ordered[tx_id] = (simulated, bytes(envelope.payload))
        self.cutter.enqueue(tx_id)

    def _validate(self, tx_id: str, block: int, number: int) -> tuple[int, chaincode_event_pb2.ChaincodeEvent | None]:
        simulated, payload = self._ordered.pop(tx_id)
        code = simulated.commit(block, number, endorsing_msps(payload, self.msps))
        return code, simulated.event if code == transaction_pb2.VALID else None
