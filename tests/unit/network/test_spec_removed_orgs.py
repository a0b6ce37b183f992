"""Orgs removed from a running network (`twinledger org remove`): their mark in the spec, and no other node moves."""

from __future__ import annotations

import pytest

from network.spec import SpecError, load_spec, parse_spec


def marked(name: str, mark: str, *, added: bool = False):
    base = load_spec().to_dict()
    if added:
        return parse_spec({**base, "added_orgs": [{"name": "hospital3", "kind": "hospital", mark: True}],
                           "added": ["ca.hospital3", "peer0.hospital3"]})
    return parse_spec({**base, "orgs": [{**o, mark: True} if o["name"] == name else o for o in base["orgs"]]})


def test_a_removed_org_keeps_its_ports_slots_and_no_other_node_moves():
    spec = load_spec()
    ports = {n.name: n.ports for n in spec.nodes()}
    leaving, removed = marked("hospital2", "leaving"), marked("hospital2", "removed")
    # Leaving: still a member (the channel holds it until the update), its nodes still run.
    assert "hospital2" in [o.name for o in leaving.member_orgs] and leaving.nodes_of("hospital2")
    assert {n.name: n.ports for n in leaving.nodes()} == ports
    # Removed: no member, none of its nodes listed, every other node on its old ports, the supervisor's too.
    assert "hospital2" not in [o.name for o in removed.member_orgs]
    assert "hospital2" not in [o.name for o in removed.live_orgs] and "hospital2" in [o.name for o in removed.orgs]
    assert removed.nodes_of("hospital2") == []
    assert {n.name: n.ports for n in removed.nodes()} == {k: v for k, v in ports.items() if not k.endswith(".hospital2")}
    assert removed.supervisor_port == spec.supervisor_port
    for s in (leaving, removed):
        assert parse_spec(s.to_dict()) == s, "the home's spec file round-trips"
    assert [o for o in removed.to_dict()["orgs"] if o["name"] == "hospital2"][0]["removed"] is True


def test_an_added_org_can_be_removed_too():
    spec = marked("hospital3", "removed", added=True)
    assert spec.org("hospital3").removed and spec.nodes_of("hospital3") == []
    assert parse_spec(spec.to_dict()) == spec


@pytest.mark.parametrize(("orgs_patch", "fragment"), [
    ({"name": "orderer", "removed": True}, "the orderer org cannot be removed"),
    ({"name": "plant1", "removed": "yes"}, "removed must be true or false"),
    ({"name": "plant1", "removed": True, "leaving": True}, "leaving and removed are two stages"),
])
def test_marks_are_checked(orgs_patch, fragment):
    base = load_spec().to_dict()
    orgs = [{**o, **orgs_patch} if o["name"] == orgs_patch["name"] else o for o in base["orgs"]]
    with pytest.raises(SpecError, match=fragment):
        parse_spec({**base, "orgs": orgs})
    with pytest.raises(SpecError, match="still joining cannot be leaving or removed"):
        parse_spec({**base, "added_orgs": [{"name": "hospital3", "kind": "hospital", "joining": True, "leaving": True}],
                    "added": ["ca.hospital3", "peer0.hospital3"]})
