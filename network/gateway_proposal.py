"""Building Fabric transaction proposals and reading prepared transactions — no network involved.

The byte layout follows what a Fabric v3 peer checks when it validates a proposal (and what the official
Gateway SDKs produce): a ``peer.Proposal`` whose ``header`` is a ``common.Header`` (ChannelHeader +
SignatureHeader) and whose ``payload`` is a ``peer.ChaincodeProposalPayload``. The transaction id is
bound to the creator and nonce in the signature header, and the peer recomputes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

__all__ = [
    "NONCE_SIZE",
    "Arg",
    "PreparedResult",
    "TransactionContext",
    "build_proposal",
    "chaincode_args",
    "compute_transaction_id",
    "new_transaction_context",
    "parse_prepared_transaction",
]

# Fabric's own crypto.GetRandomNonce and the SDKs use 24 random bytes.
NONCE_SIZE = 24

Arg = str | bytes


def compute_transaction_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's tx id: hex SHA-256 of nonce || serialised creator; the peer rejects any other value."""
    return hashlib.sha256(nonce + creator).hexdigest()


@dataclass(frozen=True)
class TransactionContext:
    """The per-transaction values shared by the proposal header and the tx id."""

    transaction_id: str
    nonce: bytes
    creator: bytes

    def signature_header(self) -> common_pb2.SignatureHeader:
        return common_pb2.SignatureHeader(creator=self.creator, nonce=self.nonce)


def new_transaction_context(creator: bytes, nonce: bytes | None = None) -> TransactionContext:
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    return TransactionContext(compute_transaction_id(nonce, creator), nonce, creator)


def chaincode_args(function: str, args: Sequence[Arg]) -> list[bytes]:
    """Chaincode input is [function name, *arguments], all as bytes; strings are sent as UTF-8."""
    return [function.encode()] + [a.encode() if isinstance(a, str) else bytes(a) for a in args]


def build_proposal(
    *,
    channel_id: str,
    chaincode_name: str,
    function: str,
    args: Sequence[Arg],
    context: TransactionContext,
    transient: Mapping[str, bytes] | None = None,
    timestamp: timestamp_pb2.Timestamp | None = None,
) -> proposal_pb2.Proposal:
    """The unsigned ``peer.Proposal`` for one chaincode invocation."""
    if timestamp is None:
        timestamp = timestamp_pb2.Timestamp()
        timestamp.GetCurrentTime()
    chaincode_id = chaincode_pb2.ChaincodeID(name=chaincode_name)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION,
        channel_id=channel_id,
        tx_id=context.transaction_id,
        timestamp=timestamp,
        epoch=0,
        # The peer routes the proposal to the chaincode named in this extension.
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=chaincode_id).SerializeToString(),
    )
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=context.signature_header().SerializeToString(),
    )
    invocation = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            # Type is left UNDEFINED as the current Go Gateway SDK does: since the v2 lifecycle the
            # peer takes the chaincode type from the installed definition, not from the proposal.
            chaincode_id=chaincode_id,
            input=chaincode_pb2.ChaincodeInput(args=chaincode_args(function, args)),
        )
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=invocation.SerializeToString(),
        # Transient data reaches the chaincode but is stripped before the transaction is ordered,
        # which is why private-data inputs travel here rather than in args.
        TransientMap=dict(transient or {}),
    )
    return proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    )


@dataclass(frozen=True)
class PreparedResult:
    """What the client reads from the endorsed transaction envelope before signing it."""

    channel_id: str
    transaction_id: str
    result: bytes


def parse_prepared_transaction(envelope_payload: bytes) -> PreparedResult:
    """Read channel, tx id and chaincode result from a prepared transaction's ``common.Payload`` bytes.

    The chain is Payload → Transaction → TransactionAction → ChaincodeActionPayload →
    ChaincodeEndorsedAction → ProposalResponsePayload → ChaincodeAction → Response.payload.
    """
    try:
        payload = common_pb2.Payload.FromString(envelope_payload)
        channel_header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        transaction = transaction_pb2.Transaction.FromString(payload.data)
    except DecodeError as exc:
        raise ValueError(f"prepared transaction is not a valid envelope: {exc}") from exc
    problems: list[str] = []
    for action in transaction.actions:
        try:
            action_payload = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
            response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
                action_payload.action.proposal_response_payload
            )
            chaincode_action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)
        except DecodeError as exc:
            problems.append(str(exc))
            continue
        return PreparedResult(
            channel_header.channel_id, channel_header.tx_id, chaincode_action.response.payload
        )
    raise ValueError(f"prepared transaction holds no chaincode action: {problems or 'no actions'}")
