"""What only real Fabric peers can show (issue 11, item 4), on the session's network (``fabric_net``).

Each test asks the real orderers and peers something a stand-in could only have imitated: the
committers' key-level endorsement check, private data that never leaves the hospital's peer while its
hash is in the block, MVCC read conflicts between racing transactions (and the client's retry policy),
the channel's refusal of proposals signed by identities it does not know and the orderers' refusal of
client certificates from unknown CAs, the official `peer` CLI reading what the Python client wrote, and
chaincode events and block heights following the commits. Kills and upgrades are in
test_fabric_network.py; TLS mistakes of a client in test_gateway_client.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import ssl
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from network.checkpoint import FileCheckpointer
from network.gateway import ChaincodeEvent, ChaincodeEventStream, Gateway
from network.gateway_errors import EvaluateError, GatewayError
from network.identity import Identity, Signer, load_msp_identity
from orchestrator import cli
from orchestrator.fabric_stage import orderer_client_args, peer_admin_env
from orchestrator.ledger_session import CONFLICT_RETRIES, Session
from peers.binaries import fabric_binary
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import block_height, stranger, wait_height, wait_peers_caught_up

pytestmark = pytest.mark.integration

DIGEST = "d" * 64


def run(coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def data_of(net: FabricNet, gateway: Gateway) -> Any:
    return gateway.network(net.spec.channel).contract(net.chaincode, "data")


def msp(net: FabricNet, org: str) -> str:
    return net.spec.org(org).msp_id


# --- key-level endorsement at commit ---------------------------------------------------------------


def test_grant_changed_without_the_owners_peer_fails_at_commit(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("sbe")
    # Three of four orgs satisfy the chaincode's policy (MAJORITY Endorsement), so only the key-level
    # policy on the grant and the data set (a Plant1MSP peer) can make the committers refuse.
    others = [msp(net, o) for o in ("hospital1", "hospital2", "plant2")]

    async def body() -> None:
        async with net.connect("plant1", "steward") as owner:
            data = data_of(net, owner)
            await data.submit("RegisterDataset", ds, "t", "{}", DIGEST, "internal")
            await data.submit("Grant", ds, "plant2", "train:a", "")
            height = wait_peers_caught_up(net, "peer0.plant1")  # the pinned peers must have the grant

            revoke = await data.new_proposal("Revoke", ds, "plant2", "train:a", endorsing_orgs=others).endorse()
            status = await (await revoke.submit()).status()
            assert (status.code_name, status.successful) == ("ENDORSEMENT_POLICY_FAILURE", False)
            # Ordered into a block (the height moved), yet the state did not change.
            assert block_height(net, "peer0.plant1") >= height + 1
            grants = json.loads(await data.evaluate("ListGrants", ds))
            assert [(g["purpose"], g["state"]) for g in grants] == [("train:a", "active")]
            trail = json.loads(await data.evaluate("Audit", ds))
            assert [e["action"] for e in trail["entries"]] == ["registered", "granted"]

            # Planned by the gateway, which follows the key's policy, the same revocation commits.
            assert json.loads(await data.submit("Revoke", ds, "plant2", "train:a"))["status"] == "revoked"
            # Granting it again without the owner's peer fails the same way: the revoked grant's key
            # still carries the owner's policy.
            wait_peers_caught_up(net, "peer0.plant1")  # the pinned peers must have the revocation
            regrant = await data.new_proposal("Grant", ds, "plant2", "train:a", "", endorsing_orgs=others).endorse()
            assert (await (await regrant.submit()).status()).code_name == "ENDORSEMENT_POLICY_FAILURE"
            # A purpose never granted before is a new grant key with no policy of its own yet; the grant
            # also counts it in the data set's grant register, which carries the owner's policy, so
            # this too needs the owner's peer.
            fresh = await data.new_proposal("Grant", ds, "hospital1", "train:new", "", endorsing_orgs=others).endorse()
            assert (await (await fresh.submit()).status()).code_name == "ENDORSEMENT_POLICY_FAILURE"
            grants = json.loads(await data.evaluate("ListGrants", ds))
            assert [(g["purpose"], g["state"]) for g in grants] == [("train:a", "revoked")]

    run(body())


# --- consent: private data on the hospital's peer only, its hash on the channel ------------------


def fetch_block(net: FabricNet, number: int, org: str, out: Path) -> bytes:
    """Block ``number`` from the orderers, fetched with the official peer CLI as ``org``'s admin."""
    orderer = net.spec.nodes_of(net.spec.orderer_org.name, "orderer")[0]
    result = subprocess.run(
        [str(fabric_binary("peer")), "channel", "fetch", str(number), str(out), "-c", net.spec.channel,
         *orderer_client_args(net.spec, net.layout, org, orderer)],
        env={**os.environ, **peer_admin_env(net.spec, net.layout, net.peer(org))},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return out.read_bytes()


def test_consent_stays_on_the_hospitals_peer_and_only_its_hash_is_on_the_channel(
        fabric_net: FabricNet, tmp_path: Path) -> None:
    net, pseudonym = fabric_net, fabric_net.unique("pt")
    record = json.dumps({"pseudonym": pseudonym, "salt": secrets.token_hex(16), "scope": "train:cardiac-v1",
                         "status": "given"}).encode()

    async def body() -> tuple[dict[str, Any], int, list[EvaluateError]]:
        async with net.connect("hospital1", "steward") as hospital:
            consent = hospital.network(net.spec.channel).contract(net.chaincode, "consent")
            commit = await consent.submit_async("RecordConsent", transient={"consent": record},
                                                endorsing_orgs=[msp(net, "hospital1")])
            status = await commit.status()
            assert status.successful, status.code_name
            recorded = json.loads(commit.result)
            wait_peers_caught_up(net, "peer0.hospital1")  # the others must have the hash (or lack it for the right reason)
            # The hospital's own peer holds the record ...
            shown = json.loads(await consent.evaluate("ReadConsent", pseudonym, "train:cardiac-v1"))
            assert hashlib.sha256(shown["record"].encode()).hexdigest() == recorded["sha256"]
            # ... no other org's peer does: the same proposal, by the hospital's own steward, sent to
            # them through the gateway (target organisations) fails in their chaincode's GET_STATE.
            refused = []
            for org in ("plant1", "hospital2"):
                with pytest.raises(EvaluateError) as caught:
                    await consent.evaluate("ReadConsent", pseudonym, "train:cardiac-v1", endorsing_orgs=[msp(net, org)])
                refused.append(caught.value)
        # Directly at plant1's peer too (the hospital's steward dialling another org's gateway).
        identity, signer = load_msp_identity(net.layout.user_msp("hospital1", "steward"), msp(net, "hospital1"))
        endpoint = f"127.0.0.1:{net.peer('plant1').ports.listen}"
        tls = net.layout.user_tls("hospital1", "steward")  # plant1's peer trusts the channel's orgs' TLS CAs
        async with Gateway.connect(endpoint, identity=identity, signer=signer,
                                   tls_root_cert_pem=net.layout.ca_cert("plant1"),
                                   client_cert_pem=tls / "client.crt", client_key_pem=tls / "client.key") as at_plant:
            with pytest.raises(EvaluateError) as caught:
                await at_plant.network(net.spec.channel).contract(net.chaincode, "consent").evaluate(
                    "ReadConsent", pseudonym, "train:cardiac-v1")
            refused.append(caught.value)
        # Every peer has the hash: plant1 verifies the digest the hospital showed (GetPrivateDataHash).
        async with net.connect("plant1", "admin") as plant:
            verify = plant.network(net.spec.channel).contract(net.chaincode, "consent")
            assert json.loads(await verify.evaluate("VerifyConsent", "hospital1", pseudonym, "train:cardiac-v1",
                                                    recorded["sha256"])) == {
                "hospital": "hospital1", "recorded": True, "match": True}
        return recorded, status.block_number, refused

    recorded, block_number, refused = run(body())
    for error in refused:
        assert "private data matching public hash version is not available" in str(error), error
        assert "Hospital1MSP" not in {d.msp_id for d in error.details}
    # The block every org stores holds the record's SHA-256 (the private write set's value hash) and
    # nothing of the record itself.
    block = fetch_block(net, block_number, "hospital2", tmp_path / "consent.block")
    assert bytes.fromhex(recorded["sha256"]) in block
    assert pseudonym.encode() not in block and b"salt" not in block


# --- racing transactions: MVCC read conflicts, the CLI's line, the retry policy -------------------


def test_racing_registrations_commit_once_and_the_rest_are_read_conflicts(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("race")
    orgs = [o.name for o in net.spec.member_orgs]
    # Every org's peer endorses every racer, so that no endorsement policy is what refuses the losers.
    # Real committers check endorsements (with key-level policies) before read versions, and a
    # transaction that writes a key whose validation parameter an earlier transaction of the SAME block
    # set -- as every RegisterDataset does -- is ENDORSEMENT_POLICY_FAILURE, whatever it read. So each
    # racer is ordered in a block of its own: then what refuses a loser is only the stale version it
    # read (the ID was free when it was endorsed).
    everyone = [msp(net, org) for org in orgs]

    async def body() -> list[tuple[str, str]]:
        gateways = [net.connect(org, "steward") for org in orgs]
        try:
            # Every steward's proposal is endorsed while the ID is still free (each reads "absent") ...
            transactions = await asyncio.gather(*(
                data_of(net, g).new_proposal("RegisterDataset", ds, "t", "{}", DIGEST, "internal",
                                             endorsing_orgs=everyone).endorse()
                for g in gateways))
            # ... then each is ordered, one after the other.
            statuses = [await (await t.submit()).status() for t in transactions]
            first = statuses[0]
            assert len({s.block_number for s in statuses}) == len(statuses)
            record = json.loads(await data_of(net, gateways[0]).evaluate("ReadDataset", ds))
            assert (record["owner"], record["tx_id"]) == (orgs[0], first.transaction_id)
            return [(org, s.code_name) for org, s in zip(orgs, statuses)]
        finally:
            for g in gateways:
                await g.close()

    outcome = run(body())
    assert [code for _, code in outcome] == ["VALID"] + ["MVCC_READ_CONFLICT"] * (len(orgs) - 1), outcome


def test_concurrent_consent_recordings_of_one_patient_commit_once(fabric_net: FabricNet) -> None:
    """Private data keys carry no key-level policy: racers submitted at once are plain read conflicts."""
    net, pseudonym = fabric_net, fabric_net.unique("pt-race")

    def record() -> dict[str, bytes]:
        return {"consent": json.dumps({"pseudonym": pseudonym, "salt": secrets.token_hex(16),
                                       "scope": "train:cardiac-v1", "status": "given"}).encode()}

    async def body() -> list[str]:
        async with net.connect("hospital2", "steward") as hospital:
            consent = hospital.network(net.spec.channel).contract(net.chaincode, "consent")
            own = [msp(net, "hospital2")]
            transactions = await asyncio.gather(*(
                consent.new_proposal("RecordConsent", transient=record(), endorsing_orgs=own).endorse()
                for _ in range(3)))
            commits = await asyncio.gather(*(t.submit() for t in transactions))
            statuses = await asyncio.gather(*(c.status() for c in commits))
            stored = json.loads((json.loads(await consent.evaluate("ReadConsent", pseudonym, "train:cardiac-v1")))["record"])
            assert stored["tx_id"] in {s.transaction_id for s in statuses if s.successful}
            return sorted(s.code_name for s in statuses)

    assert run(body()) == ["MVCC_READ_CONFLICT", "MVCC_READ_CONFLICT", "VALID"]


class RivalBetweenEndorseAndOrder:
    """Replaces ``Session.contract`` so that a rival transaction commits after the first attempt of a
    submit is endorsed and before it is ordered: a real read conflict at a moment the test chooses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rival: Callable[[], None]) -> None:
        self.rival = rival
        self.attempts: list[str] = []
        original = Session.contract
        race = self

        class Racing:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def evaluate(self, *args: Any, **kwargs: Any) -> bytes:
                return self.inner.evaluate(*args, **kwargs)

            def submit_async(self, function: str, *args: Any, **kwargs: Any) -> Any:
                transaction = self.inner.new_proposal(function, *args, **kwargs).endorse()
                race.attempts.append(transaction.transaction_id)
                if len(race.attempts) == 1:
                    race.rival()
                return transaction.submit()

        monkeypatch.setattr(Session, "contract", lambda session, name: Racing(original(session, name)))


def cli_main(net: FabricNet, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`twinledger ARGS --home HOME` in this process (so that the race can be staged), as its user sees it."""
    capsys.readouterr()
    code = cli.main([*args, "--home", str(net.home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_conflicting_governance_write_is_one_line_and_not_retried(
        fabric_net: FabricNet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    net, ds = fabric_net, fabric_net.unique("contested")
    net.ok("data", "register", ds, "--kind", "t", "--sha256", DIGEST, "--as", "plant1")
    net.ok("data", "grant", ds, "--to", "plant2", "--purpose", "train:a", "--as", "plant1")

    def other_steward_regrants_with_an_expiry() -> None:
        with net.connect_sync("plant1", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            data.submit("Revoke", ds, "plant2", "train:a")
            data.submit("Grant", ds, "plant2", "train:a", "2099-01-01T00:00:00Z")

    race = RivalBetweenEndorseAndOrder(monkeypatch, other_steward_regrants_with_an_expiry)
    # Our revocation was endorsed on the grant as it was; meanwhile another steward replaced it. Retried
    # on the new state, it would silently revoke the grant they just made; so it is not retried.
    code, out, err = cli_main(net, capsys, "data", "revoke", ds, "--to", "plant2", "--purpose", "train:a",
                              "--as", "plant1")
    assert code == 1 and out == "" and len(race.attempts) == 1, (out, err)
    assert err == (f"twinledger: transaction {race.attempts[0]} was not committed: the peers marked it "
                   "MVCC_READ_CONFLICT; nothing changed — another transaction changed the same records first; "
                   "look at them and run the command again\n")
    grants = net.ok("data", "grants", ds, "--as", "plant1")
    assert [(g["purpose"], g["state"], g["expires_at"]) for g in grants] == [
        ("train:a", "active", "2099-01-01T00:00:00Z")]


def test_a_conflicting_access_check_is_retried_on_the_new_state(
        fabric_net: FabricNet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    net, ds = fabric_net, fabric_net.unique("checked")
    net.ok("data", "register", ds, "--kind", "t", "--sha256", DIGEST, "--as", "plant1")
    net.ok("data", "grant", ds, "--to", "plant2", "--purpose", "train:a", "--as", "plant1")

    def owner_revokes() -> None:
        net.ok("data", "revoke", ds, "--to", "plant2", "--purpose", "train:a", "--as", "plant1")

    race = RivalBetweenEndorseAndOrder(monkeypatch, owner_revokes)
    # The first attempt was endorsed as "allowed" on the grant the revocation then changed: the peers
    # refuse it, the session endorses the check again, and the answer is the current one.
    code, out, err = cli_main(net, capsys, "data", "check", ds, "--purpose", "train:a", "--as", "plant2:operator",
                              "--json")
    assert (code, err) == (3, ""), err
    answer = json.loads(out)
    assert (answer["allowed"], answer["reason"]) == (False, "revoked")
    # (Usually one retry; another if the peer endorsing the retry had not yet committed the revocation.)
    assert 2 <= len(race.attempts) <= 1 + CONFLICT_RETRIES and answer["tx_id"] == race.attempts[-1]
    # Exactly one check is recorded: the losing attempts left no trace.
    entries = net.ok("data", "audit", ds)["entries"]
    assert [(e["action"], e.get("reason")) for e in entries] == [
        ("registered", None), ("granted", None), ("revoked", None), ("access", "revoked")]
    assert entries[-1]["tx_id"] == race.attempts[-1]


# --- who the real nodes refuse ---------------------------------------------------------------------


def test_proposals_signed_by_identities_the_channel_does_not_know_are_refused(fabric_net: FabricNet) -> None:
    """(Transport mistakes -- plain text, an untrusted server certificate -- are in test_gateway_client.py.)"""
    net = fabric_net
    endpoint = f"127.0.0.1:{net.peer('hospital1').ports.listen}"
    hospital1 = msp(net, "hospital1")

    async def who_am_i(identity: Identity, signer: Signer, forge_signature: bool = False) -> GatewayError:
        # A TLS client certificate the peer accepts (hospital1's client user's), so that what is refused is
        # the identity that signed the proposal, not the transport.
        tls = net.layout.user_tls("hospital1", "client")
        async with Gateway.connect(endpoint, identity=identity, signer=signer,
                                   tls_root_cert_pem=net.layout.ca_cert("hospital1"),
                                   client_cert_pem=tls / "client.crt", client_key_pem=tls / "client.key") as gateway:
            proposal = gateway.network(net.spec.channel).contract(net.chaincode).new_proposal("WhoAmI")
            if forge_signature:
                proposal.signed_proposal.signature = stranger().identity(hospital1)[1].sign(proposal.proposal_bytes)
            with pytest.raises(GatewayError) as caught:
                await proposal.evaluate(timeout=10)
        return caught.value

    async def body() -> None:
        # A certificate from an unknown CA claiming Hospital1MSP, and another org's certificate claiming it.
        forged = await who_am_i(*stranger().identity(hospital1))
        borrowed = await who_am_i(*load_msp_identity(net.layout.user_msp("plant1", "steward"), hospital1))
        for error in (forged, borrowed):
            assert error.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "access denied: channel [consortium] creator org unknown, creator is malformed" in str(error)
        # A member's real certificate, but the proposal signed by another key: the peer says only that
        # access is denied (in its log too, at the default level), not why.
        client = load_msp_identity(net.layout.user_msp("hospital1", "client"), hospital1)
        tampered = await who_am_i(*client, forge_signature=True)
        assert tampered.code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(tampered).endswith("error validating proposal: access denied: channel [consortium] "
                                      "creator org [Hospital1MSP]")
        # Known identities that are no channel Writer: the peer's own (NodeOU peer), the orderer org's admin.
        for msp_dir, msp_id in ((net.layout.node_msp("peer0.hospital1"), hospital1),
                                (net.layout.user_msp(net.spec.orderer_org.name, "admin"), net.spec.orderer_org.msp_id)):
            refused = await who_am_i(*load_msp_identity(msp_dir, msp_id))
            assert "check policy [/Channel/Application/Writers]" in str(refused), refused

    run(body())


def https_status(port: int, ca: Path, cert: bytes, key: bytes, tmp_path: Path) -> int:
    """GET the orderer's channel participation API presenting the given client certificate."""
    import http.client

    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/participation/v1/channels")
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_orderers_admin_endpoint_refuses_client_certificates_from_unknown_cas(
        fabric_net: FabricNet, tmp_path: Path) -> None:
    """Where a node requires client certificates, one from a CA it does not know gets no TLS session.

    (Peers do not require client certificates -- core.yaml's clientAuthRequired is false -- and then
    accept any, unverified; chaincode servers run server-side TLS only. The Admin endpoint of the
    orderers is where Fabric insists on mutual TLS.)
    """
    net, alien = fabric_net, stranger("admin")
    orderer = net.spec.nodes_of(net.spec.orderer_org.name, "orderer")[0]
    ca = net.layout.ca_cert(orderer.org)
    admin_tls = net.layout.user_tls(orderer.org, "admin")
    # The orderer's Admin endpoint (channel joins) takes only the orderer org's TLS client certificates.
    assert https_status(orderer.ports.admin, ca, (admin_tls / "client.crt").read_bytes(),
                        (admin_tls / "client.key").read_bytes(), tmp_path) == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_status(orderer.ports.admin, ca, alien.cert_pem, alien.key_pem, tmp_path)


# --- the official peer CLI reads what the Python client wrote ------------------------------------


def test_the_official_peer_cli_reads_what_the_python_client_wrote(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("cli-read")
    with net.connect_sync("hospital1", "steward") as gateway:
        data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
        written = json.loads(data.submit("RegisterDataset", ds, "tabular", '{"rows":303}', DIGEST, "restricted"))
    wait_height(net, "peer0.plant2", block_height(net, "peer0.hospital1"))
    # As plant2's admin against plant2's peer, the way Fabric's own documentation queries a chaincode.
    result = subprocess.run(
        [str(fabric_binary("peer")), "chaincode", "query", "-C", net.spec.channel, "-n", net.chaincode,
         "-c", json.dumps({"Args": ["data:ReadDataset", ds]})],
        env={**os.environ, **peer_admin_env(net.spec, net.layout, net.peer("plant2"))},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == written
    assert (written["owner"], written["schema"], written["sensitivity"]) == ("hospital1", {"rows": 303}, "restricted")


# --- events with a checkpoint across a reconnect; block height follows the commits --------------


async def next_matching(stream: ChaincodeEventStream, wanted: set[str], timeout: float = 15) -> ChaincodeEvent:
    """The next DatasetRegistered event of one of ``wanted`` (the channel carries other tests' events too)."""
    while True:
        event = await asyncio.wait_for(stream.__anext__(), timeout)
        if event.event_name == "DatasetRegistered" and json.loads(event.payload)["id"] in wanted:
            return event


def test_events_resume_from_a_checkpoint_after_reconnecting_and_height_follows(
        fabric_net: FabricNet, tmp_path: Path) -> None:
    net = fabric_net
    ids = [net.unique("events") for _ in range(4)]
    checkpoint_file = tmp_path / "events.json"
    peer = "peer0.hospital2"

    async def body() -> None:
        start = block_height(net, peer)
        async with net.connect("hospital2", "steward") as gateway:
            data = data_of(net, gateway)
            statuses = []
            for ds in ids[:3]:
                status = await (await data.submit_async("RegisterDataset", ds, "t", "{}", DIGEST, "internal")).status()
                # CommitStatus answers once the gateway's peer committed the block: its height shows it.
                assert block_height(net, peer) == status.block_number + 1
                statuses.append(status)
            assert [s.block_number for s in statuses] == sorted({s.block_number for s in statuses})
            assert statuses[0].block_number >= start
            checkpointer = FileCheckpointer(checkpoint_file)
            async with gateway.network(net.spec.channel).chaincode_events(net.chaincode, start_block=start) as stream:
                for ds in ids[:2]:
                    event = await next_matching(stream, set(ids))
                    assert json.loads(event.payload)["id"] == ds
                    checkpointer.checkpoint_event(event)  # processed
        # A new connection, as after a client restart: resume after the last processed event.
        async with net.connect("hospital2", "client") as gateway:
            resumed = FileCheckpointer(checkpoint_file)
            assert resumed.transaction_id == statuses[1].transaction_id
            async with gateway.network(net.spec.channel).chaincode_events(net.chaincode, checkpoint=resumed) as stream:
                third = await next_matching(stream, set(ids))
                assert (json.loads(third.payload)["id"], third.transaction_id, third.block_number) == (
                    ids[2], statuses[2].transaction_id, statuses[2].block_number)
                later = asyncio.ensure_future(next_matching(stream, set(ids)))
                async with net.connect("hospital1", "steward") as other:
                    fourth = await (await data_of(net, other).submit_async(
                        "RegisterDataset", ids[3], "t", "{}", DIGEST, "internal")).status()
                event = await later
                assert (json.loads(event.payload)["id"], event.transaction_id) == (ids[3], fourth.transaction_id)
        # Every peer reaches the same height (each commits the block on its own).
        for other in net.spec.nodes_of("plant1", "peer") + net.spec.nodes_of("hospital1", "peer"):
            assert wait_height(net, other.name, fourth.block_number + 1) >= fourth.block_number + 1

    run(body())
