"""Each compat workaround: the scenario shows the defect on the unpatched shim and passes once patched.

Tests that take the `unpatched` fixture run with compat reverted; the same scenario without it runs
with compat applied (the autouse fixture), so removing a patch from compat makes its test fail.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, ContractChaincode, TransactionContext
from fabric_chaincode_python.fabric_contract_api.contractapi.transaction_context import ClientIdentity
from fabric_chaincode_python.fabric_shim import handler as shim_handler
from fabric_chaincode_python.fabric_shim.handler import Handler
from fabric_chaincode_python.fabric_shim.interfaces import Chaincode
from fabric_chaincode_python.fabric_shim.msg_queue_handler import MsgQueueHandler
from fabric_chaincode_python.fabric_shim.response import success
from fabric_chaincode_python.fabric_shim.server import ChaincodeService
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, chaincode_shim_pb2_grpc, proposal_response_pb2

from chaincode import compat

Message = chaincode_shim_pb2.ChaincodeMessage
REPO = Path(__file__).resolve().parents[3]
TOO_MANY = "GRPC_CALL_ERROR_TOO_MANY_OPERATIONS"


class OneSendAtATime:
    """The server side of a gRPC stream: like gRPC core it refuses a write while one is in flight."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.refused = 0
        self._busy = False

    async def write(self, message: Any) -> None:
        if self._busy:
            self.refused += 1
            raise RuntimeError(f"Failed grpc_call_start_batch: 8 with grpc_call_error value: '{TOO_MANY}'")
        self._busy = True
        try:
            await asyncio.sleep(0.001)  # the send completes asynchronously
        finally:
            self._busy = False
        self.sent.append(message)


class RawChaincode(Chaincode):
    """A raw (non-contract) chaincode: the function name selects the behaviour."""

    async def init(self, stub: Any) -> Any:
        return success(b"")

    async def invoke(self, stub: Any) -> Any:
        fn, params = stub.get_function_and_parameters()
        if fn == "boom":
            raise ValueError("boom: ledger on fire")
        if fn == "event":
            stub.set_event("Ping", b'{"n":1}')
        if fn == "read":
            return success(await stub.get_state("k"))
        return success(fn.encode())


def tx(txid: str, *args: str, payload: bytes | None = None) -> Any:
    data = chaincode_pb2.ChaincodeInput(args=[a.encode() for a in args]).SerializeToString()
    return Message(type=Message.TRANSACTION, txid=txid, channel_id="ch", payload=data if payload is None else payload)


def ready_handler(chaincode: Any = None) -> tuple[Handler, OneSendAtATime]:
    handler = Handler("cc:1", chaincode or RawChaincode())
    context = OneSendAtATime()
    handler.context = context
    handler.msg_queue_handler = MsgQueueHandler(handler)
    handler.state = shim_handler.STATES.READY
    return handler, context


# --- a. concurrent writes --------------------------------------------------------------------------


async def converse(transactions: int) -> OneSendAtATime:
    async def peer() -> Any:
        yield Message(type=Message.REGISTERED)
        yield Message(type=Message.READY)
        for i in range(transactions):
            yield tx(f"tx{i}", "ping")

    context = OneSendAtATime()
    await Handler("cc:1", RawChaincode()).chat_with_peer(peer(), context)
    return context


def completed(context: OneSendAtATime) -> list[Any]:
    return [m for m in context.sent if m.type == Message.COMPLETED]


def test_a_unpatched_concurrent_replies_collide(unpatched: None) -> None:
    context = asyncio.run(converse(8))
    assert context.refused > 0
    assert len(completed(context)) < 8


def test_a_patched_replies_are_serialized() -> None:
    context = asyncio.run(converse(8))
    assert context.refused == 0
    assert sorted(m.txid for m in completed(context)) == sorted(f"tx{i}" for i in range(8))


# --- l. no eager formatting of every peer message ------------------------------------------------------


class CountedProposal:
    """Stands in for a message's SignedProposal and counts how often it is turned into text."""

    proposal_bytes = b""  # the stub then treats the transaction as unsigned (nothing to decode)

    def __init__(self, formatted: list[int]) -> None:
        self._formatted = formatted

    def __str__(self) -> str:
        self._formatted.append(1)
        return "<signed proposal>"


class PeerMessage:
    """A TRANSACTION message as the chat loop reads it, with a proposal that counts its formatting."""

    def __init__(self, txid: str, formatted: list[int]) -> None:
        self.type, self.txid, self.channel_id = Message.TRANSACTION, txid, "ch"
        self.payload = chaincode_pb2.ChaincodeInput(args=[b"ping"]).SerializeToString()
        self.proposal = CountedProposal(formatted)


async def converse_counting(transactions: int) -> tuple[OneSendAtATime, list[int]]:
    formatted: list[int] = []

    async def peer() -> Any:
        yield Message(type=Message.REGISTERED)
        yield Message(type=Message.READY)
        for i in range(transactions):
            yield PeerMessage(f"tx{i}", formatted)

    context = OneSendAtATime()
    await Handler("cc:1", RawChaincode()).chat_with_peer(peer(), context)
    return context, formatted


def test_l_unpatched_loop_formats_every_proposal_even_when_info_is_off(unpatched: None) -> None:
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    _, formatted = asyncio.run(converse_counting(4))
    assert len(formatted) == 4  # ~0.1 ms each for a real 1.2 KB proposal, for a log line nobody sees


def test_l_patched_loop_formats_nothing_and_answers_every_transaction() -> None:
    context, formatted = asyncio.run(converse_counting(4))
    assert formatted == []
    assert sorted(m.txid for m in completed(context)) == [f"tx{i}" for i in range(4)]


async def grpc_round(transactions: int) -> int:
    """Real in-process gRPC server running the shim; returns how many transactions were answered."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(ChaincodeService("cc:1", RawChaincode()), server)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
        lock = asyncio.Lock()  # the peer serializes its own sends (Fabric's serialSend)

        async def send(message: Any) -> None:
            async with lock:
                await call.write(message)

        assert (await call.read()).type == Message.REGISTER
        await send(Message(type=Message.REGISTERED))
        await send(Message(type=Message.READY))
        for i in range(transactions):
            await send(tx(f"tx{i}", "read"))
        answered: set[str] = set()
        pending: set[asyncio.Task[None]] = set()
        while len(answered) < transactions:
            try:
                # A transaction whose reply was lost never answers: stop once the stream goes quiet.
                message = await asyncio.wait_for(call.read(), timeout=1.0)
            except asyncio.TimeoutError:
                break
            if message is grpc.aio.EOF:
                break
            if message.type == Message.GET_STATE:
                reply = Message(type=Message.RESPONSE, txid=message.txid, channel_id=message.channel_id, payload=b"v")
                task = asyncio.ensure_future(send(reply))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif message.type in (Message.COMPLETED, Message.ERROR):
                answered.add(message.txid)
        call.cancel()
        return len(answered)
    finally:
        await channel.close()
        await server.stop(0)


def test_a_unpatched_real_grpc_fails_with_too_many_operations(unpatched: None, caplog: Any) -> None:
    # The race needs sends to overlap inside gRPC core: a few hundred in-flight transactions make it
    # show up reliably; three rounds make a miss practically impossible.
    caplog.set_level(logging.ERROR, logger="asyncio")
    losses = []
    for _ in range(3):
        losses.append(300 - asyncio.run(grpc_round(300)))
        if losses[-1]:
            break
    assert any(losses), "expected lost transactions on the unpatched shim"
    assert TOO_MANY in caplog.text


def test_a_patched_real_grpc_answers_every_transaction(caplog: Any) -> None:
    assert asyncio.run(grpc_round(300)) == 300
    assert TOO_MANY not in caplog.text


# --- b. events -------------------------------------------------------------------------------------


def test_b_unpatched_event_is_dropped(unpatched: None) -> None:
    handler, context = ready_handler()
    asyncio.run(handler.handle_stub_interaction(tx("tx1", "event")))
    [reply] = context.sent
    assert reply.type == Message.COMPLETED and not reply.HasField("chaincode_event")


def test_b_patched_event_is_in_completed_message() -> None:
    handler, context = ready_handler()
    asyncio.run(handler.handle_stub_interaction(tx("tx1", "event")))
    [reply] = context.sent
    assert reply.type == Message.COMPLETED and (reply.txid, reply.channel_id) == ("tx1", "ch")
    assert reply.chaincode_event.event_name == "Ping" and reply.chaincode_event.payload == b'{"n":1}'
    assert proposal_response_pb2.Response.FromString(reply.payload).status == 200


def test_b_patched_only_last_event_is_sent() -> None:
    class TwoEvents(RawChaincode):
        async def invoke(self, stub: Any) -> Any:
            stub.set_event("First", b"1")
            stub.set_event("Second", b"2")
            return success(b"")

    handler, context = ready_handler(TwoEvents())
    asyncio.run(handler.handle_stub_interaction(tx("tx1", "x")))
    assert context.sent[0].chaincode_event.event_name == "Second"


# --- c. exceptions ---------------------------------------------------------------------------------


def test_c_unpatched_exception_sends_nothing(unpatched: None) -> None:
    handler, context = ready_handler()
    with pytest.raises(ValueError, match="ledger on fire"):
        asyncio.run(handler.handle_stub_interaction(tx("tx1", "boom")))
    assert context.sent == []  # the peer would wait for its execute timeout


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (tx("tx1", "boom"), "boom: ledger on fire"),
        (tx("tx1", payload=b"\xff\xff"), "Error parsing message"),  # not a ChaincodeInput
    ],
)
def test_c_patched_exception_is_an_immediate_error_reply(message: Any, text: str) -> None:
    handler, context = ready_handler()
    started = time.monotonic()
    asyncio.run(handler.handle_stub_interaction(message))
    assert time.monotonic() - started < 1.0
    [reply] = context.sent
    assert reply.type == Message.ERROR and (reply.txid, reply.channel_id) == ("tx1", "ch")
    assert text in reply.payload.decode()


def test_c_patched_missing_response_is_a_500() -> None:
    class Silent(RawChaincode):
        async def invoke(self, stub: Any) -> Any:
            return None

    handler, context = ready_handler(Silent())
    asyncio.run(handler.handle_stub_interaction(tx("tx1", "x")))
    response = proposal_response_pb2.Response.FromString(context.sent[0].payload)
    assert response.status == 500 and "no success or error" in response.message


# --- d. unannotated ctx ----------------------------------------------------------------------------


class UnannotatedContract(Contract):
    Name = "plain"

    def Echo(self, ctx, text: str) -> str:  # type: ignore[no-untyped-def]  # noqa: N802, ANN001
        return f"{ctx.get_stub().get_txid()}:{text}"


def echo_through(ledger: Any, creator: Any, contract: Contract, *args: str) -> Any:
    chaincode = ContractChaincode.new_chaincode(contract)  # parsed now, under the current patch state
    return asyncio.run(ledger.run(creator("Plant1MSP"), "Echo", *args, chaincode=chaincode))[0]


def test_d_unpatched_ctx_counts_as_argument(unpatched: None, ledger: Any, creator: Any) -> None:
    response = echo_through(ledger, creator, UnannotatedContract(), "hi")
    assert response.status == 500 and "Expected 2, received 1" in response.message


def test_d_patched_ctx_is_the_context(ledger: Any, creator: Any) -> None:
    response = echo_through(ledger, creator, UnannotatedContract(), "hi")
    assert response.status == 200 and response.payload == b"tx-0001:hi"


# --- e. certificate attributes ---------------------------------------------------------------------


def identity_of(creator: Any) -> ClientIdentity:
    return ClientIdentity(type("S", (), {"get_creator": staticmethod(lambda: creator)})())


def test_e_unpatched_get_attribute_is_always_none(unpatched: None, creator: Any) -> None:
    identity = identity_of(creator("Hospital1MSP", role="steward"))
    assert identity.get_mspid() == "Hospital1MSP"
    assert identity.get_attribute("role") is None


def test_e_patched_get_attribute_reads_the_certificate(creator: Any, certs: Any) -> None:
    identity = identity_of(creator("Hospital1MSP", role="steward", org_kind="hospital"))
    assert identity.get_attribute("role") == "steward" and identity.get_attribute("org_kind") == "hospital"
    assert identity.assert_attribute("role") and identity.get_attribute("missing") is None
    # A corrupt extension yields no attributes (so role checks deny) rather than an exception.
    broken = identity_of({"mspid": "X", "idBytes": certs.issue("eve", raw_extension=b"{")})
    assert broken.get_attribute("role") is None


# --- f. logging ------------------------------------------------------------------------------------

_LOGGING_PROBE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from fabric_chaincode_python.fabric_shim.handler import Handler
    from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
    from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2
    if sys.argv[1] == "patched":
        from chaincode import compat
        compat.apply()

    class Client:
        async def handle_put_state(self, *args):
            return None

    stub = ChaincodeStub(Client(), "ch", "tx1", chaincode_pb2.ChaincodeInput(), None)
    asyncio.run(stub.put_state("patient", "SECRET-PAYLOAD"))
    keepalive = chaincode_shim_pb2.ChaincodeMessage(type=chaincode_shim_pb2.ChaincodeMessage.KEEPALIVE)
    asyncio.run(Handler("cc:1", None).handle_message(keepalive))  # logs the per-message warning
    print(logging.getLevelName(logging.getLogger().level), logging.getLevelName(logging.getLogger("asyncio").level))
    """
)


def logging_probe(mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: the defect happens at the shim's import, which pytest's process already did.
    return subprocess.run(
        [sys.executable, "-c", _LOGGING_PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
    )


def test_f_unpatched_import_logs_payloads_at_debug() -> None:
    result = logging_probe("unpatched")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "DEBUG"
    assert "SECRET-PAYLOAD" in result.stderr
    assert "Look out!" in result.stderr


def test_f_patched_levels_are_sane_and_configurable() -> None:
    result = logging_probe("patched")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["INFO", "WARNING"]
    assert "SECRET-PAYLOAD" not in result.stderr and "Look out!" not in result.stderr
    assert result.stderr == ""
    verbose = logging_probe("patched", CORE_CHAINCODE_LOGGING_LEVEL="debug", CORE_CHAINCODE_LOGGING_SHIM="info")
    assert verbose.stdout.split() == ["DEBUG", "INFO"]


def test_f_level_names() -> None:
    root, shim = logging.getLogger(), logging.getLogger("asyncio")
    saved = root.level, shim.level
    try:
        compat.configure_logging({"CORE_CHAINCODE_LOGGING_LEVEL": "warn", "CORE_CHAINCODE_LOGGING_SHIM": "ERROR"})
        assert (root.level, shim.level) == (logging.WARNING, logging.ERROR)
        with pytest.raises(compat.CompatConfigError, match="CORE_CHAINCODE_LOGGING_LEVEL='loud' is not a log level"):
            compat.configure_logging({"CORE_CHAINCODE_LOGGING_LEVEL": "loud"})
    finally:
        root.setLevel(saved[0])
        shim.setLevel(saved[1])


# --- g. peer ERROR replies -------------------------------------------------------------------------


async def get_state_refused_by_peer() -> Any:
    handler, context = ready_handler()
    request = asyncio.create_task(handler.handle_get_state("", "k", "ch", "tx1"))
    while not context.sent:
        await asyncio.sleep(0.001)
    assert context.sent[0].type == Message.GET_STATE
    refusal = Message(type=Message.ERROR, txid="tx1", channel_id="ch", payload=b"no ledger context")
    await handler.msg_queue_handler.handle_msg_response(refusal)
    return await request


def test_g_unpatched_peer_error_is_returned_as_a_value(unpatched: None) -> None:
    assert asyncio.run(get_state_refused_by_peer()) == b"no ledger context"


def test_g_patched_peer_error_raises() -> None:
    with pytest.raises(compat.PeerRequestError, match="GetState failed: no ledger context"):
        asyncio.run(get_state_refused_by_peer())


# --- h. extra arguments ----------------------------------------------------------------------------


class AnnotatedContract(Contract):
    Name = "annotated"

    def Echo(self, ctx: TransactionContext, text: str) -> str:  # noqa: N802
        return text


def test_h_unpatched_extra_arguments_are_ignored(unpatched: None, ledger: Any, creator: Any) -> None:
    assert echo_through(ledger, creator, AnnotatedContract(), "hi", "surplus").status == 200


def test_h_patched_extra_arguments_are_refused(ledger: Any, creator: Any) -> None:
    response = echo_through(ledger, creator, AnnotatedContract(), "hi", "surplus")
    assert response.status == 500 and "Expected 1, received 2" in response.message


# --- apply / revert --------------------------------------------------------------------------------


def test_apply_is_idempotent_and_revert_restores() -> None:
    patched = Handler.chat_with_peer, Handler.handle_stub_interaction, ClientIdentity._ensure_loaded
    compat.apply()
    compat.apply()
    assert (Handler.chat_with_peer, Handler.handle_stub_interaction, ClientIdentity._ensure_loaded) == patched
    compat.revert()
    try:
        assert not compat.is_applied()
        assert Handler.chat_with_peer is compat._original_chat_with_peer
        assert ClientIdentity._ensure_loaded is compat._original_ensure_loaded
    finally:
        compat.apply()
    assert compat.is_applied() and Handler.chat_with_peer is patched[0]


def test_apply_refuses_another_shim_version(monkeypatch: Any) -> None:
    import fabric_chaincode_python

    monkeypatch.setattr(fabric_chaincode_python, "VERSION", "2.6.0")
    with pytest.raises(RuntimeError, match="re-check every workaround"):
        compat.apply()


# --- m. no close message for an exhausted range query --------------------------------------------------------


class RangePeer:
    """Answers a range query with pages of one key each, as the peer does, and records what the shim sends."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = list(keys)
        self.sent: list[str] = []

    def page(self) -> Any:
        from fabric_protos.ledger.queryresult import kv_query_result_pb2
        from fabric_protos.peer import chaincode_shim_pb2 as shim

        key = self.keys.pop(0)
        kv = kv_query_result_pb2.KV(key=key, value=b"{}").SerializeToString()
        response = shim.QueryResponse(results=[shim.QueryResultBytes(resultBytes=kv)], has_more=bool(self.keys), id="q1")
        return Message(type=Message.RESPONSE, payload=response.SerializeToString())

    async def handle_get_state_by_range(self, *args: Any) -> Any:
        self.sent.append("range")
        return self.page()

    async def handle_query_state_next(self, *args: Any) -> Any:
        self.sent.append("next")
        return self.page()

    async def handle_query_state_close(self, *args: Any) -> Any:
        self.sent.append("close")
        return None


async def read_range(peer: RangePeer, stop_after: int | None = None) -> list[str]:
    from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub

    stub = ChaincodeStub(peer, "ch", "tx1", chaincode_pb2.ChaincodeInput(), None)
    iterator = await stub.get_state_by_range("a", "z")
    keys = []
    async for kv in iterator:
        keys.append(kv.key)
        if stop_after is not None and len(keys) == stop_after:
            await iterator.aclose()
            break
    return keys


def test_m_unpatched_exhausted_range_still_sends_a_close(unpatched: None) -> None:
    peer = RangePeer(["a1", "a2"])
    assert asyncio.run(read_range(peer)) == ["a1", "a2"]
    assert peer.sent == ["range", "next", "close"]


def test_m_patched_exhausted_range_sends_no_close_but_an_early_stop_does() -> None:
    peer = RangePeer(["a1", "a2"])
    assert asyncio.run(read_range(peer)) == ["a1", "a2"]
    assert peer.sent == ["range", "next"]  # the peer closed the query with its last page
    early = RangePeer(["a1", "a2", "a3"])
    assert asyncio.run(read_range(early, stop_after=1)) == ["a1"]
    assert early.sent == ["range", "close"]  # still open on the peer: closed explicitly
