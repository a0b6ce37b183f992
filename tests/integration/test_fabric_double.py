"""The Fabric peer TEST DOUBLE itself: does it keep the Fabric semantics the other tests rely on?

The double (``tests.fabric_double``) stands in for the peers of a real `twinledger up` home until the
Fabric binaries can be built here. These tests drive it in-process with the project's Gateway client
and the home's real Fabric-CA identities, and check what would make other tests prove nothing if it
were wrong: writes land only when a block commits, concurrent transactions conflict as on Fabric
(MVCC and phantom reads), key-level endorsement policies are enforced at commit, the channel ACLs and
MSP checks refuse identities a peer refuses, and events and block height follow the commits.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from network.gateway import Gateway
from network.gateway_errors import EvaluateError
from network.identity import load_msp_identity
from network.layout import Layout
from network.spec import Spec, load_spec
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.connect import connect
from tests.fabric_double.consortium import register_orgs
from tests.fabric_double.network import GatewayServers, serve_home
from peers.binaries import fabric_available
from tests.fabric_double.process import down_home, prepare_home
from tests.fabric_double.threaded import ServingThread

pytestmark = pytest.mark.integration


@dataclass
class Served:
    home: Path
    spec: Spec
    layout: Layout
    servers: GatewayServers

    def gateway(self, org: str, user: str) -> Gateway:
        """A client of org's peer as org's user (call inside the test's own event loop)."""
        return connect(self.spec, self.layout, org, user)

    def data(self, gateway: Gateway) -> Any:
        return gateway.network(self.spec.channel).contract(CHAINCODE_NAME, "data")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if fabric_available() is None:
        # `up` would start real peers on the ports the double serves; tests/integration/test_fabric_network.py
        # is the real-peer test, and this module moves to real peers once they are the norm here.
        pytest.skip("the Fabric binaries are installed: real peers own the peer ports, not the double")
    home = tmp_path_factory.mktemp("double") / "net"
    prepare_home(home)
    thread = ServingThread()
    try:
        servers = thread.run(serve_home(home, block_interval=0.05))
        try:
            thread.run(register_orgs(home))
            yield Served(home, load_spec(home / "spec.yaml"), Layout(home), servers)
        finally:
            thread.run(servers.stop())
    finally:
        thread.close()
        down_home(home)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_writes_land_only_when_the_block_commits_and_concurrent_writers_conflict(served: Served) -> None:
    async def body() -> None:
        async with served.gateway("plant1", "steward") as p1, served.gateway("plant2", "steward") as p2:
            # Both read "no such data set" and write it; neither write exists until its block commits.
            register = ("RegisterDataset", "race", "t", "{}")
            first = await served.data(p1).new_proposal(*register, "a" * 64, "internal").endorse()
            second = await served.data(p2).new_proposal(*register, "b" * 64, "internal").endorse()
            with pytest.raises(EvaluateError, match="data set 'race' is not registered"):
                await served.data(p1).evaluate("ReadDataset", "race")
            status_first = await (await first.submit()).status()
            status_second = await (await second.submit()).status()
            assert (status_first.code_name, status_second.code_name) == ("VALID", "MVCC_READ_CONFLICT")
            record = json.loads(await served.data(p2).evaluate("ReadDataset", "race"))
            assert (record["owner"], record["tx_id"]) == ("plant1", first.transaction_id)

    run(body())


def test_a_range_read_invalidated_by_a_new_key_is_a_phantom(served: Served) -> None:
    async def body() -> None:
        async with served.gateway("plant1", "steward") as owner, served.gateway("plant2", "client") as user:
            await served.data(owner).submit("RegisterDataset", "phantom", "t", "{}", "c" * 64, "internal")
            await served.data(owner).submit("Grant", "phantom", "plant2", "train:a", "")
            # The check reads plant2's grants of the data set (a range); a grant for another purpose
            # committed before it adds a key to that range, so the check must not commit.
            check = await served.data(user).new_proposal("Check", "phantom", "train:a").endorse()
            await served.data(owner).submit("Grant", "phantom", "plant2", "train:b", "")
            status = await (await check.submit()).status()
            assert status.code_name == "PHANTOM_READ_CONFLICT"
            audit = json.loads(await served.data(user).evaluate("Audit", "phantom"))
            assert [e["action"] for e in audit["entries"]] == ["registered", "granted", "granted"]

    run(body())


def test_key_level_policy_needs_the_owners_peer(served: Served) -> None:
    async def body() -> None:
        async with served.gateway("plant1", "steward") as owner:
            data = served.data(owner)
            await data.submit("RegisterDataset", "sbe", "t", "{}", "d" * 64, "internal")
            await data.submit("Grant", "sbe", "plant2", "train:a", "")
            # The owner's steward asks only plant2's peer to endorse: the chaincode agrees, the grant
            # key's policy (a Plant1MSP peer) does not, and the revocation is invalid at commit.
            commit = await (await data.new_proposal("Revoke", "sbe", "plant2", "train:a",
                                                    endorsing_orgs=["Plant2MSP"]).endorse()).submit()
            assert (await commit.status()).code_name == "ENDORSEMENT_POLICY_FAILURE"
            grants = json.loads(await data.evaluate("ListGrants", "sbe"))
            assert [g["state"] for g in grants] == ["active"]
            # Planned by the gateway (no pinned orgs), the same revocation commits.
            assert json.loads(await data.submit("Revoke", "sbe", "plant2", "train:a"))["status"] == "revoked"

    run(body())


def test_acls_and_msp_checks_refuse_what_a_peer_refuses(served: Served) -> None:
    peer = served.spec.node("peer0.hospital1")
    endpoint = f"127.0.0.1:{peer.ports.listen}"

    async def evaluate_as(msp_dir: Path, msp_id: str) -> EvaluateError:
        identity, signer = load_msp_identity(msp_dir, msp_id)
        async with Gateway.connect(endpoint, identity=identity, signer=signer,
                                   tls_root_cert_pem=served.layout.ca_cert("hospital1")) as gateway:
            with pytest.raises(EvaluateError) as caught:
                await gateway.network(served.spec.channel).contract(CHAINCODE_NAME).evaluate("ListOrgs")
        return caught.value

    # A peer's own enrolment (NodeOU peer) is not a channel Writer; neither is the orderer org.
    error = run(evaluate_as(served.layout.node_msp("peer0.hospital1"), "Hospital1MSP"))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "access denied: channel [consortium] creator org [Hospital1MSP]" in str(error)
    error = run(evaluate_as(served.layout.user_msp("orderer", "admin"), "OrdererMSP"))
    assert "creator org [OrdererMSP]" in str(error)
    # A plant's steward certificate presented as a hospital's identity: not issued by that MSP's CA.
    error = run(evaluate_as(served.layout.user_msp("plant1", "steward"), "Hospital1MSP"))
    assert "creator certificate not issued by the MSP CA" in str(error)


def test_events_and_height_follow_the_commits(served: Served) -> None:
    ops = served.spec.node("peer0.hospital2").ports.operations

    def height() -> int:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{ops}/metrics", timeout=5) as response:
            line = response.read().decode().strip()
        assert line.startswith('ledger_blockchain_height{channel="consortium"} ')
        return int(line.rsplit(" ", 1)[1])

    before = height()

    async def body() -> list[Any]:
        async with served.gateway("hospital2", "steward") as gateway:
            network = gateway.network(served.spec.channel)
            commit = await served.data(gateway).submit_async("RegisterDataset", "events", "t", "{}", "e" * 64,
                                                            "restricted")
            status = await commit.status()
            async with network.chaincode_events(CHAINCODE_NAME, start_block=status.block_number) as stream:
                event = await stream.__anext__()
            return [status, event]

    status, event = run(body())
    assert status.block_number >= before and height() == status.block_number + 1
    assert (event.event_name, event.transaction_id, event.chaincode_name) == (
        "DatasetRegistered", status.transaction_id, CHAINCODE_NAME)
    assert json.loads(event.payload)["id"] == "events"


def test_org_registration_is_idempotent_so_up_can_rerun_it(served: Served) -> None:
    """`twinledger up` runs register_member_orgs after every deploy; on a registered ledger it submits nothing."""
    from orchestrator.membership import register_member_orgs

    async def body() -> None:
        progress: list[str] = []
        added = await register_member_orgs(served.spec, served.layout, CHAINCODE_NAME, progress.append)
        assert (added, progress) == ([], [])
        async with served.gateway("hospital1", "client") as gateway:
            orgs = json.loads(await gateway.network(served.spec.channel).contract(CHAINCODE_NAME).evaluate("ListOrgs"))
        assert sorted(o["name"] for o in orgs) == sorted(o.name for o in served.spec.member_orgs)
        assert {o["kind"] for o in orgs} == {"hospital", "plant"}

    run(body())
