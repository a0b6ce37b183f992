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
That peer side (``FakePeer``), the TLS material and the server process live in
``tests/fabric_double/ccaas_peer.py``, shared with ``bench/governance.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2_grpc, proposal_pb2

from tests.fabric_double.ccaas_peer import (
    CHAINCODE_ID,
    CHANNEL,
    REPO,
    STARTED_RE,
    FakePeer,
    Identity,
    Message,
    Pki,
    ServerProcess,
    completed_response,
    make_pki,
    start_server,
    tls_channel,
    with_peer,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("chaincode-tls"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("chaincode-log") / "server.log", pki.files)
    try:
        yield server
    finally:
        server.stop()


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
