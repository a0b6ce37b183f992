"""Blocking wrapper around the asyncio Gateway client, for scripts and synchronous code.

The async client runs on a private event loop in a daemon thread owned by the ``SyncGateway``; each
blocking call hands a coroutine to that loop and waits for its result. Because the loop is private, the
wrapper works both from plain scripts and from code already running inside another asyncio loop
(``asyncio.run`` would refuse to nest there), and the gRPC channel always lives on the loop that
created it, as grpc.aio requires.

Example::

    with SyncGateway.connect("127.0.0.1:7051", identity=identity, signer=signer,
                             tls_root_cert_pem=tls_ca_pem) as gateway:
        contract = gateway.network("twinledger").contract("dataaccess")
        contract.submit("RegisterAsset", "ds1", "tabular", digest)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from network.checkpoint import Checkpoint
from network.gateway import (
    DEFAULT_ENDPOINT,
    ChaincodeEvent,
    ChaincodeEventStream,
    Commit,
    Contract,
    Deadlines,
    Gateway,
    Network,
    Proposal,
    Transaction,
    TransactionStatus,
)
from network.gateway_proposal import Arg
from network.identity import Identity, Signer

__all__ = [
    "SyncChaincodeEvents", "SyncCommit", "SyncContract", "SyncGateway", "SyncNetwork", "SyncProposal",
    "SyncTransaction",
]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="fabric-gateway-loop", daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            # Blocking on our own loop would deadlock; async code on that loop must use the async API.
            raise RuntimeError("SyncGateway called from its own event loop; use network.gateway directly")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncGateway:
    """Blocking counterpart of ``network.gateway.Gateway``."""

    def __init__(self, loop_thread: _LoopThread, gateway: Gateway) -> None:
        self._loop = loop_thread
        self._gateway = gateway

    @classmethod
    def connect(
        cls,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        identity: Identity,
        signer: Signer,
        tls_root_cert_pem: bytes | Path | None = None,
        client_cert_pem: bytes | Path | None = None,
        client_key_pem: bytes | Path | None = None,
        server_name_override: str | None = None,
        insecure: bool = False,
        deadlines: Deadlines = Deadlines(),
        peer_names: Mapping[str, str] | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> SyncGateway:
        """Same arguments and meaning as ``Gateway.connect``."""
        loop_thread = _LoopThread()

        async def open_gateway() -> Gateway:
            # Created on the private loop, because a grpc.aio channel belongs to the loop it was made on.
            return Gateway.connect(
                endpoint,
                identity=identity,
                signer=signer,
                tls_root_cert_pem=tls_root_cert_pem,
                client_cert_pem=client_cert_pem,
                client_key_pem=client_key_pem,
                server_name_override=server_name_override,
                insecure=insecure,
                deadlines=deadlines,
                peer_names=peer_names,
                channel_options=channel_options,
            )

        try:
            gateway = loop_thread.run(open_gateway())
        except BaseException:
            loop_thread.stop()
            raise
        return cls(loop_thread, gateway)

    @property
    def async_gateway(self) -> Gateway:
        """The wrapped async gateway (only usable on the wrapper's own loop)."""
        return self._gateway

    def network(self, channel_name: str) -> SyncNetwork:
        return SyncNetwork(self._loop, self._gateway.network(channel_name))

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._gateway.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> SyncGateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncNetwork:
    def __init__(self, loop_thread: _LoopThread, network: Network) -> None:
        self._loop = loop_thread
        self._network = network
        self.name = network.name

    def contract(self, chaincode_name: str, contract_name: str | None = None) -> SyncContract:
        return SyncContract(self._loop, self._network.contract(chaincode_name, contract_name))

    def chaincode_events(
        self,
        chaincode_name: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        timeout: float | None = None,
    ) -> SyncChaincodeEvents:
        stream = self._network.chaincode_events(
            chaincode_name, start_block=start_block, checkpoint=checkpoint, timeout=timeout
        )
        return SyncChaincodeEvents(self._loop, stream)


class SyncContract:
    def __init__(self, loop_thread: _LoopThread, contract: Contract) -> None:
        self._loop = loop_thread
        self._contract = contract

    def evaluate(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        return self._loop.run(
            self._contract.evaluate(
                function, *args, transient=transient, endorsing_orgs=endorsing_orgs, timeout=timeout
            )
        )

    def submit(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
    ) -> bytes:
        return self._loop.run(
            self._contract.submit(
                function, *args, transient=transient, endorsing_orgs=endorsing_orgs
            )
        )

    def submit_async(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
    ) -> SyncCommit:
        commit = self._loop.run(
            self._contract.submit_async(
                function, *args, transient=transient, endorsing_orgs=endorsing_orgs
            )
        )
        return SyncCommit(self._loop, commit)

    def new_proposal(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
        nonce: bytes | None = None,
    ) -> SyncProposal:
        """The step-by-step flow (proposal -> endorse -> submit -> status), as ``Contract.new_proposal``."""
        proposal = self._contract.new_proposal(
            function, *args, transient=transient, endorsing_orgs=endorsing_orgs, nonce=nonce
        )
        return SyncProposal(self._loop, proposal)


class SyncProposal:
    def __init__(self, loop_thread: _LoopThread, proposal: Proposal) -> None:
        self._loop = loop_thread
        self._proposal = proposal
        self.transaction_id = proposal.transaction_id

    def evaluate(self, timeout: float | None = None) -> bytes:
        return self._loop.run(self._proposal.evaluate(timeout=timeout))

    def endorse(self, timeout: float | None = None) -> SyncTransaction:
        return SyncTransaction(self._loop, self._loop.run(self._proposal.endorse(timeout=timeout)))


class SyncTransaction:
    def __init__(self, loop_thread: _LoopThread, transaction: Transaction) -> None:
        self._loop = loop_thread
        self._transaction = transaction
        self.transaction_id = transaction.transaction_id
        self.result = transaction.result

    def submit(self, timeout: float | None = None) -> SyncCommit:
        return SyncCommit(self._loop, self._loop.run(self._transaction.submit(timeout=timeout)))


class SyncCommit:
    def __init__(self, loop_thread: _LoopThread, commit: Commit) -> None:
        self._loop = loop_thread
        self._commit = commit
        self.transaction_id = commit.transaction_id
        self.result = commit.result

    def status(self, timeout: float | None = None) -> TransactionStatus:
        return self._loop.run(self._commit.status(timeout=timeout))


class SyncChaincodeEvents:
    """Blocking iterator over chaincode events; ``close()`` ends it."""

    def __init__(self, loop_thread: _LoopThread, stream: ChaincodeEventStream) -> None:
        self._loop = loop_thread
        self._stream = stream

    def __iter__(self) -> Iterator[ChaincodeEvent]:
        return self

    def __next__(self) -> ChaincodeEvent:
        async def next_event() -> ChaincodeEvent | None:
            try:
                return await self._stream.__anext__()
            except StopAsyncIteration:
                return None

        event = self._loop.run(next_event())
        if event is None:
            raise StopIteration
        return event

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._loop.loop.call_soon_threadsafe(self._stream.close)

    def __enter__(self) -> SyncChaincodeEvents:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
