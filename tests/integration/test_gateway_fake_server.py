"""The Gateway client against an in-process TEST DOUBLE of a Fabric peer's gateway service.

``FakeFabricGateway`` is not Fabric: it is a stand-in so the client's wire behaviour can be tested
without Fabric binaries. It is strict where a real peer is strict — every signature is verified against
the certificate in the creator (``msp.SerializedIdentity``), creators must be issued by the org CA, the
tx id must be sha256(nonce + creator), signatures must be low-S — and it assembles the prepared
transaction the way Fabric's gateway does (``internal/pkg/gateway/submit.go: prepareTransaction``).
Ordering is simulated by cutting a block every few milliseconds; chaincode is a handful of functions.
The real-peer integration test comes once the Fabric binaries are built.

Everything binds 127.0.0.1 on free ports; TLS certificates are generated per test module.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from network.checkpoint import FileCheckpointer
from network.gateway import ChaincodeEvent, Deadlines, Gateway
from network.gateway_errors import (
    STATUS_DETAILS_KEY,
    CommitError,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    GatewayError,
    encode_status_details,
)
from network.gateway_sync import SyncGateway
from network.identity import FABRIC_CA_ATTRS_OID, Identity, Signer, certificate_role

CHANNEL = "twinledger"
MSP_ID = "Hospital1MSP"
P256_HALF_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 // 2


# --------------------------------------------------------------------------------------------------
# Certificates: an org CA (identities) and a TLS CA (server and client TLS certs), as Fabric keeps them.
# --------------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey

    @classmethod
    def new(cls, name: str) -> Pki:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        attrs: dict[str, str] | None = None,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
        server: bool = False,
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """Certificate and PKCS#8 key, both PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if attrs is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(FABRIC_CA_ATTRS_OID, json.dumps({"attrs": attrs}).encode()),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --------------------------------------------------------------------------------------------------
# The test double.
# --------------------------------------------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Endorsed:
    chaincode: str
    function: str
    args: list[bytes]
    validation_code: int
    event: chaincode_event_pb2.ChaincodeEvent | None
    writes: dict[str, bytes]


@dataclass
class Block:
    number: int
    transactions: list[tuple[str, int, chaincode_event_pb2.ChaincodeEvent | None]]


@dataclass
class Counters:
    proposal_signatures: int = 0
    envelope_signatures: int = 0
    commit_status_signatures: int = 0
    events_signatures: int = 0
    endorsing_orgs: list[list[str]] = field(default_factory=list)


class FakeFabricGateway(gateway_pb2_grpc.GatewayServicer):
    """TEST DOUBLE of the Fabric peer's ``gateway.Gateway`` service (see the module docstring).

    Chaincode functions (any chaincode name): ``put key value`` (writes on commit, emits event "Put"
    with the key as payload), ``get key``, ``whoami`` (creator's MSP ID and role attribute), ``fn_name``
    (the function name as received, to check contract-name qualification), ``transient KEY``,
    ``denied`` (fails endorsement with an ErrorDetail, like a chaincode 500), ``conflict`` (endorses but
    commits as MVCC_READ_CONFLICT) and ``slow`` (never answers in time).
    Must be created on the event loop that serves it.
    """

    def __init__(self, org_ca: x509.Certificate, address: str, block_interval: float = 0.02) -> None:
        self._org_ca = org_ca
        self.address = address
        self._block_interval = block_interval
        self._peer_key = ec.generate_private_key(ec.SECP256R1())  # signs the double's endorsements
        self._peer_creator = identities_pb2.SerializedIdentity(mspid=MSP_ID, id_bytes=b"peer0").SerializeToString()
        self.counters = Counters()
        self.state: dict[str, bytes] = {}
        self.blocks: list[Block] = [Block(0, [])]  # block 0 stands for the genesis (config) block
        self._endorsed: dict[str, Endorsed] = {}
        self._to_order: list[str] = []
        self._cutter: asyncio.TimerHandle | None = None
        self._committed: dict[str, tuple[int, int]] = {}
        self._commit_waiters: dict[str, asyncio.Event] = {}
        self._new_block = asyncio.Event()
        self._verified_creators: dict[bytes, bytes] = {}

    # -- verification, as strict as a peer ----------------------------------------------------------

    def _creator_cert(self, creator: bytes) -> bytes:
        if creator in self._verified_creators:
            return self._verified_creators[creator]
        identity = identities_pb2.SerializedIdentity.FromString(creator)
        if identity.mspid != MSP_ID:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, f"unknown MSP {identity.mspid!r}")
        cert = x509.load_pem_x509_certificate(identity.id_bytes)
        ca_key = self._org_ca.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        try:
            ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "creator certificate not issued by the MSP CA") from None
        self._verified_creators[creator] = bytes(identity.id_bytes)
        return bytes(identity.id_bytes)

    def _verify(self, creator: bytes, data: bytes, signature: bytes) -> None:
        cert_pem = self._creator_cert(creator)
        public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        try:
            _, s = decode_dss_signature(signature)
        except ValueError:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "signature is not DER") from None
        if s > P256_HALF_ORDER:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "invalid S. Must be smaller than half the order")
        try:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "signature verification failed") from None

    def _open_proposal(
        self, signed: proposal_pb2.SignedProposal, request_tx_id: str, request_channel: str
    ) -> tuple[common_pb2.Header, proposal_pb2.ChaincodeProposalPayload, str, list[bytes], bytes]:
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
        signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
        self._verify(signature_header.creator, signed.proposal_bytes, signed.signature)
        self.counters.proposal_signatures += 1
        if channel_header.type != common_pb2.ENDORSER_TRANSACTION or channel_header.epoch != 0:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "not an endorser transaction")
        if channel_header.channel_id != CHANNEL or request_channel != CHANNEL:
            raise Rejected(grpc.StatusCode.NOT_FOUND, f"channel {channel_header.channel_id} not found")
        if not channel_header.timestamp.seconds:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "proposal has no timestamp")
        if len(signature_header.nonce) != 24:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "nonce must be 24 bytes")
        expected = hashlib.sha256(signature_header.nonce + signature_header.creator).hexdigest()
        if channel_header.tx_id != expected or request_tx_id != expected:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"incorrectly computed txid {channel_header.tx_id}")
        payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
        extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
        if extension.chaincode_id.name != spec.chaincode_id.name or not spec.chaincode_id.name:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "chaincode id mismatch")
        return header, payload, spec.chaincode_id.name, list(spec.input.args), signature_header.creator

    async def _reject(self, context: grpc.aio.ServicerContext[Any, Any], error: Rejected) -> None:
        await context.abort(error.code, str(error))

    # -- the "chaincode" ----------------------------------------------------------------------------

    async def _execute(
        self, context: grpc.aio.ServicerContext[Any, Any], chaincode: str, args: list[bytes], transient: dict[str, bytes],
        creator: bytes, tx_id: str,
    ) -> tuple[Endorsed, bytes]:
        function = args[0].decode()
        name = function.split(":", 1)[-1]
        params = args[1:]
        event = None
        writes: dict[str, bytes] = {}
        code = transaction_pb2.VALID
        if name == "put":
            writes[params[0].decode()] = params[1]
            event = chaincode_event_pb2.ChaincodeEvent(
                chaincode_id=chaincode, tx_id=tx_id, event_name="Put", payload=params[0]
            )
            result = params[1]
        elif name == "get":
            result = self.state.get(params[0].decode(), b"")
        elif name == "whoami":
            cert_pem = self._creator_cert(creator)
            result = f"{MSP_ID}:{certificate_role(cert_pem)}".encode()
        elif name == "fn_name":
            result = function.encode()
        elif name == "transient":
            result = transient.get(params[0].decode(), b"")
        elif name == "denied":
            status = encode_status_details(
                grpc.StatusCode.ABORTED,
                "failed to endorse transaction, see attached details for more info",
                [ErrorDetail(self.address, MSP_ID, "chaincode response 500, access denied: role client may not grant")],
            )
            await context.abort(
                grpc.StatusCode.ABORTED,
                "failed to endorse transaction, see attached details for more info",
                trailing_metadata=((STATUS_DETAILS_KEY, status),),
            )
        elif name == "conflict":
            code = transaction_pb2.MVCC_READ_CONFLICT
            result = b"stale"
        elif name == "slow":
            await asyncio.sleep(30)
            result = b""
        else:
            await context.abort(grpc.StatusCode.UNKNOWN, f"chaincode response 500, unknown function {function}")
        return Endorsed(chaincode, function, args, code, event, writes), result

    # -- gateway.Gateway ----------------------------------------------------------------------------

    async def Evaluate(self, request: gateway_pb2.EvaluateRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            _, payload, chaincode, args, creator = self._open_proposal(
                request.proposed_transaction, request.transaction_id, request.channel_id
            )
        except Rejected as error:
            await self._reject(context, error)
        _, result = await self._execute(context, chaincode, args, dict(payload.TransientMap), creator, request.transaction_id)
        return gateway_pb2.EvaluateResponse(result=proposal_response_pb2.Response(status=200, payload=result))

    async def Endorse(self, request: gateway_pb2.EndorseRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            header, payload, chaincode, args, creator = self._open_proposal(
                request.proposed_transaction, request.transaction_id, request.channel_id
            )
        except Rejected as error:
            await self._reject(context, error)
        self.counters.endorsing_orgs.append(list(request.endorsing_organizations))
        endorsed, result = await self._execute(context, chaincode, args, dict(payload.TransientMap), creator, request.transaction_id)
        self._endorsed[request.transaction_id] = endorsed

        # Assembled as Fabric's gateway does (prepareTransaction): transient data stripped, the
        # proposal's header reused, one action carrying the endorsed proposal response.
        action = proposal_pb2.ChaincodeAction(
            results=b"rwset",
            events=endorsed.event.SerializeToString() if endorsed.event else b"",
            response=proposal_response_pb2.Response(status=200, payload=result),
            chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode),
        )
        response_payload = proposal_response_pb2.ProposalResponsePayload(
            proposal_hash=hashlib.sha256(request.proposed_transaction.proposal_bytes).digest(),
            extension=action.SerializeToString(),
        ).SerializeToString()
        endorsement = proposal_response_pb2.Endorsement(
            endorser=self._peer_creator,
            signature=self._peer_key.sign(response_payload + self._peer_creator, ec.ECDSA(hashes.SHA256())),
        )
        action_payload = transaction_pb2.ChaincodeActionPayload(
            chaincode_proposal_payload=proposal_pb2.ChaincodeProposalPayload(input=payload.input).SerializeToString(),
            action=transaction_pb2.ChaincodeEndorsedAction(
                proposal_response_payload=response_payload, endorsements=[endorsement]
            ),
        )
        transaction = transaction_pb2.Transaction(
            actions=[transaction_pb2.TransactionAction(header=header.signature_header, payload=action_payload.SerializeToString())]
        )
        envelope = common_pb2.Envelope(
            payload=common_pb2.Payload(header=header, data=transaction.SerializeToString()).SerializeToString()
        )
        return gateway_pb2.EndorseResponse(prepared_transaction=envelope)

    async def Submit(self, request: gateway_pb2.SubmitRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        envelope = request.prepared_transaction
        if not envelope.signature:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prepared transaction must be signed")
        payload = common_pb2.Payload.FromString(envelope.payload)
        signature_header = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
        channel_header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        try:
            self._verify(signature_header.creator, envelope.payload, envelope.signature)
        except Rejected as error:
            await self._reject(context, error)
        self.counters.envelope_signatures += 1
        if channel_header.tx_id != request.transaction_id or request.transaction_id not in self._endorsed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transaction was not endorsed here")
        self._to_order.append(request.transaction_id)
        if self._cutter is None:
            # Like an orderer's batch timeout: transactions arriving close together share a block.
            self._cutter = asyncio.get_running_loop().call_later(self._block_interval, self._cut_block)
        return gateway_pb2.SubmitResponse()

    def _cut_block(self) -> None:
        self._cutter = None
        block = Block(len(self.blocks), [])
        for tx_id in self._to_order:
            endorsed = self._endorsed.pop(tx_id)
            if endorsed.validation_code == transaction_pb2.VALID:
                self.state.update(endorsed.writes)
            block.transactions.append((tx_id, endorsed.validation_code, endorsed.event))
            self._committed[tx_id] = (endorsed.validation_code, block.number)
            self._commit_waiters.setdefault(tx_id, asyncio.Event()).set()
        self._to_order = []
        self.blocks.append(block)
        self._new_block.set()
        self._new_block = asyncio.Event()

    async def CommitStatus(self, request: gateway_pb2.SignedCommitStatusRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
        try:
            self._verify(inner.identity, request.request, request.signature)
        except Rejected as error:
            await self._reject(context, error)
        self.counters.commit_status_signatures += 1
        if inner.channel_id != CHANNEL:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"channel {inner.channel_id} not found")
        await self._commit_waiters.setdefault(inner.transaction_id, asyncio.Event()).wait()
        code, block = self._committed[inner.transaction_id]
        return gateway_pb2.CommitStatusResponse(result=code, block_number=block)

    async def ChaincodeEvents(
        self, request: gateway_pb2.SignedChaincodeEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.ChaincodeEventsResponse]:
        inner = gateway_pb2.ChaincodeEventsRequest.FromString(request.request)
        try:
            self._verify(inner.identity, request.request, request.signature)
        except Rejected as error:
            await self._reject(context, error)
        self.counters.events_signatures += 1
        position = inner.start_position.WhichOneof("Type")
        tx_blocks = {tx: n for b in self.blocks for n, tx in [(b.number, t[0]) for t in b.transactions]}
        if inner.after_transaction_id and inner.after_transaction_id in tx_blocks:
            next_block = tx_blocks[inner.after_transaction_id]
        elif position in (None, "next_commit"):
            next_block = len(self.blocks)
        elif position == "specified":
            next_block = inner.start_position.specified.number
        else:  # Fabric's gateway refuses "oldest" and "newest" for chaincode events
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid start position type: {position}")
        passed_previous = not inner.after_transaction_id
        while True:
            while next_block >= len(self.blocks):
                await self._new_block.wait()
            block = self.blocks[next_block]
            events = []
            for tx_id, code, event in block.transactions:
                if not passed_previous:
                    passed_previous = tx_id == inner.after_transaction_id
                    continue
                if event is not None and code == transaction_pb2.VALID and event.chaincode_id == inner.chaincode_id:
                    events.append(event)
            if events:
                yield gateway_pb2.ChaincodeEventsResponse(block_number=block.number, events=events)
            next_block += 1


# --------------------------------------------------------------------------------------------------
# Running the double on its own loop in a thread, so clients (async or sync) use separate loops.
# --------------------------------------------------------------------------------------------------


class ServerThread:
    def __init__(self, org_ca: x509.Certificate, credentials: grpc.ServerCredentials) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: grpc.aio.Server
        self.double: FakeFabricGateway

        async def start() -> int:
            self.server = grpc.aio.server()
            port = self.server.add_secure_port("127.0.0.1:0", credentials)
            self.double = FakeFabricGateway(org_ca, f"127.0.0.1:{port}")
            gateway_pb2_grpc.add_GatewayServicer_to_server(self.double, self.server)
            await self.server.start()
            return port

        self.port = self.run(start())
        self.address = f"127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Env:
    server: ServerThread
    tls_ca_pem: bytes
    identity: Identity
    signer: Signer
    client_tls: tuple[bytes, bytes]
    org: Pki
    tls: Pki

    @property
    def double(self) -> FakeFabricGateway:
        return self.server.double

    def connect(self, **kwargs: Any) -> Gateway:
        params: dict[str, Any] = dict(
            identity=self.identity,
            signer=self.signer,
            tls_root_cert_pem=self.tls_ca_pem,
            peer_names={self.server.address: "peer0.hospital1"},
        )
        params.update(kwargs)
        return Gateway.connect(self.server.address, **params)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    org, tls = Pki.new("ca.hospital1"), Pki.new("tlsca.hospital1")
    server_cert, server_key = tls.issue("peer0.hospital1", dns=["peer0.hospital1", "localhost"], ips=["127.0.0.1"], server=True)
    user_cert, user_key = org.issue("steward1", attrs={"hf.EnrollmentID": "steward1", "role": "steward"})
    credentials = grpc.ssl_server_credentials([(server_key, server_cert)])
    server = ServerThread(org.ca_cert, credentials)
    try:
        yield Env(
            server=server,
            tls_ca_pem=tls.ca_pem,
            identity=Identity(MSP_ID, user_cert),
            signer=Signer.from_pem(user_key),
            client_tls=tls.issue("steward1-tls", client=True),
            org=org,
            tls=tls,
        )
    finally:
        server.stop()


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run an async test body on a fresh client loop (pytest-asyncio is not a dependency)."""
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=60))


# --------------------------------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------------------------------


def test_evaluate(env: Env) -> None:
    async def body() -> None:
        async with env.connect() as gateway:
            contract = gateway.network(CHANNEL).contract("basic")
            assert await contract.evaluate("whoami") == b"Hospital1MSP:steward"
            named = gateway.network(CHANNEL).contract("basic", "Assets")
            assert await named.evaluate("fn_name") == b"Assets:fn_name"
            assert await contract.evaluate("transient", "k", transient={"k": b"private"}) == b"private"

    before = env.double.counters.proposal_signatures
    run(body)
    assert env.double.counters.proposal_signatures == before + 3


def test_submit_end_to_end(env: Env) -> None:
    async def body() -> None:
        async with env.connect() as gateway:
            contract = gateway.network(CHANNEL).contract("basic")
            assert await contract.submit("put", "asset1", b"\x00value") == b"\x00value"
            assert await contract.evaluate("get", "asset1") == b"\x00value"
            await contract.submit("put", "asset2", "v2", endorsing_orgs=["Hospital1MSP"])

    counters = env.double.counters
    before = (counters.envelope_signatures, counters.commit_status_signatures)
    run(body)
    assert (counters.envelope_signatures, counters.commit_status_signatures) == (before[0] + 2, before[1] + 2)
    assert counters.endorsing_orgs[-1] == ["Hospital1MSP"]


def test_step_by_step(env: Env) -> None:
    async def body() -> None:
        async with env.connect() as gateway:
            proposal = gateway.network(CHANNEL).contract("basic").new_proposal("put", "asset3", "v3")
            transaction = await proposal.endorse()
            assert transaction.transaction_id == proposal.transaction_id
            assert transaction.result == b"v3"
            commit = await transaction.submit()
            status = await commit.status()
            assert status.successful and status.code_name == "VALID"
            assert status.transaction_id == proposal.transaction_id
            assert status.block_number > 0

    run(body)


def test_200_concurrent_submissions(env: Env) -> None:
    async def body() -> float:
        async with env.connect() as gateway:
            contract = gateway.network(CHANNEL).contract("basic")
            start = time.monotonic()
            results = await asyncio.gather(*(contract.submit("put", f"bulk{i}", f"value{i}") for i in range(200)))
            elapsed = time.monotonic() - start
            assert results == [f"value{i}".encode() for i in range(200)]
            return elapsed

    blocks_before = len(env.double.blocks)
    elapsed = run(body)
    assert all(env.double.state[f"bulk{i}"] == f"value{i}".encode() for i in range(200))
    # In flight together, some shared a block (how many depends on machine load, so only "some").
    assert len(env.double.blocks) - blocks_before < 200
    assert elapsed < 20


def test_commit_error_names_validation_code(env: Env) -> None:
    async def body() -> None:
        async with env.connect() as gateway:
            with pytest.raises(CommitError) as caught:
                await gateway.network(CHANNEL).contract("basic").submit("conflict")
            assert caught.value.validation_name == "MVCC_READ_CONFLICT"
            assert "MVCC_READ_CONFLICT" in str(caught.value)

    run(body)


def test_endorse_error_carries_peer_details(env: Env) -> None:
    async def body() -> None:
        async with env.connect() as gateway:
            with pytest.raises(EndorseError) as caught:
                await gateway.network(CHANNEL).contract("basic").submit("denied")
            assert str(caught.value) == (
                f"endorse failed: peer0.hospital1 (Hospital1MSP @{env.server.address}): "
                "chaincode response 500, access denied: role client may not grant"
            )
            assert caught.value.code == grpc.StatusCode.ABORTED
            with pytest.raises(EvaluateError, match="UNKNOWN: chaincode response 500, unknown function nope"):
                await gateway.network(CHANNEL).contract("basic").evaluate("nope")
            with pytest.raises(EvaluateError, match="NOT_FOUND: channel elsewhere not found"):
                await gateway.network("elsewhere").contract("basic").evaluate("whoami")

    run(body)


def test_double_rejects_bad_signatures(env: Env) -> None:
    """Guards the double itself: a tampered signature must not pass, or the other tests prove nothing."""

    async def body() -> None:
        async with env.connect() as gateway:
            proposal = gateway.network(CHANNEL).contract("basic").new_proposal("whoami")
            other = Signer(ec.generate_private_key(ec.SECP256R1()))
            proposal.signed_proposal.signature = other.sign(proposal.proposal_bytes)
            with pytest.raises(EvaluateError, match="PERMISSION_DENIED: signature verification failed"):
                await proposal.evaluate()

    run(body)


def test_sync_wrapper_from_script_and_inside_asyncio(env: Env) -> None:
    params: dict[str, Any] = dict(
        identity=env.identity,
        signer=env.signer,
        tls_root_cert_pem=env.tls_ca_pem,
    )
    with SyncGateway.connect(env.server.address, **params) as gateway:
        contract = gateway.network(CHANNEL).contract("basic")
        assert contract.submit("put", "sync1", "s1") == b"s1"
        assert contract.evaluate("get", "sync1") == b"s1"
        commit = contract.submit_async("put", "sync2", "s2")
        assert commit.result == b"s2" and commit.status().successful

    with SyncGateway.connect(env.server.address, **params) as gateway:
        network = gateway.network(CHANNEL)
        status = network.contract("sync-cc").submit_async("put", "se1", "v").status()
        events = network.chaincode_events("sync-cc", start_block=status.block_number)
        assert next(events).payload == b"se1"
        # close() from another thread ends an iteration that is blocked waiting for the next event.
        rest: list[ChaincodeEvent] = []
        reader = threading.Thread(target=lambda: rest.extend(events))
        reader.start()
        time.sleep(0.1)
        events.close()
        reader.join(timeout=5)
        assert not reader.is_alive() and rest == []

    async def inside_another_loop() -> bytes:
        # Blocking calls from a coroutine (e.g. a Flower or asyncua callback) still work because the
        # wrapper's calls run on its own loop thread.
        with SyncGateway.connect(env.server.address, **params) as gateway:
            return gateway.network(CHANNEL).contract("basic").evaluate("get", "sync2")

    assert asyncio.run(inside_another_loop()) == b"s2"


def test_plain_text_client_is_refused_clearly(env: Env) -> None:
    async def body() -> None:
        async with env.connect(insecure=True) as gateway:
            with pytest.raises(GatewayError) as caught:
                await gateway.network(CHANNEL).contract("basic").evaluate("whoami", timeout=5)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        message = str(caught.value)
        assert message.startswith("evaluate failed: UNAVAILABLE")
        assert f"cannot reach the Fabric gateway at {env.server.address}" in message
        assert "Fabric peers only accept TLS" in message

    run(body)


def test_untrusted_server_certificate_is_refused(env: Env) -> None:
    async def body() -> None:
        async with env.connect(tls_root_cert_pem=Pki.new("rogue").ca_pem) as gateway:
            with pytest.raises(EvaluateError) as caught:
                await gateway.network(CHANNEL).contract("basic").evaluate("whoami", timeout=5)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE

    run(body)


def test_tls_is_required_unless_insecure_is_explicit(env: Env) -> None:
    with pytest.raises(ValueError, match="tls_root_cert_pem"):
        Gateway.connect(env.server.address, identity=env.identity, signer=env.signer)


def test_deadline_exceeded_is_clear(env: Env) -> None:
    async def body() -> None:
        async with env.connect(deadlines=Deadlines(evaluate=0.3)) as gateway:
            start = time.monotonic()
            with pytest.raises(EvaluateError) as caught:
                await gateway.network(CHANNEL).contract("basic").evaluate("slow")
            assert time.monotonic() - start < 3
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "within 0.3s" in str(caught.value)

    run(body)


def test_mutual_tls_and_server_name_override(env: Env) -> None:
    # A peer with clientAuthRequired: its certificate names only peer0.hospital1, so dialling
    # 127.0.0.1 needs the server name override, and the client must present a TLS certificate.
    cert, key = env.tls.issue("peer0.hospital1", dns=["peer0.hospital1"], server=True)
    credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=env.tls_ca_pem, require_client_auth=True)
    server = ServerThread(env.org.ca_cert, credentials)
    client_cert, client_key = env.client_tls
    try:

        async def body() -> None:
            mtls = Gateway.connect(
                server.address,
                identity=env.identity,
                signer=env.signer,
                tls_root_cert_pem=env.tls_ca_pem,
                client_cert_pem=client_cert,
                client_key_pem=client_key,
                server_name_override="peer0.hospital1",
            )
            async with mtls:
                assert await mtls.network(CHANNEL).contract("basic").evaluate("whoami") == b"Hospital1MSP:steward"
            no_client_cert = Gateway.connect(
                server.address,
                identity=env.identity,
                signer=env.signer,
                tls_root_cert_pem=env.tls_ca_pem,
                server_name_override="peer0.hospital1",
            )
            async with no_client_cert:
                with pytest.raises(EvaluateError) as caught:
                    await no_client_cert.network(CHANNEL).contract("basic").evaluate("whoami", timeout=5)
                assert caught.value.code == grpc.StatusCode.UNAVAILABLE

        run(body)
    finally:
        server.stop()


def test_chaincode_events_resume_after_checkpoint(env: Env, tmp_path: Path) -> None:
    checkpoint_path = tmp_path / "events.json"

    async def next_events(stream: AsyncIterator[ChaincodeEvent], count: int) -> list[ChaincodeEvent]:
        return [await asyncio.wait_for(stream.__anext__(), timeout=10) for _ in range(count)]

    async def body() -> None:
        async with env.connect() as gateway:
            network = gateway.network(CHANNEL)
            contract = network.contract("events-cc")
            await contract.submit("put", "before", "x")  # committed before listening: not delivered

            checkpointer = FileCheckpointer(checkpoint_path)
            async with network.chaincode_events("events-cc", checkpoint=checkpointer) as stream:
                # Default start is the next block, so the stream must be open before submitting:
                # wait until the double has accepted the request (it fixes the start block then).
                accepted = env.double.counters.events_signatures
                first = asyncio.ensure_future(next_events(stream, 3))
                while env.double.counters.events_signatures == accepted:
                    await asyncio.sleep(0.01)
                for i in range(5):
                    await contract.submit("put", f"ev{i}", "v")
                    await network.contract("other-cc").submit("put", f"noise{i}", "n")  # filtered out
                seen = await first
                for event in seen:
                    checkpointer.checkpoint_event(event)  # "processed"
            assert [e.payload for e in seen] == [b"ev0", b"ev1", b"ev2"]
            assert all(e.event_name == "Put" and e.chaincode_name == "events-cc" for e in seen)

            # A restart: a new checkpointer reads the file and resumes after the last processed event.
            resumed = FileCheckpointer(checkpoint_path)
            assert resumed.transaction_id == seen[-1].transaction_id
            async with network.chaincode_events("events-cc", checkpoint=resumed) as stream:
                rest = await next_events(stream, 2)
                assert [e.payload for e in rest] == [b"ev3", b"ev4"]
                later = asyncio.ensure_future(next_events(stream, 1))
                await contract.submit("put", "ev5", "v")
                assert [e.payload for e in await later] == [b"ev5"]

            # Replaying history needs an explicit start block (Fabric refuses "oldest").
            async with network.chaincode_events("events-cc", start_block=0) as stream:
                replay = await next_events(stream, 2)
                assert [e.payload for e in replay] == [b"before", b"ev0"]

    run(body)
