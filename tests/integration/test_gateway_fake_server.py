"""The Gateway client against an in-process TEST DOUBLE of a Fabric peer's gateway service.

The double (``tests.fabric_double``) is not Fabric: it stands in for peers so the client's wire
behaviour can be tested without Fabric binaries. It is strict where a real peer is strict — every
signature is verified against the certificate in the creator (``msp.SerializedIdentity``), creators
must be issued by the org CA, the tx id must be sha256(nonce + creator), signatures must be low-S — and
it assembles the prepared transaction the way Fabric's gateway does. Ordering is simulated by cutting
a block every few milliseconds. Here the chaincode is a handful of toy functions (``ToyChaincode``),
so that the client's edge cases (denials, invalid commits, slow peers) are easy to provoke; the real
chaincode runs behind the same double in tests/integration/test_data_cli.py.

Everything binds 127.0.0.1 on free ports; TLS certificates are generated per test module.
"""

from __future__ import annotations

import asyncio
import datetime
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_protos.peer import chaincode_event_pb2, proposal_response_pb2, transaction_pb2

from network.checkpoint import FileCheckpointer
from network.gateway import ChaincodeEvent, Deadlines, Gateway
from network.gateway_errors import CommitError, EndorseError, EvaluateError, GatewayError
from network.gateway_sync import SyncGateway
from network.identity import FABRIC_CA_ATTRS_OID, Identity, Signer, certificate_role
from tests.fabric_double.channel import Channel
from tests.fabric_double.executor import Simulated
from tests.fabric_double.msp import Msp, MspRegistry
from tests.fabric_double.network import GatewayServers
from tests.fabric_double.proposal import PeerSigner, ProposalView
from tests.fabric_double.threaded import ServingThread

CHANNEL = "twinledger"
MSP_ID = "Hospital1MSP"


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
# The toy chaincode behind the double, and the double on its own loop.
# --------------------------------------------------------------------------------------------------


@dataclass
class ToyChaincode:
    """Functions (any chaincode name): ``put key value`` (writes on commit, emits event "Put" with the key
    as payload), ``get key``, ``whoami`` (creator's MSP ID and role attribute), ``fn_name`` (the function
    name as received, to check contract-name qualification), ``transient KEY``, ``denied`` (fails
    endorsement like a chaincode 500), ``conflict`` (endorses but commits as MVCC_READ_CONFLICT) and
    ``slow`` (never answers in time).
    """

    state: dict[str, bytes] = field(default_factory=dict)

    async def simulate(self, view: ProposalView) -> Simulated:
        function = view.args[0].decode()
        name = function.split(":", 1)[-1]
        params = view.args[1:]
        writes: dict[str, bytes] = {}
        event = None
        status, message, result, code = 200, "", b"", transaction_pb2.VALID
        if name == "put":
            writes[params[0].decode()] = result = params[1]
            event = chaincode_event_pb2.ChaincodeEvent(
                chaincode_id=view.chaincode, tx_id=view.tx_id, event_name="Put", payload=params[0])
        elif name == "get":
            result = self.state.get(params[0].decode(), b"")
        elif name == "whoami":
            result = f"{view.creator.msp_id}:{certificate_role(view.creator.certificate_pem)}".encode()
        elif name == "fn_name":
            result = function.encode()
        elif name == "transient":
            result = view.transient.get(params[0].decode(), b"")
        elif name == "denied":
            status, message = 500, "access denied: role client may not grant"
        elif name == "conflict":
            code, result = transaction_pb2.MVCC_READ_CONFLICT, b"stale"
        elif name == "slow":
            await asyncio.sleep(30)
        else:
            status, message = 500, f"unknown function {function}"

        def commit(block: int, number: int, endorsers: set[str]) -> int:
            if code == transaction_pb2.VALID:
                self.state.update(writes)
            return code

        return Simulated(proposal_response_pb2.Response(status=status, message=message, payload=result), event, commit)


class Double:
    """The double serving one peer (peer0.hospital1) with the toy chaincode, on its own loop thread."""

    def __init__(self, org: Pki, credentials: grpc.ServerCredentials) -> None:
        self.toy = ToyChaincode()
        peer_cert, peer_key = org.issue("peer0.hospital1")
        signer = PeerSigner(Identity(MSP_ID, peer_cert), Signer.from_pem(peer_key))
        # These test certificates carry no NodeOU, as in an MSP without NodeOUs.
        msps = MspRegistry({MSP_ID: Msp(MSP_ID, org.ca_cert, node_ous=False)})
        self.thread = ServingThread()

        async def start() -> tuple[Channel, GatewayServers]:
            channel = Channel(CHANNEL, msps, self.toy, {MSP_ID: signer}, block_interval=0.02)
            servers = GatewayServers(channel)
            servers.add("peer0.hospital1", MSP_ID, credentials)
            await servers.start()
            return channel, servers

        self.channel, self.servers = self.thread.run(start())
        self.address = self.servers.peers[0].address

    @property
    def counters(self) -> Any:
        return self.channel.counters

    @property
    def blocks(self) -> list[Any]:
        return self.channel.cutter.blocks

    def stop(self) -> None:
        self.thread.run(self.servers.stop())
        self.thread.close()


@dataclass
class Env:
    server: Double
    tls_ca_pem: bytes
    identity: Identity
    signer: Signer
    client_tls: tuple[bytes, bytes]
    org: Pki
    tls: Pki

    @property
    def double(self) -> Double:
        return self.server

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
    server = Double(org, credentials)
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
    assert all(env.double.toy.state[f"bulk{i}"] == f"value{i}".encode() for i in range(200))
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
            # As Fabric's gateway reports a chaincode error on evaluate: UNKNOWN, with the peer's detail.
            with pytest.raises(EvaluateError) as evaluated:
                await gateway.network(CHANNEL).contract("basic").evaluate("nope")
            assert evaluated.value.code == grpc.StatusCode.UNKNOWN
            assert str(evaluated.value) == (
                f"evaluate failed: peer0.hospital1 (Hospital1MSP @{env.server.address}): "
                "chaincode response 500, unknown function nope"
            )
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
    server = Double(env.org, credentials)
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
