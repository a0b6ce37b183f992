"""compat i, j, k (transient map, private data, key-level endorsement) and the history iterator, on the wire.

A real ChaincodeStub talks to a real shim Handler whose stream is a scripted peer: each request the
chaincode sends is answered the way Fabric's core/chaincode handler answers it. Tests that take the
`unpatched` fixture show the defect on the shim as shipped; the same calls then work with compat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fabric_chaincode_python.fabric_shim import handler as shim_handler
from fabric_chaincode_python.fabric_shim.handler import Handler
from fabric_chaincode_python.fabric_shim.msg_queue_handler import MsgQueueHandler
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.common import common_pb2
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, proposal_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from chaincode import compat

Message = chaincode_shim_pb2.ChaincodeMessage
Answer = Callable[[Any], tuple[int, bytes]]


class ScriptedPeer:
    """The peer's end of the stream: records what the chaincode sends and answers with answer(message)."""

    def __init__(self, handler: Handler, answer: Answer) -> None:
        self.handler = handler
        self.answer = answer
        self.sent: list[Any] = []

    async def write(self, message: Any) -> None:
        self.sent.append(message)
        kind, payload = self.answer(message)
        reply = Message(type=kind, payload=payload, txid=message.txid, channel_id=message.channel_id)
        # Answer after the write returns, as a reply arriving on the stream would.
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self.handler.msg_queue_handler.handle_msg_response(reply)))


def signed_proposal(transient: dict[str, bytes] | None = None) -> proposal_pb2.SignedProposal:
    creator = identities_pb2.SerializedIdentity(mspid="Hospital1MSP", id_bytes=b"cert").SerializeToString()
    ts = Timestamp(seconds=1_740_830_400)
    header = common_pb2.Header(
        channel_header=common_pb2.ChannelHeader(type=common_pb2.ENDORSER_TRANSACTION, channel_id="ch", tx_id="tx1",
                                                timestamp=ts).SerializeToString(),
        signature_header=common_pb2.SignatureHeader(creator=creator, nonce=b"n").SerializeToString(),
    )
    invocation = chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=chaincode_pb2.ChaincodeSpec(
        input=chaincode_pb2.ChaincodeInput(args=[b"fn"])))
    payload = proposal_pb2.ChaincodeProposalPayload(input=invocation.SerializeToString(), TransientMap=transient or {})
    proposal = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString())
    return proposal_pb2.SignedProposal(proposal_bytes=proposal.SerializeToString(), signature=b"sig")


def wired_stub(answer: Answer, transient: dict[str, bytes] | None = None) -> tuple[ChaincodeStub, ScriptedPeer]:
    handler = Handler("cc:1", None)  # type: ignore[arg-type]
    peer = ScriptedPeer(handler, answer)
    handler.context = peer
    handler.msg_queue_handler = MsgQueueHandler(handler)
    handler.state = shim_handler.STATES.READY
    stub = ChaincodeStub(handler, "ch", "tx1", chaincode_pb2.ChaincodeInput(args=[b"fn"]), signed_proposal(transient))
    return stub, peer


def respond(payload: bytes = b"") -> Answer:
    return lambda message: (Message.RESPONSE, payload)


# --- i. transient map --------------------------------------------------------------------------------


def test_i_unpatched_transient_map_is_unreachable(unpatched: None) -> None:
    stub, _ = wired_stub(respond(), transient={"consent": b'{"status":"given"}'})
    assert stub.get_transient() is None


def test_i_patched_transient_map_is_the_proposals() -> None:
    stub, _ = wired_stub(respond(), transient={"consent": b'{"status":"given"}', "other": b""})
    assert stub.get_transient() == {"consent": b'{"status":"given"}', "other": b""}
    # No proposal (or an empty one): an empty map, not an error.
    bare = ChaincodeStub(None, "ch", "tx1", chaincode_pb2.ChaincodeInput(), proposal_pb2.SignedProposal())
    assert bare.get_transient() == {}


# --- j. private data ---------------------------------------------------------------------------------


def test_j_unpatched_private_data_calls_are_placeholders(unpatched: None) -> None:
    stub, peer = wired_stub(respond(b"value"))
    for name, args in (("put_private_data", ("c", "k", b"v")), ("get_private_data", ("c", "k")),
                       ("get_private_data_hash", ("c", "k"))):
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            getattr(stub, name)(*args)
    assert peer.sent == []


def test_j_patched_private_data_reaches_the_peer() -> None:
    async def scenario() -> tuple[bytes, bytes, list[Any]]:
        answers = iter([b"", b"stored", b"\x12" * 32])
        stub, peer = wired_stub(lambda message: (Message.RESPONSE, next(answers)))
        await stub.put_private_data("_implicit_org_Hospital1MSP", "k", "välue")
        value = await stub.get_private_data("_implicit_org_Hospital1MSP", "k")
        digest = await stub.get_private_data_hash("_implicit_org_Hospital1MSP", "k")
        return value, digest, peer.sent

    value, digest, sent = asyncio.run(scenario())
    assert (value, digest) == (b"stored", b"\x12" * 32)
    put, get, hashed = sent
    assert put.type == Message.PUT_STATE
    assert chaincode_shim_pb2.PutState.FromString(put.payload) == chaincode_shim_pb2.PutState(
        key="k", value="välue".encode(), collection="_implicit_org_Hospital1MSP")
    assert get.type == Message.GET_STATE
    assert chaincode_shim_pb2.GetState.FromString(get.payload).collection == "_implicit_org_Hospital1MSP"
    assert hashed.type == Message.GET_PRIVATE_DATA_HASH
    assert chaincode_shim_pb2.GetState.FromString(hashed.payload) == chaincode_shim_pb2.GetState(
        key="k", collection="_implicit_org_Hospital1MSP")
    assert all((m.txid, m.channel_id) == ("tx1", "ch") for m in sent)


def test_j_patched_empty_collection_is_refused_before_sending() -> None:
    # An empty collection would address the public world state: the Go shim refuses it too.
    stub, peer = wired_stub(respond())
    for call in (stub.get_private_data("", "k"), stub.put_private_data("", "k", b"v"), stub.get_private_data_hash("", "k")):
        with pytest.raises(ValueError, match="collection must not be an empty string"):
            asyncio.run(call)
    with pytest.raises(ValueError, match="key must not be an empty string"):
        asyncio.run(stub.put_private_data("c", "", b"v"))
    assert peer.sent == []


def test_j_patched_peer_refusal_raises() -> None:
    stub, _ = wired_stub(lambda message: (Message.ERROR, b"collection _implicit_org_X could not be found"))
    with pytest.raises(compat.PeerRequestError, match="GetPrivateDataHash failed: collection _implicit_org_X"):
        asyncio.run(stub.get_private_data_hash("_implicit_org_X", "k"))


# --- k. key-level endorsement ------------------------------------------------------------------------


def test_k_unpatched_validation_parameter_cannot_be_set(unpatched: None) -> None:
    stub, peer = wired_stub(respond())
    with pytest.raises(TypeError):
        stub.set_state_validation_parameter("k", b"policy")
    assert peer.sent == []


def test_k_patched_validation_parameter_round_trip() -> None:
    result = chaincode_shim_pb2.StateMetadataResult(entries=[
        chaincode_shim_pb2.StateMetadata(metakey="OTHER", value=b"x"),
        chaincode_shim_pb2.StateMetadata(metakey="VALIDATION_PARAMETER", value=b"policy"),
    ])
    answers = iter([b"", result.SerializeToString(), b""])

    async def scenario() -> tuple[bytes, bytes, list[Any]]:
        stub, peer = wired_stub(lambda message: (Message.RESPONSE, next(answers)))
        await stub.set_state_validation_parameter("\x00grant\x00d\x00", b"policy")
        found = await stub.get_state_validation_parameter("\x00grant\x00d\x00")
        missing = await stub.get_state_validation_parameter("other")
        return found, missing, peer.sent

    found, missing, sent = asyncio.run(scenario())
    assert (found, missing) == (b"policy", b"")
    put, get, _ = sent
    assert put.type == Message.PUT_STATE_METADATA
    assert chaincode_shim_pb2.PutStateMetadata.FromString(put.payload) == chaincode_shim_pb2.PutStateMetadata(
        key="\x00grant\x00d\x00", collection="",
        metadata=chaincode_shim_pb2.StateMetadata(metakey="VALIDATION_PARAMETER", value=b"policy"))
    assert get.type == Message.GET_STATE_METADATA
    assert chaincode_shim_pb2.GetStateMetadata.FromString(get.payload).key == "\x00grant\x00d\x00"


def test_revert_removes_the_added_methods() -> None:
    compat.revert()
    try:
        assert "get_private_data_hash" not in ChaincodeStub.__dict__
        assert "set_state_validation_parameter" not in ChaincodeStub.__dict__
    finally:
        compat.apply()
    assert ChaincodeStub.__dict__["get_private_data_hash"] is compat._get_private_data_hash


# --- the history iterator: paged, no defect found -------------------------------------------------------


def history_page(tx_ids: list[str], has_more: bool) -> bytes:
    results = [
        chaincode_shim_pb2.QueryResultBytes(resultBytes=kv_query_result_pb2.KeyModification(
            tx_id=tx_id, value=tx_id.encode(), timestamp=Timestamp(seconds=i), is_delete=tx_id == "t0",
        ).SerializeToString())
        for i, tx_id in enumerate(tx_ids)
    ]
    return chaincode_shim_pb2.QueryResponse(results=results, has_more=has_more, id="q1").SerializeToString()


@pytest.mark.parametrize("patched", [True, False])
def test_history_iterator_pages_and_closes_only_what_the_peer_left_open(patched: bool) -> None:
    if not patched:
        compat.revert()
    try:
        pages = {Message.GET_HISTORY_FOR_KEY: history_page(["t3", "t2"], True),
                 Message.QUERY_STATE_NEXT: history_page(["t1", "t0"], False),
                 Message.QUERY_STATE_CLOSE: chaincode_shim_pb2.QueryResponse(id="q1").SerializeToString()}

        async def scenario() -> tuple[list[Any], list[Any]]:
            stub, peer = wired_stub(lambda message: (Message.RESPONSE, pages[message.type]))
            modifications = [m async for m in await stub.get_history_for_key("k")]
            return modifications, peer.sent

        modifications, sent = asyncio.run(scenario())
    finally:
        compat.apply()
    assert [(m.tx_id, m.value, m.is_delete) for m in modifications] == [
        ("t3", b"t3", False), ("t2", b"t2", False), ("t1", b"t1", False), ("t0", b"t0", True)]
    # The peer closes a query with its last page (has_more false): the shim as shipped still sends a close (a
    # round trip for nothing), patched it does not (compat m).
    closing = [] if patched else [Message.QUERY_STATE_CLOSE]
    assert [m.type for m in sent] == [Message.GET_HISTORY_FOR_KEY, Message.QUERY_STATE_NEXT, *closing]
    assert chaincode_shim_pb2.GetHistoryForKey.FromString(sent[0].payload).key == "k"
    assert chaincode_shim_pb2.QueryStateNext.FromString(sent[1].payload).id == "q1"
