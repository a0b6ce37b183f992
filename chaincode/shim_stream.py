"""The chaincode side of the peer's stream, for fabric-chaincode-python 2.5.4 (patched in by ``compat.apply``).

Two workarounds of compat.py live here because both are about the one gRPC stream a peer holds open:

a. Stream writes are not serialized: the handler runs every peer message in its own asyncio task and each
   task writes to the one stream; gRPC allows one outstanding send per call, so concurrent transactions
   fail with ``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS``. ``SerializedStream`` holds an asyncio lock around
   ``write`` (Fabric's serialSend).
l. The shim's chat loop formats every received message into four INFO f-strings *before* logging decides
   to drop them: the signed proposal as protobuf text costs ~0.1 ms per TRANSACTION message (timeit on a
   1.2 KB proposal shaped like a real check's, loaded machine), a few per cent of an execution, spent on log
   lines nobody sees. And ``handle_message`` logs a "-->> Look out!" WARNING for every message. The loop and
   the dispatch here do what the shim's do (REGISTER first, one task per message, wait for the tasks when
   the stream ends) without them; a message is described only when DEBUG is on, and lazily.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from fabric_chaincode_python.fabric_shim import handler as shim_handler
from fabric_chaincode_python.fabric_shim import msg_queue_handler
from fabric_chaincode_python.fabric_shim.response import new_error_msg
from fabric_protos.peer import chaincode_shim_pb2

LOG = logging.getLogger(__name__)
Message = chaincode_shim_pb2.ChaincodeMessage
STATES = shim_handler.STATES

original_chat_with_peer = shim_handler.Handler.chat_with_peer
original_handle_message = shim_handler.Handler.handle_message


class SerializedStream:
    """Wraps a gRPC stream context so that only one ``write`` is in flight at a time (a)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, message: Any) -> None:
        async with self._lock:
            await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        # Everything but write (read, peer(), abort, ...) goes straight to the real context.
        return getattr(self._context, name)


async def chat_with_peer(self: Any, stream: Any, context: Any) -> Any:
    """The shim's ``Handler.chat_with_peer``: register, then handle each peer message in its own task (l)."""
    self.state = STATES.CREATED
    # The handler and its MsgQueueHandler both write through handler.context: wrapping it covers every write (a).
    self.context = context if isinstance(context, SerializedStream) else SerializedStream(context)
    self.msg_queue_handler = msg_queue_handler.MsgQueueHandler(self)
    register = Message(type=Message.REGISTER, payload=self.chaincode_id.SerializeToString())
    register.timestamp.FromDatetime(datetime.datetime.now())
    await self.context.write(register)

    async for message in stream:
        if message is None:
            LOG.error("received nil message, ending chaincode stream")
            return Message(type=Message.ERROR, payload=b"received nil message, ending chaincode stream")
        # Handled in its own task so that the stream keeps delivering the RESPONSE frames in-flight
        # transactions wait for.
        self._track_task(self.handle_message(message))
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("peer message %s txid=%s channel=%s payload=%d bytes", Message.Type.Name(message.type),
                      message.txid, message.channel_id, len(message.payload))
    if self._pending_tasks:
        await asyncio.gather(*self._pending_tasks, return_exceptions=True)
    return None


async def handle_message(self: Any, msg: Any) -> None:
    """The shim's ``Handler.handle_message`` without its WARNING per message (l)."""
    if msg.type == Message.KEEPALIVE:
        return
    if self.state == STATES.READY:
        await self.handle_message_ready(msg)
    elif self.state == STATES.ESTABLISHED:
        await self.handle_message_established(msg)
    elif self.state == STATES.CREATED:
        await self.handle_message_created(msg)
    else:
        await self.context.write(new_error_msg(msg, self.state))
