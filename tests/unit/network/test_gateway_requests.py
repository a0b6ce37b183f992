"""Signed request messages the client builds (nothing is sent: the channel is never used)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_pb2

from network.checkpoint import InMemoryCheckpointer
from network.gateway import Commit, Gateway
from network.identity import Identity, Signer, verify_signature

IssueCert = Callable[..., tuple[bytes, ec.EllipticCurvePrivateKey]]


def _with_gateway(issue_cert: IssueCert, body: Callable[[Gateway], Any]) -> Any:
    cert_pem, key = issue_cert("user1")

    async def run() -> Any:
        # 127.0.0.1:9 (discard) is never dialled: grpc.aio channels connect lazily.
        gateway = Gateway.connect("127.0.0.1:9", identity=Identity("Hospital1MSP", cert_pem), signer=Signer(key), insecure=True)
        async with gateway:
            return body(gateway)

    return asyncio.run(run())


def _events_request(issue_cert: IssueCert, **kwargs: Any) -> tuple[gateway_pb2.ChaincodeEventsRequest, bytes, bytes]:
    def body(gateway: Gateway) -> tuple[Any, bytes, bytes]:
        stream = gateway.network("twinledger").chaincode_events("twins", **kwargs)
        signed = stream._signed_request
        return gateway_pb2.ChaincodeEventsRequest.FromString(signed.request), signed.request, signed.signature

    result: tuple[gateway_pb2.ChaincodeEventsRequest, bytes, bytes] = _with_gateway(issue_cert, body)
    return result


def test_events_default_to_next_commit(issue_cert: IssueCert) -> None:
    request, raw, signature = _events_request(issue_cert)
    assert request.channel_id == "twinledger" and request.chaincode_id == "twins"
    assert request.start_position.WhichOneof("Type") == "next_commit"
    assert request.after_transaction_id == ""
    creator = identities_pb2.SerializedIdentity.FromString(request.identity)
    assert creator.mspid == "Hospital1MSP"
    assert verify_signature(creator.id_bytes, raw, signature)


def test_events_from_start_block(issue_cert: IssueCert) -> None:
    request, _, _ = _events_request(issue_cert, start_block=0)
    assert request.start_position.WhichOneof("Type") == "specified"
    assert request.start_position.specified.number == 0


def test_events_from_checkpoint_override_start_block(issue_cert: IssueCert) -> None:
    checkpoint = InMemoryCheckpointer()
    checkpoint.checkpoint_transaction(41, "tx41")
    request, _, _ = _events_request(issue_cert, start_block=3, checkpoint=checkpoint)
    assert request.start_position.specified.number == 41
    assert request.after_transaction_id == "tx41"

    empty = InMemoryCheckpointer()  # no checkpoint yet: fall back to start_block
    request, _, _ = _events_request(issue_cert, start_block=3, checkpoint=empty)
    assert request.start_position.specified.number == 3 and request.after_transaction_id == ""


def test_proposal_is_signed_over_its_bytes(issue_cert: IssueCert) -> None:
    def body(gateway: Gateway) -> None:
        contract = gateway.network("twinledger").contract("dataaccess", "DataAccess")
        proposal = contract.new_proposal("Check", "ds1", endorsing_orgs=["Hospital2MSP"])
        signed = proposal.signed_proposal
        assert signed.proposal_bytes == proposal.proposal_bytes
        assert proposal.digest() == hashlib.sha256(proposal.proposal_bytes).digest()
        assert verify_signature(gateway.identity.certificate_pem, signed.proposal_bytes, signed.signature)
        assert proposal.endorsing_orgs == ["Hospital2MSP"]
        header = common_pb2.Header.FromString(proposal_pb2.Proposal.FromString(signed.proposal_bytes).header)
        assert common_pb2.ChannelHeader.FromString(header.channel_header).tx_id == proposal.transaction_id

    _with_gateway(issue_cert, body)


def test_commit_status_request(issue_cert: IssueCert) -> None:
    def body(gateway: Gateway) -> None:
        commit = Commit(gateway._conn, "twinledger", "abc", b"result")
        signed = commit._signed_request
        request = gateway_pb2.CommitStatusRequest.FromString(signed.request)
        assert (request.transaction_id, request.channel_id) == ("abc", "twinledger")
        assert request.identity == gateway.identity.serialized()
        assert verify_signature(gateway.identity.certificate_pem, signed.request, signed.signature)

    _with_gateway(issue_cert, body)
