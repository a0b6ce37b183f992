"""Orgs added to a running network (`twinledger org add`): their place in the spec and their nodes' ports."""

from __future__ import annotations

import pytest

from network.spec import SpecError, load_spec, parse_spec
from network.spec_model import PORTS_PER_NODE


def grown(joining: bool = True):
    base = load_spec().to_dict()
    return parse_spec({**base, "added_orgs": [{"name": "hospital3", "kind": "hospital", "joining": joining}],
                       "added": ["peer1.plant1", "ca.hospital3", "peer0.hospital3", "peer1.hospital3"]})


def test_an_added_org_takes_ports_after_every_running_node_and_is_no_member_while_joining():
    spec = load_spec()
    founding = {n.name: n.ports for n in spec.nodes()}
    g = grown()
    assert {n.name: n.ports for n in g.nodes() if n.name in founding} == founding
    assert g.supervisor_port == spec.supervisor_port
    added = [n for n in g.nodes() if n.name not in founding]
    assert [(n.name, n.type, n.org) for n in added] == [
        ("peer1.plant1", "peer", "plant1"), ("ca.hospital3", "ca", "hospital3"),
        ("peer0.hospital3", "peer", "hospital3"), ("peer1.hospital3", "peer", "hospital3")]
    assert [n.ports.listen for n in added] == [spec.supervisor_port + PORTS_PER_NODE * i for i in range(1, 5)]
    h3 = g.org("hospital3")
    assert h3.msp_id == "Hospital3MSP" and not h3.founding and h3.joining
    assert "hospital3" not in [o.name for o in g.member_orgs], "not a channel member until the channel accepts it"
    assert "hospital3" in [o.name for o in g.orgs], "its CA runs and its identities are enrolled meanwhile"
    assert g.next_peer("hospital3") == "peer2.hospital3"
    member = grown(joining=False)
    assert "hospital3" in [o.name for o in member.member_orgs]
    for s in (g, member):
        assert parse_spec(s.to_dict()) == s, "the home's spec file round-trips"
    assert "joining" not in member.to_dict()["added_orgs"][0]
    assert "added_orgs" not in spec.to_dict(), "a spec without added orgs is written as before"


def test_added_orgs_are_checked():
    base = load_spec().to_dict()
    cases = (
        ([{"name": "plant1", "kind": "plant"}], ["ca.plant1"], "appears twice"),
        ([{"name": "hospital3", "kind": "orderer"}], ["ca.hospital3", "peer0.hospital3"], "a hospital or a plant"),
        ([{"name": "hospital3", "kind": "hospital", "msp_id": "Plant1MSP"}], ["ca.hospital3", "peer0.hospital3"],
         "already another org's"),
        ([{"name": "hospital3", "kind": "hospital"}], ["peer0.hospital3"], "ca.hospital3 must come before"),
        ([{"name": "hospital3", "kind": "hospital"}], ["ca.hospital3"], "needs ca.hospital3 and peer0.hospital3"),
        ([{"name": "hospital3", "kind": "hospital"}], ["ca.hospital3", "ca.hospital3", "peer0.hospital3"], "twice"),
        ([], ["ca.plant1"], "not an added org"),
        ([{"name": "hospital3", "kind": "hospital", "host": "hospital3.example"}], ["ca.hospital3", "peer0.hospital3"],
         "not an IPv4 address"),
        ([{"name": "hospital3", "kind": "hospital", "joining": "yes"}], ["ca.hospital3", "peer0.hospital3"],
         "joining must be true or false"),
    )
    for orgs, added, says in cases:
        with pytest.raises(SpecError, match=says):
            parse_spec({**base, "added_orgs": orgs, "added": added})
