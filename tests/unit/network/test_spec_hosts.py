"""Orgs on hosts of their own: the spec's ``host`` / ``netns`` and every address derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from network.configtx import render_configtx
from network.layout import Layout
from network.processes.procspec import ProcSpec
from network.spec import SpecError, load_spec, parse_spec
from network.spec_model import LOOPBACK
from orchestrator.fabric_stage import node_processes, osnadmin_target
from peers.core_config import render_core_yaml
from peers.orderer_config import render_orderer_yaml

HOSTS = {"orderer": "10.77.0.10", "hospital1": "10.77.0.11", "hospital2": "10.77.0.12", "plant1": "10.77.0.13",
         "plant2": "10.77.0.14"}


def placed(netns: bool = True):
    raw = load_spec().to_dict()
    for org in raw["orgs"]:
        org["host"] = HOSTS[org["name"]]
        if netns:
            org["netns"] = f"tl-{org['name']}"
    return parse_spec(raw)


def test_every_node_takes_its_orgs_host_and_netns_and_the_spec_round_trips():
    spec = placed()
    for node in spec.nodes():
        assert node.host == HOSTS[node.org]
        assert node.netns == f"tl-{node.org}"
        assert node.address == f"{HOSTS[node.org]}:{node.ports.listen}"
        assert node.operations_url == f"http://{HOSTS[node.org]}:{node.ports.operations}"
    assert parse_spec(spec.to_dict()) == spec
    # Left out, everything is on loopback and the file says nothing about it.
    plain = load_spec()
    assert {n.host for n in plain.nodes()} == {LOOPBACK} and {n.netns for n in plain.nodes()} == {None}
    assert all("host" not in o and "netns" not in o for o in plain.to_dict()["orgs"])


@pytest.mark.parametrize("patch, says", [
    ({"host": "plant1.example"}, "not an IPv4 address"),
    ({"host": "::1"}, "IPv6 is not supported"),
    ({"host": "0.0.0.0"}, "no address a node can listen on"),
    ({"host": "224.0.0.1"}, "no address a node can listen on"),
    ({"host": 10}, "host must be an IPv4 address"),
    ({"netns": "tl-plant1"}, "needs a host address the other orgs can reach"),
    ({"host": "10.0.0.2", "netns": "a b"}, "must be a network namespace name"),
    ({"address": "10.0.0.2"}, "address is not a setting here"),
])
def test_bad_placements_are_refused_with_one_line(patch, says):
    raw = load_spec().to_dict()
    raw["orgs"][1].update(patch)
    with pytest.raises(SpecError, match=says):
        parse_spec(raw)


def test_an_added_org_may_have_its_own_host():
    raw = load_spec().to_dict()
    spec = parse_spec({**raw, "added_orgs": [{"name": "hospital3", "kind": "hospital", "host": "10.77.0.15",
                                              "netns": "tl-hospital3"}],
                       "added": ["ca.hospital3", "peer0.hospital3"]})
    assert spec.node("peer0.hospital3").address.startswith("10.77.0.15:")
    assert spec.node("ca.hospital3").netns == "tl-hospital3"
    assert parse_spec(spec.to_dict()) == spec


def test_channel_config_names_each_orgs_host(tmp_path: Path):
    spec = placed()
    cfg = render_configtx(spec, Layout(tmp_path))
    orgs = {o["Name"]: o for o in cfg["Organizations"]}
    assert orgs["OrdererMSP"]["OrdererEndpoints"] == [n.address for n in spec.nodes_of("orderer", "orderer")]
    assert orgs["Plant1MSP"]["AnchorPeers"] == [{"Host": HOSTS["plant1"], "Port": spec.node("peer0.plant1").ports.listen}]
    profile = next(iter(cfg["Profiles"].values()))
    hosts = {c["Host"] for c in profile["Orderer"]["EtcdRaft"]["Consenters"]}
    assert hosts == {HOSTS["orderer"]}


def test_node_configs_listen_on_the_host_only(tmp_path: Path):
    spec = placed()
    layout = Layout(tmp_path)
    peer = spec.node("peer0.plant1")
    core = render_core_yaml(spec, layout, peer, builder_dir=tmp_path / "b", chaincode_server_address=peer.chaincode_address)
    assert core["peer"]["listenAddress"] == core["peer"]["gossip"]["externalEndpoint"] == peer.address
    assert core["operations"]["listenAddress"] == f"{HOSTS['plant1']}:{peer.ports.operations}"
    with pytest.raises(ValueError, match="peer's host"):
        render_core_yaml(spec, layout, peer, builder_dir=tmp_path / "b",
                         chaincode_server_address=f"127.0.0.1:{peer.ports.chaincode}")
    orderer = spec.node("orderer0.orderer")
    o = render_orderer_yaml(spec, layout, orderer)
    assert o["General"]["ListenAddress"] == HOSTS["orderer"]
    assert o["Admin"]["ListenAddress"] == orderer.admin_address
    assert osnadmin_target(spec, layout, orderer)[:2] == ["-o", orderer.admin_address]


def test_processes_run_in_their_orgs_netns(tmp_path: Path):
    spec = placed()
    procs = {p.name: p for p in node_processes(spec, Layout(tmp_path))}
    peer = procs["peer0.hospital2"]
    assert peer.netns == "tl-hospital2"
    assert peer.command[:4] == ["ip", "netns", "exec", "tl-hospital2"] and peer.command[4:] == peer.argv
    assert peer.health == f"http://{HOSTS['hospital2']}:{spec.node('peer0.hospital2').ports.operations}/healthz"
    assert ProcSpec.from_dict({**peer.__dict__}) == peer
    assert ProcSpec("x", "o", "t", ["true"]).command == ["true"]
    # Without netns the process runs where the supervisor does, on its host address.
    outside = {p.name: p for p in node_processes(placed(netns=False), Layout(tmp_path))}
    assert outside["peer0.hospital2"].netns is None and outside["peer0.hospital2"].command == outside["peer0.hospital2"].argv


def test_up_refuses_a_namespace_that_does_not_exist_before_anything_starts(tmp_path):
    from orchestrator.bringup import prepare_home

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: x\nchannel: c\norgs:\n  - {name: orderer, kind: orderer, orderers: 1}\n"
                         "  - {name: plant1, kind: plant, host: 10.77.251.11, netns: tlnosuchns}\n")
    with pytest.raises(SpecError, match=r"^org plant1: network namespace tlnosuchns does not exist; create it "):
        prepare_home(tmp_path / "home", spec_file, None)
    assert not (tmp_path / "home").exists()
