"""A Fabric peer's side of the chaincode-as-a-service protocol, for driving ``python -m chaincode.server``.

TEST DOUBLE support: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric
binaries can be built here. This is the peer as a CCaaS chaincode sees it (Fabric's core/chaincode
Handler), not the peer as clients see it (that is ``service.py``): ``FakePeer`` dials the chaincode
over (mutual) TLS and opens ``protos.Chaincode/Connect``; the chaincode sends REGISTER with its package
ID; the peer answers REGISTERED then READY; then it sends TRANSACTION messages carrying a
ChaincodeInput and a SignedProposal built like a Fabric client builds one (SerializedIdentity creator
whose certificate carries the Fabric CA role attribute, and a transient map when given), answers the
chaincode's GET_STATE / PUT_STATE / range-query / private-data / metadata / history requests from
dicts (reads see committed state only; writes are kept per transaction and committed only by
``submit`` for a successful response) and waits for COMPLETED or ERROR. No endorsement signing, MVCC
or ordering: what it measures or tests is the chaincode process and the wire between peer and chaincode.

``make_pki`` issues the TLS material (server key pair, a peer client certificate the server trusts, one
it does not) and users enrolled like Fabric CA enrols them; ``start_server`` runs the chaincode server
on a free port and ``ServerProcess.stop`` ends it (SIGTERM, then SIGKILL).
Used by tests/integration/test_chaincode_service.py and bench/governance.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_protos.common import common_pb2
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
)
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from tests.fabric_double.process import terminate

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


def make_pki(folder: Path) -> Pki:
    """TLS material for the chaincode server and its peer (files in folder), and three enrolled users."""
    folder.mkdir(parents=True, exist_ok=True)
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
        return terminate(self.process)


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
    if reply.type != Message.COMPLETED:
        raise AssertionError(f"expected COMPLETED, got {Message.Type.Name(reply.type)}: {reply.payload!r}")
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
