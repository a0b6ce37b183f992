"""Proposal construction and prepared-transaction parsing, checked field by field."""

from __future__ import annotations

import hashlib

import pytest
from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import timestamp_pb2

from network.gateway_proposal import (
    NONCE_SIZE,
    build_proposal,
    compute_transaction_id,
    new_transaction_context,
    parse_prepared_transaction,
)

CREATOR = b"\n\x0cHospital1MSP\x12\x05-----"


def test_transaction_id_derivation() -> None:
    nonce = bytes(range(24))
    context = new_transaction_context(CREATOR, nonce)
    assert context.transaction_id == hashlib.sha256(nonce + CREATOR).hexdigest()
    assert compute_transaction_id(nonce, CREATOR) == context.transaction_id
    assert len(context.transaction_id) == 64


def test_fresh_nonce_each_time() -> None:
    a, b = new_transaction_context(CREATOR), new_transaction_context(CREATOR)
    assert len(a.nonce) == NONCE_SIZE
    assert a.nonce != b.nonce and a.transaction_id != b.transaction_id


def test_proposal_fields() -> None:
    context = new_transaction_context(CREATOR)
    proposal = build_proposal(
        channel_id="twinledger",
        chaincode_name="dataaccess",
        function="Grant",
        args=["ds1", b"\x00\x01", "Hospital2MSP"],
        context=context,
        transient={"consent": b"secret"},
    )

    header = common_pb2.Header.FromString(proposal.header)
    channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert channel_header.type == common_pb2.ENDORSER_TRANSACTION
    assert channel_header.channel_id == "twinledger"
    assert channel_header.tx_id == context.transaction_id
    assert channel_header.epoch == 0
    assert channel_header.timestamp.seconds > 0
    extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
    assert extension.chaincode_id.name == "dataaccess"

    signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    assert signature_header.creator == CREATOR
    assert signature_header.nonce == context.nonce
    # What the peer recomputes:
    assert channel_header.tx_id == hashlib.sha256(signature_header.nonce + signature_header.creator).hexdigest()

    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    assert dict(payload.TransientMap) == {"consent": b"secret"}
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    assert spec.chaincode_id.name == "dataaccess"
    assert list(spec.input.args) == [b"Grant", b"ds1", b"\x00\x01", b"Hospital2MSP"]


def test_explicit_timestamp_is_used() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5)
    proposal = build_proposal(
        channel_id="c", chaincode_name="cc", function="f", args=[], context=new_transaction_context(CREATOR),
        timestamp=ts,
    )
    header = common_pb2.Header.FromString(proposal.header)
    assert common_pb2.ChannelHeader.FromString(header.channel_header).timestamp == ts


def _prepared_payload(channel: str, tx_id: str, result: bytes) -> bytes:
    action = proposal_pb2.ChaincodeAction(response=proposal_response_pb2.Response(status=200, payload=result))
    response_payload = proposal_response_pb2.ProposalResponsePayload(
        proposal_hash=b"h", extension=action.SerializeToString()
    )
    action_payload = transaction_pb2.ChaincodeActionPayload(
        chaincode_proposal_payload=b"",
        action=transaction_pb2.ChaincodeEndorsedAction(
            proposal_response_payload=response_payload.SerializeToString()
        ),
    )
    tx = transaction_pb2.Transaction(
        actions=[transaction_pb2.TransactionAction(header=b"", payload=action_payload.SerializeToString())]
    )
    channel_header = common_pb2.ChannelHeader(type=common_pb2.ENDORSER_TRANSACTION, channel_id=channel, tx_id=tx_id)
    return common_pb2.Payload(
        header=common_pb2.Header(channel_header=channel_header.SerializeToString()),
        data=tx.SerializeToString(),
    ).SerializeToString()


def test_parse_prepared_transaction() -> None:
    parsed = parse_prepared_transaction(_prepared_payload("twinledger", "abc", b"result!"))
    assert (parsed.channel_id, parsed.transaction_id, parsed.result) == ("twinledger", "abc", b"result!")


def test_parse_prepared_transaction_without_actions() -> None:
    payload = common_pb2.Payload(header=common_pb2.Header(), data=b"").SerializeToString()
    with pytest.raises(ValueError, match="no chaincode action"):
        parse_prepared_transaction(payload)
    with pytest.raises(ValueError, match="not a valid envelope"):
        parse_prepared_transaction(b"\xff\xff\xff")
