"""The foundation end to end on REAL Fabric binaries (issue "Foundation", item 8).

up from nothing -> registry chaincode deployed -> submit and evaluate from two orgs' identities through the
Python gateway -> the chaincode sees the caller's MSP ID and role -> kill -9 a peer, the supervisor restarts
it -> down -> up -> state still there -> a client without TLS is refused -> down.

Skipped, with the reason, where the Fabric v3.1.5 binaries are not installed (see README "Status").
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from network.gateway_errors import GatewayError
from network.gateway_sync import SyncGateway
from network.identity import load_msp_identity
from network.layout import Layout
from network.spec import load_spec
from orchestrator.connect import connect_sync
from peers.binaries import fabric_available
from tests.integration.test_network_identities import status, tl
from tests.ports import free_port_base

_missing = fabric_available()
pytestmark = [pytest.mark.integration, pytest.mark.fabric,
              pytest.mark.skipif(_missing is not None, reason=f"Fabric binaries unavailable: {_missing}")]


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "net"
    tl("down", home=tmp_path / "net", check=False)


def test_up_deploy_submit_restart_resume(home):
    base = free_port_base(200)
    t0 = time.monotonic()
    tl("up", "--port-base", str(base), home=home)
    up_s = time.monotonic() - t0
    assert up_s <= 60, f"up took {up_s:.1f} s"
    nodes = status(home)
    assert all(n["healthy"] for n in nodes.values()), nodes
    spec, layout = load_spec(home / "spec.yaml"), Layout(home)

    with connect_sync(spec, layout, "hospital1", "admin") as gw:
        reg = gw.network(spec.channel).contract("twinledger")
        reg.submit("RegisterOrg", "hospital1", "hospital")
        me = json.loads(reg.evaluate("WhoAmI"))
        assert me["msp_id"] == "Hospital1MSP" and me["role"] == "admin"
    with connect_sync(spec, layout, "plant1", "steward") as gw:
        reg = gw.network(spec.channel).contract("twinledger")
        me = json.loads(reg.evaluate("WhoAmI"))
        assert me["msp_id"] == "Plant1MSP" and me["role"] == "steward"
        with pytest.raises(GatewayError, match="admin"):
            reg.submit("RegisterOrg", "plant1", "plant")  # a steward may not register its org
        assert json.loads(reg.evaluate("ReadOrg", "hospital1"))["msp_id"] == "Hospital1MSP"

    victim = status(home)["peer0.plant2"]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (status(home)["peer0.plant2"]["healthy"] and status(home)["peer0.plant2"]["pid"] != victim):
        time.sleep(0.5)
    assert status(home)["peer0.plant2"]["restarts"] == 1 and status(home)["peer0.plant2"]["healthy"]

    tl("down", home=home)
    tl("up", home=home)
    with connect_sync(spec, layout, "plant2", "client") as gw:
        assert json.loads(gw.network(spec.channel).contract("twinledger").evaluate("ReadOrg", "hospital1"))["kind"] == "hospital"

    identity, signer = load_msp_identity(layout.user_msp("hospital2", "client"), "Hospital2MSP")
    peer = spec.node("peer0.hospital2")
    with SyncGateway.connect(f"127.0.0.1:{peer.ports.listen}", identity=identity, signer=signer, insecure=True) as gw:
        with pytest.raises(GatewayError):
            gw.network(spec.channel).contract("twinledger").evaluate("ListOrgs")
