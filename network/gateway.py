"""Python client of the Fabric Gateway service (``gateway.Gateway``, served by every Fabric v3 peer).

It follows the official Fabric Gateway SDKs' model: ``Gateway`` (one gRPC connection + one identity) →
``Network`` (a channel) → ``Contract`` (a chaincode, optionally one named contract in it). ``evaluate``
runs a query on one peer; ``submit`` endorses, orders and waits for the commit. The steps are also
available one by one (``Proposal`` → ``Transaction`` → ``Commit``), so a caller can keep many submissions
in flight at once: the peer's gateway does endorsement planning and ordering for us, and one HTTP/2
connection multiplexes all concurrent calls.

The API is asyncio (``grpc.aio``); ``network.gateway_sync`` wraps it for plain scripts. The steps after
endorsement live in ``network.gateway_commit`` (submit, commit status, ordering failover) and the event
stream in ``network.gateway_events``; everything is importable from here.

Example::

    identity, signer = load_msp_identity(".twinledger/net/crypto/hospital1/users/steward/msp", "Hospital1MSP")
    async with Gateway.connect("127.0.0.1:7051", identity=identity, signer=signer,
                               tls_root_cert_pem=Path(".../tlsca.pem")) as gateway:
        contract = gateway.network("twinledger").contract("dataaccess")
        await contract.submit("RegisterAsset", "ds1", "tabular", sha256_hex)
        print(await contract.evaluate("ReadAsset", "ds1"))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import proposal_pb2

from network.checkpoint import Checkpoint
from network.gateway_commit import Commit, Transaction, TransactionStatus
from network.gateway_connection import Connection, Deadlines
from network.gateway_errors import CommitError, EndorseError, EvaluateError
from network.gateway_events import ChaincodeEvent, ChaincodeEventStream
from network.gateway_proposal import Arg, build_proposal, new_transaction_context
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
        self._conn = Connection(
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

    def __init__(self, conn: Connection, name: str) -> None:
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
        self, conn: Connection, channel_name: str, chaincode_name: str, contract_name: str | None
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
        conn: Connection,
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
