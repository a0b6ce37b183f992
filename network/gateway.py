"""Python client of the Fabric Gateway service (``gateway.Gateway``, served by every Fabric v3 peer).

It follows the official Fabric Gateway SDKs' model: ``Gateway`` (one gRPC connection + one identity) →
``Network`` (a channel) → ``Contract`` (a chaincode, optionally one named contract in it). ``evaluate``
runs a query on one peer; ``submit`` endorses, orders and waits for the commit. The steps are also
available one by one (``Proposal`` → ``Transaction`` → ``Commit``), so a caller can keep many submissions
in flight at once: the peer's gateway does endorsement planning and ordering for us, and one HTTP/2
connection multiplexes all concurrent calls.

The API is asyncio (``grpc.aio``); ``network.gateway_sync`` wraps it for plain scripts.

Example::

    identity, signer = load_msp_identity(".twinledger/net/crypto/hospital1/users/steward/msp", "Hospital1MSP")
    async with Gateway.connect("127.0.0.1:7051", identity=identity, signer=signer,
                               tls_root_cert_pem=Path(".../tlsca.pem")) as gateway:
        contract = gateway.network("twinledger").contract("dataaccess")
        await contract.submit("RegisterAsset", "ds1", "tabular", sha256_hex)
        print(await contract.evaluate("ReadAsset", "ds1"))
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import statistics
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import proposal_pb2, transaction_pb2

from network.checkpoint import Checkpoint
from network.gateway_errors import (
    ChaincodeEventsError,
    CommitError,
    CommitStatusError,
    EndorseError,
    EvaluateError,
    GatewayError,
    SubmitError,
    error_from_rpc,
    worth_resubmitting,
)
from network.gateway_proposal import (
    Arg,
    build_proposal,
    new_transaction_context,
    parse_prepared_transaction,
)
from network.identity import Identity, Signer

__all__ = [
    "ChaincodeEvent",
    "ChaincodeEventStream",
    "Commit",
    "Contract",
    "Deadlines",
    "Gateway",
    "Network",
    "Proposal",
    "Transaction",
    "TransactionStatus",
]

DEFAULT_ENDPOINT = "127.0.0.1:7051"
# Fabric peers accept messages up to 100 MiB; gRPC's 4 MiB default would truncate large query results.
_MAX_MESSAGE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Deadlines:
    """Per-call deadlines in seconds (the official SDKs' recommended defaults).

    Endorsement is the longest because the gateway may have to collect several organisations'
    endorsements; the commit-status wait covers ordering plus block validation.

    Ordering-service failover. Resending a transaction is always safe: it is the same signed envelope
    (same transaction id), and the peers commit a transaction id once -- a second copy in a later block
    is marked DUPLICATE_TXID and changes nothing. So:

    * ``submit_retry``: a Submit the ordering service refused for now (the gateway reached no orderer that
      took it: no Raft leader yet, the leader just died) or did not answer within ``submit`` is sent
      again, the same envelope, with a short pause, until this many seconds have passed;
    * ``resubmit_after``: a commit-status wait that hears nothing for this long sends the envelope again
      (a transaction handed to a Raft leader that died before it was ordered is otherwise never
      committed, and its client would wait out ``commit_status``). Under load a commit can take longer
      than this, so the client waits at least 3x the median commit time it has recently seen.
    """

    evaluate: float = 5.0
    endorse: float = 15.0
    submit: float = 5.0
    commit_status: float = 60.0
    submit_retry: float = 20.0
    resubmit_after: float = 3.0


@dataclass(frozen=True)
class TransactionStatus:
    """Outcome of a committed transaction: the validation code the peers gave it and its block."""

    transaction_id: str
    code: int
    block_number: int

    @property
    def code_name(self) -> str:
        try:
            return str(transaction_pb2.TxValidationCode.Name(self.code))
        except ValueError:
            return "UNKNOWN_VALIDATION_CODE"

    @property
    def successful(self) -> bool:
        return bool(self.code == transaction_pb2.VALID)


@dataclass(frozen=True)
class ChaincodeEvent:
    """An event a transaction function emitted, as delivered once its block committed."""

    block_number: int
    transaction_id: str
    chaincode_name: str
    event_name: str
    payload: bytes


class _Connection:
    """What every request object needs: the stub, who signs, deadlines and how to report errors."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        identity: Identity,
        signer: Signer,
        endpoint: str,
        deadlines: Deadlines,
        peer_names: Mapping[str, str],
        plaintext: bool,
    ) -> None:
        self.channel = channel
        self.stub = gateway_pb2_grpc.GatewayStub(channel)
        self.identity = identity
        self.signer = signer
        self.endpoint = endpoint
        self.deadlines = deadlines
        self.peer_names = dict(peer_names)
        self.plaintext = plaintext
        # Recent submit-to-commit times (s): how long a commit normally takes on this connection now.
        self.commit_times: collections.deque[float] = collections.deque(maxlen=64)

    def resubmit_after(self) -> float:
        """Seconds of silence after which a commit-status wait resends the envelope (see ``Deadlines``)."""
        floor = self.deadlines.resubmit_after
        if len(self.commit_times) < 8:
            return floor
        return max(floor, 3 * statistics.median(self.commit_times))

    def error(
        self,
        error_class: type[GatewayError],
        rpc_error: grpc.aio.AioRpcError,
        transaction_id: str | None,
        timeout: float | None,
    ) -> GatewayError:
        return error_from_rpc(
            error_class,
            rpc_error,
            transaction_id=transaction_id,
            endpoint=self.endpoint,
            timeout=timeout,
            peer_names=self.peer_names,
            plaintext=self.plaintext,
        )


class Gateway:
    """A connection to one peer's gateway service, acting as one identity."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        identity: Identity,
        signer: Signer,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        deadlines: Deadlines = Deadlines(),
        peer_names: Mapping[str, str] | None = None,
        plaintext: bool = False,
    ) -> None:
        """Use an existing ``grpc.aio`` channel (e.g. to share one connection among identities).

        ``peer_names`` maps node addresses to display names, used in error messages; ``plaintext``
        says the channel is not TLS, which only changes how connection errors are explained.
        """
        self._conn = _Connection(
            channel, identity, signer, endpoint, deadlines, peer_names or {}, plaintext
        )

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
    ) -> Gateway:
        """Open a gRPC channel to ``endpoint`` (call from the event loop that will use the gateway).

        TLS is the default, verified against ``tls_root_cert_pem`` (the peer's TLS CA). Give
        ``client_cert_pem``/``client_key_pem`` when the peer requires mutual TLS, and
        ``server_name_override`` when the certificate's host name differs from the address dialled
        (e.g. dialling 127.0.0.1 for a peer whose TLS certificate names ``peer0.hospital1``). A plain-text
        channel is only opened with ``insecure=True``; real peers refuse it.
        """
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if server_name_override:
            options.append(("grpc.ssl_target_name_override", server_name_override))
            options.append(("grpc.default_authority", server_name_override))
        options.extend(channel_options)
        if insecure:
            channel = grpc.aio.insecure_channel(endpoint, options=options)
        else:
            if tls_root_cert_pem is None:
                raise ValueError(
                    "TLS needs tls_root_cert_pem (the peer's TLS CA certificate); pass insecure=True "
                    "only for a deliberately plain-text test server"
                )
            if (client_cert_pem is None) != (client_key_pem is None):
                raise ValueError("mutual TLS needs both client_cert_pem and client_key_pem")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(tls_root_cert_pem),
                private_key=_read_pem(client_key_pem) if client_key_pem is not None else None,
                certificate_chain=_read_pem(client_cert_pem) if client_cert_pem is not None else None,
            )
            channel = grpc.aio.secure_channel(endpoint, credentials, options=options)
        return cls(
            channel,
            identity,
            signer,
            endpoint=endpoint,
            deadlines=deadlines,
            peer_names=peer_names,
            plaintext=insecure,
        )

    @property
    def identity(self) -> Identity:
        return self._conn.identity

    @property
    def deadlines(self) -> Deadlines:
        return self._conn.deadlines

    def network(self, channel_name: str) -> Network:
        return Network(self._conn, channel_name)

    async def close(self) -> None:
        await self._conn.channel.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _read_pem(value: bytes | Path) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


class Network:
    """A channel as seen through the gateway."""

    def __init__(self, conn: _Connection, name: str) -> None:
        self._conn = conn
        self.name = name

    def contract(self, chaincode_name: str, contract_name: str | None = None) -> Contract:
        return Contract(self._conn, self.name, chaincode_name, contract_name)

    def chaincode_events(
        self,
        chaincode_name: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        timeout: float | None = None,
    ) -> ChaincodeEventStream:
        """Stream the events of ``chaincode_name`` as their blocks commit.

        Start position, in order of precedence: a non-empty ``checkpoint`` (resume after its last
        processed transaction), ``start_block``, else the next block to commit. Fabric's gateway refuses
        "oldest", so replaying history means giving ``start_block=0`` explicitly.
        ``timeout`` bounds the whole stream; None keeps it open until ``close()``.
        """
        position = ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit())
        after_transaction_id = ""
        if checkpoint is not None and (checkpoint.block_number or checkpoint.transaction_id):
            position = ab_pb2.SeekPosition(
                specified=ab_pb2.SeekSpecified(number=checkpoint.block_number)
            )
            after_transaction_id = checkpoint.transaction_id
        elif start_block is not None:
            if start_block < 0:
                raise ValueError(f"start_block must not be negative, got {start_block}")
            position = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block))
        request = gateway_pb2.ChaincodeEventsRequest(
            channel_id=self.name,
            chaincode_id=chaincode_name,
            identity=self._conn.identity.serialized(),
            start_position=position,
            after_transaction_id=after_transaction_id,
        ).SerializeToString()
        signed = gateway_pb2.SignedChaincodeEventsRequest(
            request=request, signature=self._conn.signer.sign(request)
        )
        return ChaincodeEventStream(self._conn, signed, timeout)


class Contract:
    """A chaincode on a channel; with ``contract_name``, one contract class of a multi-contract chaincode."""

    def __init__(
        self, conn: _Connection, channel_name: str, chaincode_name: str, contract_name: str | None
    ) -> None:
        self._conn = conn
        self.channel_name = channel_name
        self.chaincode_name = chaincode_name
        self.contract_name = contract_name

    def new_proposal(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
        nonce: bytes | None = None,
    ) -> Proposal:
        """Build and sign a proposal; nothing is sent until ``evaluate()`` or ``endorse()``.

        ``endorsing_orgs`` (MSP IDs) pins which organisations endorse — needed with transient (private)
        data, and for key-level endorsement policies the gateway cannot discover. ``nonce`` (default:
        fresh random bytes) fixes the transaction id (SHA-256 of nonce and creator): a client that stored
        the nonce before a crash can resubmit the very same transaction, which the peers then refuse as
        a duplicate instead of committing it twice.
        """
        if self.contract_name:
            # fabric-contract-api routes "Contract:function" to the named contract class.
            function = f"{self.contract_name}:{function}"
        context = new_transaction_context(self._conn.identity.serialized(), nonce)
        proposal = build_proposal(
            channel_id=self.channel_name,
            chaincode_name=self.chaincode_name,
            function=function,
            args=args,
            context=context,
            transient=transient,
        )
        return Proposal(
            self._conn,
            self.channel_name,
            context.transaction_id,
            proposal.SerializeToString(),
            list(endorsing_orgs or ()),
        )

    async def evaluate(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Run a query on one peer and return the chaincode's result; nothing goes to the ledger."""
        proposal = self.new_proposal(
            function, *args, transient=transient, endorsing_orgs=endorsing_orgs
        )
        return await proposal.evaluate(timeout=timeout)

    async def submit_async(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
    ) -> Commit:
        """Endorse and hand the transaction to the orderers; returns before it commits.

        ``Commit.result`` is the chaincode result; ``await commit.status()`` waits for the block.
        """
        proposal = self.new_proposal(
            function, *args, transient=transient, endorsing_orgs=endorsing_orgs
        )
        transaction = await proposal.endorse()
        return await transaction.submit()

    async def submit(
        self,
        function: str,
        *args: Arg,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Iterable[str] | None = None,
    ) -> bytes:
        """Endorse, order and wait for the commit; raises ``CommitError`` if the peers invalidate it."""
        commit = await self.submit_async(
            function, *args, transient=transient, endorsing_orgs=endorsing_orgs
        )
        status = await commit.status()
        if not status.successful:
            raise CommitError(status.transaction_id, status.code, status.block_number)
        return commit.result


class Proposal:
    """A signed transaction proposal, ready to evaluate or endorse."""

    def __init__(
        self,
        conn: _Connection,
        channel_name: str,
        transaction_id: str,
        proposal_bytes: bytes,
        endorsing_orgs: list[str],
    ) -> None:
        self._conn = conn
        self.channel_name = channel_name
        self.transaction_id = transaction_id
        self.proposal_bytes = proposal_bytes
        self.endorsing_orgs = endorsing_orgs
        # The peer verifies this signature against the creator in the proposal's signature header.
        self.signed_proposal = proposal_pb2.SignedProposal(
            proposal_bytes=proposal_bytes, signature=conn.signer.sign(proposal_bytes)
        )

    def digest(self) -> bytes:
        """SHA-256 of the proposal bytes: what the signature covers."""
        return hashlib.sha256(self.proposal_bytes).digest()

    async def evaluate(self, timeout: float | None = None) -> bytes:
        timeout = self._conn.deadlines.evaluate if timeout is None else timeout
        request = gateway_pb2.EvaluateRequest(
            transaction_id=self.transaction_id,
            channel_id=self.channel_name,
            proposed_transaction=self.signed_proposal,
            target_organizations=self.endorsing_orgs,
        )
        try:
            response = await self._conn.stub.Evaluate(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error(EvaluateError, exc, self.transaction_id, timeout) from None
        return bytes(response.result.payload)

    async def endorse(self, timeout: float | None = None) -> Transaction:
        timeout = self._conn.deadlines.endorse if timeout is None else timeout
        request = gateway_pb2.EndorseRequest(
            transaction_id=self.transaction_id,
            channel_id=self.channel_name,
            proposed_transaction=self.signed_proposal,
            endorsing_organizations=self.endorsing_orgs,
        )
        try:
            response = await self._conn.stub.Endorse(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error(EndorseError, exc, self.transaction_id, timeout) from None
        return Transaction(self._conn, self.transaction_id, response.prepared_transaction)


class Transaction:
    """An endorsed transaction (the gateway's prepared envelope), signed by us for ordering."""

    def __init__(
        self, conn: _Connection, transaction_id: str, envelope: common_pb2.Envelope
    ) -> None:
        self._conn = conn
        try:
            parsed = parse_prepared_transaction(envelope.payload)
        except ValueError as exc:
            raise EndorseError(str(exc), transaction_id=transaction_id) from None
        if parsed.transaction_id and parsed.transaction_id != transaction_id:
            # The gateway must return the transaction we proposed; anything else we refuse to sign.
            raise EndorseError(
                f"gateway returned transaction {parsed.transaction_id}, expected {transaction_id}",
                transaction_id=transaction_id,
            )
        self.transaction_id = transaction_id
        self.channel_name = parsed.channel_id
        self.result = parsed.result
        # The orderer and the committing peers check the envelope signature against the creator in
        # the payload header — our identity — so the client, not the gateway, signs the payload.
        self.envelope = common_pb2.Envelope(
            payload=envelope.payload, signature=conn.signer.sign(envelope.payload)
        )

    def digest(self) -> bytes:
        return hashlib.sha256(self.envelope.payload).digest()

    async def submit(self, timeout: float | None = None) -> Commit:
        """Hand the transaction to the ordering service (through the gateway); returns a ``Commit``.

        An attempt the ordering service refused for now, or did not answer within ``timeout``, is sent
        again -- the same envelope -- until ``Deadlines.submit_retry`` has passed (see ``Deadlines``);
        other failures (an invalid or refused transaction) raise at once.
        """
        timeout = self._conn.deadlines.submit if timeout is None else timeout
        # The commit-status request is built before submitting so nothing can fail after the
        # transaction has left for the orderer.
        commit = Commit(self._conn, self.channel_name, self.transaction_id, self.result, transaction=self)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._conn.deadlines.submit_retry
        pause = 0.1
        while True:
            try:
                await self.send(timeout)
            except SubmitError as error:
                if not worth_resubmitting(error) or loop.time() + pause >= give_up:
                    raise
                commit.resubmissions += 1
                await asyncio.sleep(pause * (1 + random.random()))  # jitter: many clients fail together
                pause = min(0.3, pause * 2)
                continue
            commit.submitted_at = loop.time()
            return commit

    async def send(self, timeout: float) -> None:
        """One Submit of the signed envelope (no retry)."""
        request = gateway_pb2.SubmitRequest(
            transaction_id=self.transaction_id,
            channel_id=self.channel_name,
            prepared_transaction=self.envelope,
        )
        try:
            await self._conn.stub.Submit(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error(SubmitError, exc, self.transaction_id, timeout) from None


class Commit:
    """A submitted transaction whose commit status can be awaited."""

    def __init__(
        self,
        conn: _Connection,
        channel_name: str,
        transaction_id: str,
        result: bytes,
        *,
        transaction: Transaction | None = None,
    ) -> None:
        self._conn = conn
        self.transaction_id = transaction_id
        self.result = result
        # The signed envelope, to send again when the ordering service seems to have lost it (None:
        # a commit built from a transaction id alone only waits).
        self._transaction = transaction
        #: How many times the envelope was sent again (by ``Transaction.submit`` or ``status``).
        self.resubmissions = 0
        self.submitted_at: float | None = None
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=transaction_id,
            channel_id=channel_name,
            identity=conn.identity.serialized(),
        ).SerializeToString()
        # The gateway checks this signature under the channel's Gateway/CommitStatus ACL.
        self._signed_request = gateway_pb2.SignedCommitStatusRequest(
            request=request, signature=conn.signer.sign(request)
        )

    async def status(self, timeout: float | None = None) -> TransactionStatus:
        """Wait until the transaction is in a committed block and return its validation code.

        With the envelope at hand, a wait that hears nothing for ``resubmit_after`` (see ``Deadlines``)
        sends it again and keeps waiting, up to ``timeout`` in all; a gateway peer that restarts
        meanwhile is waited for too.
        """
        timeout = self._conn.deadlines.commit_status if timeout is None else timeout
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        looked_again = False
        while True:
            left = give_up - loop.time()
            wait = left if self._transaction is None else min(left, self._conn.resubmit_after())
            try:
                response = await self._conn.stub.CommitStatus(self._signed_request, timeout=wait)
            except grpc.aio.AioRpcError as exc:
                error = self._conn.error(CommitStatusError, exc, self.transaction_id, timeout)
                if self._transaction is None or give_up - loop.time() < 0.2:
                    raise error from None
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    await self._resend(give_up - loop.time())
                elif error.unreachable:  # our own peer restarting: wait for it, then ask again
                    await asyncio.sleep(0.2)
                else:
                    raise error from None
                continue
            status = TransactionStatus(
                self.transaction_id, int(response.result), int(response.block_number)
            )
            if status.code == transaction_pb2.DUPLICATE_TXID and not looked_again:
                # A copy sent again was reported as the duplicate of an earlier one (in the same block):
                # the ledger's transaction index holds the first copy, whose code a second look reports.
                looked_again = True
                continue
            if self.submitted_at is not None:
                self._conn.commit_times.append(loop.time() - self.submitted_at)
            return status

    async def _resend(self, left: float) -> None:
        assert self._transaction is not None
        self.resubmissions += 1
        try:
            await self._transaction.send(min(self._conn.deadlines.submit, max(0.1, left)))
        except SubmitError:
            pass  # the next wait (and resend) tries again; the overall deadline bounds it


class ChaincodeEventStream:
    """Async iterator over chaincode events; ``close()`` (or leaving ``async with``) ends the stream."""

    def __init__(
        self,
        conn: _Connection,
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
