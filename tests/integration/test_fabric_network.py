"""The network itself on REAL Fabric binaries, through the session network (``fabric_net``).

`up` from nothing (timed by the fixture), `status --json` in DESIGN.md's shape, kill -9 of a peer and of
the Raft leader (the supervisor restarts them, the state is intact and submits succeed), `down` -> `up`
resuming the same ledger and identities (timed; the first submit after it succeeds), and a chaincode
upgrade (a new version and sequence through orchestrator.lifecycle.deploy) with live state, after which
`up` neither fights the upgrade nor submits anything. Each destructive test ends with
``fabric_net.wait_ready()`` so that the next test finds the network whole.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request

import pytest

from orchestrator.lifecycle import committed, deploy
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import block_height, kill_hard, raft_leader, wait_peers_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.fabric]

DIGEST = "f" * 64
NODE_TYPES = {"peer", "orderer", "ca", "chaincode", "superlink", "supernode"}


def status(net: FabricNet) -> dict[str, dict]:
    return {n["name"]: n for n in net.ok("status")["nodes"]}


def register(net: FabricNet, org: str, ds: str) -> dict:
    with net.connect_sync(org, "steward") as gateway:
        return json.loads(gateway.network(net.spec.channel).contract(net.chaincode, "data").submit(
            "RegisterDataset", ds, "t", "{}", DIGEST, "internal"))


def read(net: FabricNet, org: str, ds: str) -> dict:
    with net.connect_sync(org, "client") as gateway:
        return json.loads(gateway.network(net.spec.channel).contract(net.chaincode, "data").evaluate("ReadDataset", ds))


def test_up_from_nothing_and_status_json(fabric_net: FabricNet) -> None:
    net = fabric_net
    # The 20 s goal is measured on a quiet machine (README, Results); a test on a shared machine only
    # checks that `up` finishes in bounded time.
    print(f"twinledger up from nothing: {net.up_seconds:.1f} s (goal 20 s on a quiet machine)")
    assert net.up_seconds <= 180, f"up took {net.up_seconds:.1f} s"
    answer = net.ok("status")
    assert set(answer) == {"nodes", "orgs"}
    # every hospital and plant with its membership state (org add / org remove change it)
    assert {(o["name"], o["kind"], o["state"]) for o in answer["orgs"]} == {
        (o.name, o.kind, "member") for o in net.spec.member_orgs}, answer["orgs"]
    nodes = {n["name"]: n for n in answer["nodes"]}
    for node in nodes.values():
        assert set(node) >= {"name", "org", "type", "healthy", "height"}, node
        assert node["type"] in NODE_TYPES and isinstance(node["healthy"], bool), node
        assert node["height"] is None or isinstance(node["height"], int), node
    by_type = {t: sorted(n for n, v in nodes.items() if v["type"] == t) for t in ("ca", "orderer", "peer", "chaincode")}
    assert [len(by_type[t]) for t in ("ca", "orderer", "peer", "chaincode")] == [5, 3, 4, 4], by_type
    assert all(n["healthy"] for n in nodes.values()), nodes
    # Heights: peers and orderers have the channel's; a CA has none.
    peers = [nodes[n] for n in by_type["peer"]]
    assert all(n["height"] and n["height"] > 1 for n in peers + [nodes[n] for n in by_type["orderer"]])
    assert all(nodes[n]["height"] is None for n in by_type["ca"])
    assert nodes["peer0.hospital1"]["org"] == "hospital1" and nodes["orderer0.orderer"]["org"] == net.spec.orderer_org.name
    # The table a person reads names every node.
    table = net.run("status").stdout
    assert all(name in table for name in nodes)


def test_kill_9_a_peer_and_the_raft_leader(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("survives")
    written = register(net, "plant2", ds)
    leader = raft_leader(net)
    restarted = kill_hard(net, ["peer0.plant2", leader])
    for name, seen in restarted.items():
        assert seen["after"]["restarts"] == seen["before"]["restarts"] + 1, (name, seen)
    net.wait_ready()
    # A leader again (the old one or another), the restarted peer serves the state it had, and writes
    # go through it and through the ordering service.
    assert raft_leader(net) in {n.name for n in net.spec.nodes_of(net.spec.orderer_org.name, "orderer")}
    assert read(net, "plant2", ds) == written
    after = net.unique("after-kill")
    assert register(net, "plant2", after)["owner"] == "plant2"
    wait_peers_caught_up(net, "peer0.plant2")
    assert read(net, "hospital1", after)["id"] == after


def test_kill_9_a_ca_and_it_serves_again(fabric_net: FabricNet) -> None:
    net = fabric_net
    restarted = kill_hard(net, ["ca.plant1"])["ca.plant1"]
    assert restarted["after"]["restarts"] == restarted["before"]["restarts"] + 1
    ca = net.node("ca.plant1")
    context = ssl.create_default_context(cafile=str(net.layout.ca_cert("plant1")))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(f"https://127.0.0.1:{ca.ports.listen}/cainfo", timeout=10) as response:
        assert json.loads(response.read())["success"] is True
    net.wait_ready()


def test_down_then_up_resumes_the_same_ledger(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("resume")
    written = register(net, "hospital1", ds)
    height = block_height(net, "peer0.hospital1")
    steward = (net.layout.user_msp("hospital1", "steward") / "signcerts" / "cert.pem").read_bytes()
    pids = [p["pid"] for p in net.processes().values() if p["pid"]]

    down = net.run("down", timeout=180)
    assert down.returncode == 0 and "stopped every process" in down.stdout, down.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(n["healthy"] for n in status(net).values())

    started = time.monotonic()
    up = net.run("up", timeout=180)
    resume_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"twinledger up after down: {resume_s:.1f} s (goal 10 s)")
    assert resume_s <= 20, up.stdout
    # The same identities (nothing enrolled again), the same ledger, no lifecycle or registry transaction.
    assert up.stdout.count("already enrolled") == 5, up.stdout
    assert (net.layout.user_msp("hospital1", "steward") / "signcerts" / "cert.pem").read_bytes() == steward
    assert "registered org" not in up.stdout and "committed twinledger" not in up.stdout
    assert block_height(net, "peer0.hospital1") == height
    # The first submit right after `up` succeeds (up waited for a Raft leader and for gossip).
    first = net.unique("first-after-up")
    assert register(net, "plant1", first)["owner"] == "plant1"
    assert read(net, "plant2", ds) == written
    net.wait_ready()


def test_a_chaincode_upgrade_keeps_the_state_and_up_does_not_fight_it(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("upgrade")
    written = register(net, "plant1", ds)
    before = committed(net.spec, net.layout, net.chaincode)
    assert before is not None
    version = f"{before.version}-up{before.sequence + 1}"  # the same code under a new version label

    progress: list[str] = []
    started = time.monotonic()
    after = deploy(net.spec, net.layout, net.chaincode, version, progress.append, upgrade=True)
    print(f"chaincode upgrade {before.version} -> {version}: {time.monotonic() - started:.1f} s")
    assert (after.version, after.sequence) == (version, before.sequence + 1)
    assert committed(net.spec, net.layout, net.chaincode) == after
    assert sum("installed" in line for line in progress) == 4
    net.wait_ready()
    # State written under the old definition is read under the new one; writes go on.
    assert read(net, "hospital2", ds) == written
    assert register(net, "hospital2", net.unique("after-upgrade"))["owner"] == "hospital2"

    # `up` on this home keeps the upgraded definition: no new sequence, no transaction at all, quick.
    wait_peers_caught_up(net, "peer0.hospital2")
    height = block_height(net, "peer0.hospital1")
    started = time.monotonic()
    up = net.run("up", timeout=180)
    up_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"twinledger up on the running, upgraded network: {up_s:.1f} s")
    assert f"{net.chaincode} {version} (sequence {after.sequence}) is committed; kept" in up.stdout
    assert committed(net.spec, net.layout, net.chaincode) == after
    assert block_height(net, "peer0.hospital1") == height
    assert up_s <= 15, up.stdout
    net.wait_ready()
