"""Transaction bytes as a Fabric peer reads and writes them: proposals in, prepared transactions out.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. ``open_proposal`` checks a signed proposal the way a peer's endorser does (signature,
channel, header type, timestamp, nonce, tx id = sha256(nonce + creator), chaincode id) and
``prepare_transaction`` assembles the envelope the way Fabric's gateway does
(``internal/pkg/gateway/submit.go: prepareTransaction``): transient data stripped, the proposal's
header reused, one action carrying the endorsed response and one endorsement per endorsing peer, each
signed over proposal_response_payload + endorser as Fabric's endorsers sign.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from google.protobuf.timestamp_pb2 import Timestamp

from network.identity import Identity, Signer
from tests.fabric_double.msp import Creator, MspRegistry, Rejected


@dataclass(frozen=True)
class ProposalView:
    """What the chaincode and the gateway need from a verified proposal."""

    header: common_pb2.Header
    payload: proposal_pb2.ChaincodeProposalPayload
    channel: str
    chaincode: str
    args: list[bytes]
    transient: dict[str, bytes]
    creator: Creator
    tx_id: str
    timestamp: Timestamp
    proposal_bytes: bytes


def open_proposal(signed: proposal_pb2.SignedProposal, request_tx_id: str, request_channel: str,
                  msps: MspRegistry, known_channel: str) -> ProposalView:
    proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
    signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    creator = msps.verify(signature_header.creator, signed.proposal_bytes, signed.signature)
    if channel_header.type != common_pb2.ENDORSER_TRANSACTION or channel_header.epoch != 0:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "not an endorser transaction")
    if channel_header.channel_id != known_channel or request_channel != known_channel:
        raise Rejected(grpc.StatusCode.NOT_FOUND, f"channel {channel_header.channel_id} not found")
    if not channel_header.timestamp.seconds:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "proposal has no timestamp")
    if len(signature_header.nonce) != 24:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "nonce must be 24 bytes")
    expected = hashlib.sha256(signature_header.nonce + signature_header.creator).hexdigest()
    if channel_header.tx_id != expected or request_tx_id != expected:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"incorrectly computed txid {channel_header.tx_id}")
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
    if extension.chaincode_id.name != spec.chaincode_id.name or not spec.chaincode_id.name:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "chaincode id mismatch")
    if not spec.input.args:
        raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "proposal names no chaincode function")
    return ProposalView(header, payload, channel_header.channel_id, spec.chaincode_id.name, list(spec.input.args),
                        dict(payload.TransientMap), creator, channel_header.tx_id, channel_header.timestamp,
                        bytes(signed.proposal_bytes))


@dataclass(frozen=True)
class PeerSigner:
    """An endorsing peer's signing identity (its enrolment certificate and key)."""

    identity: Identity
    signer: Signer


def prepare_transaction(view: ProposalView, response: proposal_response_pb2.Response,
                        event: chaincode_event_pb2.ChaincodeEvent | None, endorsers: Sequence[PeerSigner]
                        ) -> common_pb2.Envelope:
    action = proposal_pb2.ChaincodeAction(
        results=b"",  # the read-write set stays in the double's memory (see ledger.py)
        events=event.SerializeToString() if event is not None else b"",
        response=response,
        chaincode_id=chaincode_pb2.ChaincodeID(name=view.chaincode),
    )
    response_payload = proposal_response_pb2.ProposalResponsePayload(
        proposal_hash=hashlib.sha256(view.proposal_bytes).digest(), extension=action.SerializeToString(),
    ).SerializeToString()
    endorsements = [
        proposal_response_pb2.Endorsement(endorser=endorser, signature=peer.signer.sign(response_payload + endorser))
        for peer in endorsers
        for endorser in [peer.identity.serialized()]
    ]
    action_payload = transaction_pb2.ChaincodeActionPayload(
        chaincode_proposal_payload=proposal_pb2.ChaincodeProposalPayload(input=view.payload.input).SerializeToString(),
        action=transaction_pb2.ChaincodeEndorsedAction(
            proposal_response_payload=response_payload, endorsements=endorsements
        ),
    )
    transaction = transaction_pb2.Transaction(actions=[
        transaction_pb2.TransactionAction(header=view.header.signature_header,
                                          payload=action_payload.SerializeToString())
    ])
    return common_pb2.Envelope(
        payload=common_pb2.Payload(header=view.header, data=transaction.SerializeToString()).SerializeToString()
    )


def endorsing_msps(envelope_payload: bytes, msps: MspRegistry) -> set[str]:
    """MSP IDs of the peers whose endorsements in a submitted transaction verify (what a committer counts)."""
    payload = common_pb2.Payload.FromString(envelope_payload)
    orgs: set[str] = set()
    for action in transaction_pb2.Transaction.FromString(payload.data).actions:
        endorsed = transaction_pb2.ChaincodeActionPayload.FromString(action.payload).action
        for endorsement in endorsed.endorsements:
            try:
                creator = msps.verify(endorsement.endorser, endorsed.proposal_response_payload + endorsement.endorser,
                                      endorsement.signature)
            except Rejected:
                continue  # a bad endorsement counts for nobody
            if creator.node_ou in (None, "peer"):
                orgs.add(creator.msp_id)
    return orgs
