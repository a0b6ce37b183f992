"""`python -m chaincode.server` as a real process, driven the way a Fabric peer drives a CCaaS chaincode.

The test is the peer: it dials the chaincode over mutual TLS and opens ``protos.Chaincode/Connect``;
the chaincode sends REGISTER with its package ID; the peer answers REGISTERED then READY; then it sends
TRANSACTION messages carrying a ChaincodeInput and a SignedProposal built like a Fabric client builds
one (SerializedIdentity creator whose certificate carries the Fabric CA role attribute, and a transient
map when given), answers the chaincode's GET_STATE / PUT_STATE / range-query requests from a dict
(reads see committed state only, writes are kept per transaction and committed only for a successful
submit), and waits for COMPLETED or ERROR — the message flow of Fabric's core/chaincode handler.
For the data-governance contracts it also answers private data requests (GET_STATE / PUT_STATE with a
collection, GET_PRIVATE_DATA_HASH), key metadata (PUT_STATE_METADATA / GET_STATE_METADATA) and
GET_HISTORY_FOR_KEY, paged with QUERY_STATE_NEXT as the peer pages large results.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_protos.common import common_pb2
from fabric_protos.common import policies_pb2
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.msp import identities_pb2, msp_principal_pb2
from fabric_protos.peer import (
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
)
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Message = chaincode_shim_pb2.ChaincodeMessage
CHAINCODE_ID = "registry_1.0:" + hashlib.sha256(b"twinledger registry test package").hexdigest()
CHAINCODE_NAME = "registry"
CHANNEL = "twinledger"
ATTRIBUTES_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
STARTED_RE = re.compile(r"chaincode server started id=(\S+) address=(\S+):(\d+) tls=(\S+)")


# --- PKI -------------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class CA:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, subject: x509.Name, extensions: list[tuple[x509.ExtensionType, bool]]
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return key, builder.sign(self.key, hashes.SHA256())


@dataclass(frozen=True)
class Identity:
    """An enrolled user: MSP ID, signing key and certificate (as Fabric CA would issue it)."""

    msp_id: str
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes

    def serialized(self) -> bytes:
        return identities_pb2.SerializedIdentity(mspid=self.msp_id, id_bytes=self.cert_pem).SerializeToString()

    def sign(self, message: bytes) -> bytes:
        # Fabric accepts only low-S ECDSA signatures.
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
        return encode_dss_signature(r, min(s, P256_ORDER - s))


def enroll(ca: CA, msp_id: str, name: str, role: str, ou: str = "client") -> Identity:
    attrs = {"hf.Affiliation": "", "hf.EnrollmentID": name, "hf.Type": ou, "role": role}
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    key, cert = ca.issue(subject, [
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.UnrecognizedExtension(ATTRIBUTES_OID, json.dumps({"attrs": attrs}).encode()), False),
    ])
    return Identity(msp_id, key, _pem(cert))


@dataclass(frozen=True)
class Pki:
    server_ca_pem: bytes
    peer_tls: tuple[bytes, bytes]          # (key PEM, cert PEM) issued by the CA the chaincode trusts
    stranger_tls: tuple[bytes, bytes]      # a client cert from a CA the chaincode does not trust
    files: dict[str, str]
    admin: Identity
    steward: Identity
    plant_admin: Identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("chaincode-tls")
    server_ca, peer_ca, stranger_ca = CA("tls-ca.chaincode"), CA("tls-ca.peer"), CA("tls-ca.stranger")
    server_key, server_cert = server_ca.issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry.chaincode")]),
        [(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False),
         (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    client_ext = [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]
    peer_key, peer_cert = peer_ca.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer0.hospital1")]), client_ext)
    other_key, other_cert = stranger_ca.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]), client_ext)
    files = {
        "CHAINCODE_TLS_KEY_FILE": folder / "server.key",
        "CHAINCODE_TLS_CERT_FILE": folder / "server.crt",
        "CHAINCODE_TLS_CLIENT_CACERT_FILE": folder / "peer-ca.crt",
    }
    files["CHAINCODE_TLS_KEY_FILE"].write_bytes(_key_pem(server_key))
    files["CHAINCODE_TLS_CERT_FILE"].write_bytes(_pem(server_cert))
    files["CHAINCODE_TLS_CLIENT_CACERT_FILE"].write_bytes(_pem(peer_ca.cert))

    hospital_ca, plant_ca = CA("ca.hospital1"), CA("ca.plant1")
    return Pki(
        server_ca_pem=_pem(server_ca.cert),
        peer_tls=(_key_pem(peer_key), _pem(peer_cert)),
        stranger_tls=(_key_pem(other_key), _pem(other_cert)),
        files={k: str(v) for k, v in files.items()},
        admin=enroll(hospital_ca, "Hospital1MSP", "admin1", "admin", ou="admin"),
        steward=enroll(hospital_ca, "Hospital1MSP", "steward1", "steward"),
        plant_admin=enroll(plant_ca, "Plant1MSP", "admin1", "admin", ou="admin"),
    )


# --- the chaincode process -------------------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_server(log: Path, extra_env: dict[str, str]) -> ServerProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "CHAINCODE_ID": CHAINCODE_ID,
        # Port 0: the server binds a free port and logs it, so parallel runs never collide.
        "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0",
        **extra_env,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "chaincode.server"], cwd=REPO, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    server = ServerProcess(process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = STARTED_RE.search(server.log_text())
        if match:
            server.port = int(match.group(3))
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"chaincode server did not start:\n{server.log_text()}")


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("chaincode-log") / "server.log", pki.files)
    try:
        yield server
    finally:
        server.stop()


# --- the peer --------------------------------------------------------------------------------------


def signed_proposal(identity: Identity, args: list[bytes], transient: dict[str, bytes] | None = None
                    ) -> tuple[str, proposal_pb2.SignedProposal]:
    """A proposal as a Fabric client builds it (protoutil.CreateChaincodeProposalWithTxIDNonceAndTransient)."""
    creator = identity.serialized()
    nonce = os.urandom(24)
    tx_id = hashlib.sha256(nonce + creator).hexdigest()
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    cc_id = chaincode_pb2.ChaincodeID(name=CHAINCODE_NAME)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.ENDORSER_TRANSACTION, channel_id=CHANNEL, tx_id=tx_id, timestamp=timestamp,
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString(),
    )
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString(),
    )
    invocation = chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=chaincode_pb2.ChaincodeSpec(
        chaincode_id=cc_id, input=chaincode_pb2.ChaincodeInput(args=args)))
    payload = proposal_pb2.ChaincodeProposalPayload(input=invocation.SerializeToString(), TransientMap=transient or {})
    proposal_bytes = proposal_pb2.Proposal(header=header.SerializeToString(), payload=payload.SerializeToString()).SerializeToString()
    return tx_id, proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes, signature=identity.sign(proposal_bytes))


@dataclass
class _TxContext:
    done: asyncio.Future[Any]
    writes: dict[str, bytes | None] = field(default_factory=dict)
    private_writes: dict[tuple[str, str], bytes] = field(default_factory=dict)
    metadata_writes: dict[tuple[str, str], bytes] = field(default_factory=dict)
    timestamp: Timestamp = field(default_factory=Timestamp)


def proposal_timestamp(signed: proposal_pb2.SignedProposal) -> Timestamp:
    """The client's timestamp in the proposal (what the key history records), or zero if it has none."""
    try:
        header = common_pb2.Header.FromString(proposal_pb2.Proposal.FromString(signed.proposal_bytes).header)
        return common_pb2.ChannelHeader.FromString(header.channel_header).timestamp
    except DecodeError:  # test_failing_invoke_gets_an_immediate_error sends an undecodable proposal
        return Timestamp()


#: Results per page of a history query; small, so that a few versions already need QUERY_STATE_NEXT.
HISTORY_PAGE = 2


class FakePeer:
    """The peer's side of one chaincode stream (Fabric core/chaincode Handler), backed by a dict."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.state: dict[str, bytes] = {}
        self.private: dict[str, dict[str, bytes]] = {}
        self.metadata: dict[tuple[str, str], bytes] = {}
        self.history: dict[str, list[kv_query_result_pb2.KeyModification]] = {}
        self.requests: list[int] = []  # message types the chaincode sent, in order
        self._pages: dict[str, list[list[bytes]]] = {}
        self.registered_id = ""
        self._call: Any = None
        self._send_lock = asyncio.Lock()
        self._txs: dict[tuple[str, str], _TxContext] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._call = chaincode_shim_pb2_grpc.ChaincodeStub(self.channel).Connect()
        first = await asyncio.wait_for(self._call.read(), timeout=10)
        assert first.type == Message.REGISTER, first
        self.registered_id = chaincode_pb2.ChaincodeID.FromString(first.payload).name
        await self._send(Message(type=Message.REGISTERED))
        await self._send(Message(type=Message.READY))
        self._reader = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self._call:
            self._call.cancel()
        await self.channel.close()

    async def _send(self, message: Any) -> None:
        async with self._send_lock:  # serialSend: one write on the stream at a time
            await self._call.write(message)

    async def execute(self, identity: Identity, function: str, *args: str, timeout: float = 10.0,
                      transient: dict[str, bytes] | None = None) -> tuple[Any, _TxContext]:
        raw_args = [function.encode()] + [a.encode() for a in args]
        tx_id, proposal = signed_proposal(identity, raw_args, transient)
        message = Message(type=Message.TRANSACTION, txid=tx_id, channel_id=CHANNEL, proposal=proposal,
                          payload=chaincode_pb2.ChaincodeInput(args=raw_args).SerializeToString())
        return await self.send_transaction(message, timeout)

    async def send_transaction(self, message: Any, timeout: float = 10.0) -> tuple[Any, _TxContext]:
        context = _TxContext(asyncio.get_running_loop().create_future(), timestamp=proposal_timestamp(message.proposal))
        self._txs[(message.channel_id, message.txid)] = context
        await self._send(message)
        try:
            return await asyncio.wait_for(context.done, timeout), context
        finally:
            del self._txs[(message.channel_id, message.txid)]

    async def submit(self, identity: Identity, function: str, *args: str,
                     transient: dict[str, bytes] | None = None) -> tuple[Any, Any]:
        """Endorse, then commit the write set when the chaincode's response is a success."""
        reply, context = await self.execute(identity, function, *args, transient=transient)
        response = completed_response(reply)
        if response.status < 400:
            for key, value in context.writes.items():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value
                self.history.setdefault(key, []).append(kv_query_result_pb2.KeyModification(
                    tx_id=reply.txid, value=value or b"", timestamp=context.timestamp, is_delete=value is None))
            for (collection, key), value in context.private_writes.items():
                self.private.setdefault(collection, {})[key] = value
            self.metadata.update(context.metadata_writes)
        return reply, response

    async def _read_loop(self) -> None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return
            context = self._txs.get((message.channel_id, message.txid))
            if message.type in (Message.COMPLETED, Message.ERROR):
                if context and not context.done.done():
                    context.done.set_result(message)
                continue
            if context is None:
                await self._reply(message, Message.ERROR, b"no transaction context")
                continue
            await self._handle_request(message, context)

    async def _reply(self, request: Any, kind: int, payload: bytes = b"") -> None:
        await self._send(Message(type=kind, payload=payload, txid=request.txid, channel_id=request.channel_id))

    async def _handle_request(self, message: Any, context: _TxContext) -> None:
        self.requests.append(message.type)
        if message.type == Message.GET_STATE:
            request = chaincode_shim_pb2.GetState.FromString(message.payload)
            if request.collection:
                await self._reply(message, Message.RESPONSE, self.private.get(request.collection, {}).get(request.key, b""))
            else:
                await self._reply(message, Message.RESPONSE, self.state.get(request.key, b""))
        elif message.type == Message.PUT_STATE:
            request = chaincode_shim_pb2.PutState.FromString(message.payload)
            if request.collection:
                context.private_writes[(request.collection, request.key)] = request.value
            else:
                context.writes[request.key] = request.value
            await self._reply(message, Message.RESPONSE)
        elif message.type == Message.GET_PRIVATE_DATA_HASH:
            request = chaincode_shim_pb2.GetState.FromString(message.payload)
            value = self.private.get(request.collection, {}).get(request.key)
            await self._reply(message, Message.RESPONSE, hashlib.sha256(value).digest() if value is not None else b"")
        elif message.type == Message.PUT_STATE_METADATA:
            request = chaincode_shim_pb2.PutStateMetadata.FromString(message.payload)
            context.metadata_writes[(request.collection, request.key)] = request.metadata.value
            await self._reply(message, Message.RESPONSE)
        elif message.type == Message.GET_STATE_METADATA:
            request = chaincode_shim_pb2.GetStateMetadata.FromString(message.payload)
            value = self.metadata.get((request.collection, request.key))
            entries = [chaincode_shim_pb2.StateMetadata(metakey="VALIDATION_PARAMETER", value=value)] if value else []
            await self._reply(message, Message.RESPONSE,
                              chaincode_shim_pb2.StateMetadataResult(entries=entries).SerializeToString())
        elif message.type == Message.GET_HISTORY_FOR_KEY:
            key = chaincode_shim_pb2.GetHistoryForKey.FromString(message.payload).key
            # Newest first, as Fabric 2.x returns a key's history.
            results = [m.SerializeToString() for m in reversed(self.history.get(key, []))]
            pages = [results[i:i + HISTORY_PAGE] for i in range(0, len(results), HISTORY_PAGE)] or [[]]
            query_id = str(uuid.uuid4())
            self._pages[query_id] = pages[1:]
            await self._reply(message, Message.RESPONSE, self._page(query_id, pages[0]))
        elif message.type == Message.QUERY_STATE_NEXT:
            query_id = chaincode_shim_pb2.QueryStateNext.FromString(message.payload).id
            remaining = self._pages.get(query_id)
            if not remaining:
                await self._reply(message, Message.ERROR, f"query {query_id} has no more results".encode())
                return
            await self._reply(message, Message.RESPONSE, self._page(query_id, remaining.pop(0)))
        elif message.type == Message.DEL_STATE:
            context.writes[chaincode_shim_pb2.DelState.FromString(message.payload).key] = None
            await self._reply(message, Message.RESPONSE)
        elif message.type == Message.GET_STATE_BY_RANGE:
            request = chaincode_shim_pb2.GetStateByRange.FromString(message.payload)
            results = [
                chaincode_shim_pb2.QueryResultBytes(resultBytes=kv_query_result_pb2.KV(
                    namespace=CHAINCODE_NAME, key=key, value=value).SerializeToString())
                for key, value in sorted(self.state.items()) if request.startKey <= key < request.endKey
            ]
            response = chaincode_shim_pb2.QueryResponse(results=results, has_more=False, id=str(uuid.uuid4()))
            await self._reply(message, Message.RESPONSE, response.SerializeToString())
        elif message.type == Message.QUERY_STATE_CLOSE:
            query_id = chaincode_shim_pb2.QueryStateClose.FromString(message.payload).id
            self._pages.pop(query_id, None)
            await self._reply(message, Message.RESPONSE,
                              chaincode_shim_pb2.QueryResponse(has_more=False, id=query_id).SerializeToString())
        else:
            await self._reply(message, Message.ERROR, f"peer cannot handle message {message.type}".encode())

    def _page(self, query_id: str, results: list[bytes]) -> bytes:
        return chaincode_shim_pb2.QueryResponse(
            results=[chaincode_shim_pb2.QueryResultBytes(resultBytes=r) for r in results],
            has_more=bool(self._pages.get(query_id)), id=query_id,
        ).SerializeToString()


def completed_response(reply: Any) -> Any:
    assert reply.type == Message.COMPLETED, f"expected COMPLETED, got {Message.Type.Name(reply.type)}: {reply.payload!r}"
    return proposal_response_pb2.Response.FromString(reply.payload)


def tls_channel(server: ServerProcess, pki: Pki, client: tuple[bytes, bytes] | None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.server_ca_pem,
        private_key=client[0] if client else None,
        certificate_chain=client[1] if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials)


async def with_peer(server: ServerProcess, pki: Pki, scenario: Any) -> Any:
    peer = FakePeer(tls_channel(server, pki, pki.peer_tls))
    try:
        await peer.connect()
        return await scenario(peer)
    finally:
        await peer.close()


# --- tests -----------------------------------------------------------------------------------------


def test_started_with_mutual_tls_and_registers_its_package_id(tls_server: ServerProcess, pki: Pki) -> None:
    match = STARTED_RE.search(tls_server.log_text())
    assert match and match.group(1) == CHAINCODE_ID and match.group(2) == "127.0.0.1" and match.group(4) == "mutual"

    async def scenario(peer: FakePeer) -> str:
        return peer.registered_id

    assert asyncio.run(with_peer(tls_server, pki, scenario)) == CHAINCODE_ID


def test_admin_registers_org_and_event_reaches_peer(tls_server: ServerProcess, pki: Pki) -> None:
    async def scenario(peer: FakePeer) -> None:
        reply, response = await peer.submit(pki.admin, "RegisterOrg", "hospital1", "hospital")
        assert response.status == 200, response.message
        record = json.loads(response.payload)
        assert (record["name"], record["kind"], record["msp_id"]) == ("hospital1", "hospital", "Hospital1MSP")
        assert record["tx_id"] == reply.txid and record["registered_by"].startswith("x509::CN=admin1,OU=admin::")

        assert reply.chaincode_event.event_name == "OrgRegistered"
        assert json.loads(reply.chaincode_event.payload) == {"kind": "hospital", "msp_id": "Hospital1MSP", "name": "hospital1"}

        # Committed: readable by anyone, listed, and a second registration of the name is refused.
        read = completed_response((await peer.execute(pki.steward, "ReadOrg", "hospital1"))[0])
        assert json.loads(read.payload) == record
        listed = completed_response((await peer.execute(pki.steward, "registry:ListOrgs"))[0])
        assert json.loads(listed.payload) == [record]
        _, again = await peer.submit(pki.plant_admin, "RegisterOrg", "hospital1", "plant")
        assert again.status == 500 and "already registered" in again.message

    asyncio.run(with_peer(tls_server, pki, scenario))


def test_non_admin_is_denied_and_writes_nothing(tls_server: ServerProcess, pki: Pki) -> None:
    async def scenario(peer: FakePeer) -> None:
        reply, context = await peer.execute(pki.steward, "RegisterOrg", "hospital1", "hospital")
        response = completed_response(reply)
        assert response.status == 500
        assert "access denied: RegisterOrg needs role 'admin'" in response.message and "'steward'" in response.message
        assert context.writes == {} and not reply.HasField("chaincode_event")

    asyncio.run(with_peer(tls_server, pki, scenario))


def test_who_am_i_reads_the_certificate(tls_server: ServerProcess, pki: Pki) -> None:
    async def scenario(peer: FakePeer) -> dict[str, Any]:
        response = completed_response((await peer.execute(pki.steward, "WhoAmI"))[0])
        assert response.status == 200, response.message
        return json.loads(response.payload)

    who = asyncio.run(with_peer(tls_server, pki, scenario))
    assert (who["msp_id"], who["role"], who["common_name"]) == ("Hospital1MSP", "steward", "steward1")


def peer_policy_orgs(policy: bytes) -> dict[str, int]:
    """The MSP IDs (and roles) of a state-based endorsement policy, decoded as the peer's validator does."""
    envelope = policies_pb2.SignaturePolicyEnvelope.FromString(policy)
    roles = [msp_principal_pb2.MSPRole.FromString(i.principal) for i in envelope.identities]
    assert envelope.rule.n_out_of.n == len(roles)
    return {role.msp_identifier: role.role for role in roles}


def test_data_governance_uses_private_data_metadata_and_history(tls_server: ServerProcess, pki: Pki) -> None:
    """Data sets, grants, checks, audit and consent through the real shim: every new message type on the wire."""
    consent = {"pseudonym": "pt-42", "scope": "train:cardiac-v1", "status": "given", "salt": "9c" * 16}

    async def scenario(peer: FakePeer) -> None:
        async def ok(identity: Identity, function: str, *args: str, transient: dict[str, bytes] | None = None) -> Any:
            reply, response = await peer.submit(identity, function, *args, transient=transient)
            assert response.status == 200, f"{function}: {response.message}"
            return reply, json.loads(response.payload)

        await ok(pki.admin, "RegisterOrg", "hospital1", "hospital")
        await ok(pki.plant_admin, "RegisterOrg", "plant1", "plant")
        manifest = hashlib.sha256(b"uci heart disease manifest").hexdigest()
        await ok(pki.steward, "data:RegisterDataset", "uci-heart", "tabular", '{"rows":303}', manifest, "restricted")
        peer_role = msp_principal_pb2.MSPRole.PEER
        assert peer_policy_orgs(peer.metadata[("", "\x00dataset\x00uci-heart\x00")]) == {"Hospital1MSP": peer_role}

        await ok(pki.steward, "data:Grant", "uci-heart", "plant1", "read:aggregates", "2099-01-01T00:00:00Z")
        grant_key = "\x00grant\x00uci-heart\x00plant1\x00read:aggregates\x00"
        assert peer_policy_orgs(peer.metadata[("", grant_key)]) == {"Hospital1MSP": peer_role}
        reply, allowed = await ok(pki.plant_admin, "data:Check", "uci-heart", "read:aggregates")
        assert (allowed["allowed"], allowed["reason"], allowed["tx_id"]) == (True, "granted", reply.txid)
        assert reply.chaincode_event.event_name == "AccessChecked"
        await ok(pki.steward, "data:Revoke", "uci-heart", "plant1", "read:aggregates")
        _, denied = await ok(pki.plant_admin, "data:Check", "uci-heart", "read:aggregates")
        assert (denied["allowed"], denied["reason"]) == (False, "revoked")
        await ok(pki.steward, "data:Grant", "uci-heart", "plant1", "read:aggregates", "")

        # Audit reads the key history: the grant's three versions take two pages (QUERY_STATE_NEXT).
        audit = completed_response((await peer.execute(pki.plant_admin, "data:Audit", "uci-heart"))[0])
        assert audit.status == 200, audit.message
        entries = json.loads(audit.payload)["entries"]
        assert [(e["action"], e.get("reason")) for e in entries] == [
            ("registered", None), ("granted", None), ("access", "granted"), ("revoked", None),
            ("access", "revoked"), ("granted", None)]
        assert Message.GET_HISTORY_FOR_KEY in peer.requests and Message.QUERY_STATE_NEXT in peer.requests

        # Consent: the record travels in the transient map, lands in the implicit collection, and only
        # its hash can be checked by another org.
        reply, recorded = await ok(pki.steward, "consent:RecordConsent",
                                   transient={"consent": json.dumps(consent).encode()})
        stored = peer.private["_implicit_org_Hospital1MSP"]["\x00consent\x00pt-42\x00train:cardiac-v1\x00"]
        assert json.loads(stored)["status"] == "given"
        assert recorded["sha256"] == hashlib.sha256(stored).hexdigest()
        for public in (reply.payload, reply.chaincode_event.payload):
            assert b"pt-42" not in public and b"cardiac" not in public
        verify = completed_response((await peer.execute(pki.plant_admin, "consent:VerifyConsent", "hospital1", "pt-42",
                                                         "train:cardiac-v1", recorded["sha256"]))[0])
        assert json.loads(verify.payload) == {"hospital": "hospital1", "recorded": True, "match": True}
        assert Message.GET_PRIVATE_DATA_HASH in peer.requests
        read = completed_response((await peer.execute(pki.steward, "consent:ReadConsent", "pt-42", "train:cardiac-v1"))[0])
        assert json.loads(read.payload)["record"] == stored.decode()
        refused = completed_response((await peer.execute(pki.plant_admin, "consent:ReadConsent", "pt-42",
                                                          "train:cardiac-v1"))[0])
        assert refused.status == 500 and "ReadConsent is for hospitals" in refused.message

    asyncio.run(with_peer(tls_server, pki, scenario))


# 32 is the brief's figure; a 300-transaction burst is what reliably makes unserialized stream writes
# collide across processes (without compat's write lock some replies are lost and this test times out).
@pytest.mark.parametrize("count", [32, 300])
def test_concurrent_transactions_all_complete(tls_server: ServerProcess, pki: Pki, count: int) -> None:
    async def scenario(peer: FakePeer) -> list[Any]:
        assert (await peer.submit(pki.admin, "RegisterOrg", "hospital1", "hospital"))[1].status == 200
        calls = [("ReadOrg", "hospital1"), ("ListOrgs",), ("WhoAmI",), ("ReadOrg", "hospital1")] * (count // 4)
        replies = await asyncio.gather(*(peer.execute(pki.steward, *call) for call in calls))
        return [reply for reply, _ in replies]

    replies = asyncio.run(with_peer(tls_server, pki, scenario))
    assert len(replies) == count
    assert all(completed_response(reply).status == 200 for reply in replies)
    assert "TOO_MANY_OPERATIONS" not in tls_server.log_text()


def test_failing_invoke_gets_an_immediate_error(tls_server: ServerProcess, pki: Pki) -> None:
    async def scenario(peer: FakePeer) -> tuple[Any, float, Any]:
        # A proposal the shim cannot decode makes its invoke path raise before any contract code runs.
        broken = Message(type=Message.TRANSACTION, txid="broken-tx", channel_id=CHANNEL,
                         payload=chaincode_pb2.ChaincodeInput(args=[b"WhoAmI"]).SerializeToString(),
                         proposal=proposal_pb2.SignedProposal(proposal_bytes=b"\xff not a proposal", signature=b"x"))
        started = time.monotonic()
        reply, _ = await peer.send_transaction(broken, timeout=5)
        elapsed = time.monotonic() - started
        # The stream is still usable afterwards.
        after = completed_response((await peer.execute(pki.admin, "WhoAmI"))[0])
        return reply, elapsed, after

    reply, elapsed, after = asyncio.run(with_peer(tls_server, pki, scenario))
    assert reply.type == Message.ERROR and reply.txid == "broken-tx" and reply.channel_id == CHANNEL
    assert b"Error parsing message" in reply.payload
    assert elapsed < 2.0
    assert after.status == 200


@pytest.mark.parametrize("client", ["none", "untrusted"])
def test_peer_without_trusted_client_certificate_is_refused(tls_server: ServerProcess, pki: Pki, client: str) -> None:
    async def scenario() -> None:
        channel = tls_channel(tls_server, pki, None if client == "none" else pki.stranger_tls)
        try:
            call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await asyncio.wait_for(call.read(), timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await channel.close()

    asyncio.run(scenario())


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "plain.log", {})
    try:
        assert "tls=off" in server.log_text()

        async def connect_then_signal() -> None:
            peer = FakePeer(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))
            await peer.connect()
            try:
                server.process.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, server.process.wait, 10)
            finally:
                await peer.close()

        asyncio.run(connect_then_signal())
        assert server.process.returncode == 0
        assert "chaincode server stopped" in server.log_text() and "reason=SIGTERM" in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHAINCODE_ID": ""}, "CHAINCODE_ID is not set"),
        ({"CHAINCODE_SERVER_ADDRESS": "127.0.0.1"}, "is not host:port"),
        ({"CHAINCODE_TLS_KEY_FILE": "/nonexistent/key.pem", "CHAINCODE_TLS_CERT_FILE": "/nonexistent/cert.pem"},
         "CHAINCODE_TLS_KEY_FILE='/nonexistent/key.pem' cannot be read"),
    ],
)
def test_bad_config_is_one_clear_line(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chaincode.server"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
             "CHAINCODE_ID": CHAINCODE_ID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0", **env},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "chaincode.server"], cwd=REPO, capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
                 "CHAINCODE_ID": CHAINCODE_ID, "CHAINCODE_SERVER_ADDRESS": address},
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "chaincode server:" in line]
    assert len(errors) == 1 and f"cannot listen on {address}" in errors[0] and "Traceback" not in result.stderr
