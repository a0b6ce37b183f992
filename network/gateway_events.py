"""Chaincode events as their blocks commit: the gateway's ChaincodeEvents stream as an async iterator."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from fabric_protos.gateway import gateway_pb2

from network.gateway_connection import Connection
from network.gateway_errors import ChaincodeEventsError


@dataclass(frozen=True)
class ChaincodeEvent:
    """An event a transaction function emitted, as delivered once its block committed."""

    block_number: int
    transaction_id: str
    chaincode_name: str
    event_name: str
    payload: bytes


class ChaincodeEventStream:
    """Async iterator over chaincode events; ``close()`` (or leaving ``async with``) ends the stream."""

    def __init__(
        self,
        conn: Connection,
        signed_request: gateway_pb2.SignedChaincodeEventsRequest,
        timeout: float | None,
    ) -> None:
        self._conn = conn
        self._signed_request = signed_request
        self._timeout = timeout
        self._call: Any = None
        self._pending: collections.deque[ChaincodeEvent] = collections.deque()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[ChaincodeEvent]:
        return self

    async def __anext__(self) -> ChaincodeEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                self._call = self._conn.stub.ChaincodeEvents(
                    self._signed_request, timeout=self._timeout
                )
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                if self._closed:  # cancelled by our own close()
                    raise StopAsyncIteration from None
                raise self._conn.error(ChaincodeEventsError, exc, None, self._timeout) from None
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            if response is grpc.aio.EOF:
                self._closed = True
                raise StopAsyncIteration
            # One response per block; events keep the order of their transactions in the block.
            self._pending.extend(
                ChaincodeEvent(
                    block_number=int(response.block_number),
                    transaction_id=event.tx_id,
                    chaincode_name=event.chaincode_id,
                    event_name=event.event_name,
                    payload=bytes(event.payload),
                )
                for event in response.events
            )
        return self._pending.popleft()

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> ChaincodeEventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
