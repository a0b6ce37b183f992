"""Peers added to a running network (`twinledger peer add`): their place in the spec and their ports."""

from __future__ import annotations

import pytest


def test_added_peers_take_ports_after_the_founding_nodes_and_the_supervisor():
    from network.spec import load_spec, parse_spec
    from network.spec_model import PORTS_PER_NODE

    spec = load_spec()
    founding = {n.name: n.ports for n in spec.nodes()}
    assert spec.supervisor_port == spec.port_range[1] + 1 and spec.next_peer("plant1") == "peer1.plant1"
    grown = parse_spec({**spec.to_dict(), "added": ["peer1.plant1", "peer1.hospital1", "peer2.plant1"]})
    # No running node's ports move, the supervisor keeps its port, and the new ones follow in join order.
    assert {n.name: n.ports for n in grown.nodes() if n.name in founding} == founding
    assert grown.supervisor_port == spec.supervisor_port
    added = [n for n in grown.nodes() if n.name not in founding]
    assert [n.name for n in added] == ["peer1.plant1", "peer1.hospital1", "peer2.plant1"]
    assert added[0].ports.listen == spec.supervisor_port + PORTS_PER_NODE
    assert [n.name for n in grown.nodes_of("plant1", "peer")] == ["peer0.plant1", "peer1.plant1", "peer2.plant1"]
    assert grown.port_range == (spec.port_base, added[-1].ports.listen + PORTS_PER_NODE - 1)
    assert parse_spec(grown.to_dict()) == grown, "the home's spec file round-trips"
    assert "added" not in spec.to_dict(), "a spec without added peers is written as before"


def test_added_peer_names_are_checked():
    from network.spec import SpecError, load_spec, parse_spec

    base = load_spec().to_dict()
    for added, says in ((["peer2.plant1"], "the next peer of plant1 is peer1.plant1"),
                        (["peer1.orderer"], "is not a hospital or plant"),
                        (["peer1.nowhere"], "is not a hospital or plant"),
                        (["orderer3.hospital1"], "is not a peer name"),  # orderers: only the orderer org's
                        ("peer1.plant1", "must be a list"),
                        ([f"peer{i}.plant1" for i in range(1, 9)], "at most 8 peers per org")):
        with pytest.raises(SpecError, match=says):
            parse_spec({**base, "added": added})


def test_added_and_removed_orderers_keep_every_other_nodes_ports():
    from network.spec import SpecError, load_spec, parse_spec

    spec = load_spec()
    assert spec.next_orderer() == "orderer3.orderer"
    grown = parse_spec({**spec.to_dict(), "added": ["peer1.plant1", "orderer3.orderer"]})
    o3 = grown.node("orderer3.orderer")
    assert o3.type == "orderer" and o3.org == "orderer" and grown.next_orderer() == "orderer4.orderer"
    assert [n.name for n in grown.nodes_of("orderer", "orderer")][-1] == "orderer3.orderer"
    shrunk = parse_spec({**grown.to_dict(), "removed_nodes": ["orderer3.orderer", "orderer0.orderer"]})
    assert [n.name for n in shrunk.nodes_of("orderer", "orderer")] == ["orderer1.orderer", "orderer2.orderer"]
    assert {n.name: n.ports for n in shrunk.nodes()} == {n.name: n.ports for n in grown.nodes()
                                                         if n.name not in ("orderer3.orderer", "orderer0.orderer")}
    assert shrunk.next_orderer() == "orderer4.orderer", "a removed orderer's name is not reused"
    assert parse_spec(shrunk.to_dict()) == shrunk
    for bad, why in ((["orderer4.orderer"], "the next orderer of orderer is orderer3.orderer"),
                     (["orderer3.plant1"], "not a peer name")):
        with pytest.raises(SpecError, match=why):
            parse_spec({**spec.to_dict(), "added": bad})
    for bad, why in ((["peer0.plant1"], "not an orderer"), (["orderer0.orderer", "orderer0.orderer"], "appears twice"),
                     ("orderer0.orderer", "must be a list")):
        with pytest.raises(SpecError, match=why):
            parse_spec({**spec.to_dict(), "removed_nodes": bad})
    with pytest.raises(SpecError, match="no orderer"):
        parse_spec({**spec.to_dict(), "removed_nodes": ["orderer0.orderer", "orderer1.orderer", "orderer2.orderer"]})
