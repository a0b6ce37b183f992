"""The mapping `twinledger twins map` writes (twins.bridge.mapping.dump_mapping from twins.bridge.browse.propose) is
what twins.bridge.mapping parses; the older format without unit/type still parses; several endpoints merge into one
bridge; an endpoint's variables split across connections (twins.bridge.group.split_nodes)."""

import pytest
import yaml

from twins.bridge.browse import Found, clean, guess_kind, propose
from twins.bridge.group import BridgeGroup, split_nodes
from twins.bridge.mapping import AssetInfo, Mapping, MappingError, NodeMap, dump_mapping, merge_mappings, parse_mapping

FOUND = [
    Found("ns=2;s=Press1.Temperature", ("Line 2", "Press1", "Temperature"), "Double", "°C"),
    Found("ns=2;s=Press1.Speed", ("Line 2", "Press1", "Speed"), "UInt16", None),
    Found("ns=2;i=77", ("Line 2", "Press1", "Speed!"), "Float", None),  # cleans to the same name as Speed
    Found("ns=2;s=Bed3.HR", ("Ward", "Bed3", "HR"), "Double", "1/min"),
    Found("ns=2;s=Bed3.SpO2", ("Ward", "Bed3", "SpO2"), "Float", "%"),
    Found("ns=2;s=Tank.Level", ("Tank",  "Level"), "Double", "m"),
]


def test_a_proposed_mapping_round_trips_through_the_parser_with_units_types_and_kinds():
    assets, nodes = propose(FOUND, "plant1")
    text = dump_mapping("opc.tcp://10.0.0.5:4840", "urn:acme", assets, nodes, "line one\nEDIT IT")
    assert text.startswith("# line one\n# EDIT IT\n")
    m = parse_mapping(yaml.safe_load(text))
    assert m.server == "opc.tcp://10.0.0.5:4840" and m.namespace == "urn:acme"
    assert {a: (i.org, i.kind) for a, i in m.assets.items()} == {
        "Line_2.Press1": ("plant1", "machine"), "Ward.Bed3": ("plant1", "patient"), "Tank": ("plant1", "generic")}
    by_id = {n.node_id: n for n in m.nodes}
    assert (by_id["ns=2;s=Press1.Temperature"].unit, by_id["ns=2;s=Press1.Temperature"].data_type) == ("°C", "Double")
    assert by_id["ns=2;s=Press1.Speed"].unit is None and by_id["ns=2;i=77"].prop == "Speed_2"
    assert by_id["ns=2;s=Bed3.SpO2"].asset == "Ward.Bed3" and len(m.nodes) == 6


def test_the_older_format_without_unit_and_type_still_parses():
    m = parse_mapping({"assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
                       "nodes": {"ns=2;s=plant1.m1.Torque": {"asset": "plant1.m1", "property": "Torque"}}})
    assert m.nodes == [NodeMap("ns=2;s=plant1.m1.Torque", "plant1.m1", "Torque", "plant1", "machine")]
    assert m.nodes[0].unit is None and m.nodes[0].data_type is None


def test_names_and_kinds():
    assert clean("Line 2/Press#1") == "Line_2_Press_1" and clean("__") == "x"
    assert guess_kind(["HR", "O2Sat", "Temp"]) == "patient" and guess_kind(["Torque", "Temp"]) == "machine"
    assert guess_kind(["Level", "Valve"]) == "generic"


def test_endpoints_merge_into_one_bridge_and_conflicts_are_refused():
    a = Mapping([NodeMap("n1", "press1", "T", "plant1", "machine")], {"press1": AssetInfo("plant1", "machine")}, "opc.tcp://a:1")
    b = Mapping([NodeMap("n1", "press1", "P", "plant1", "machine")], {"press1": AssetInfo("plant1", "machine")}, "opc.tcp://b:1")
    m = merge_mappings([a, b])
    assert [(n.asset, n.prop) for n in m.nodes] == [("press1", "T"), ("press1", "P")] and m.orgs() == ["plant1"]
    with pytest.raises(MappingError, match="also mapped"):
        merge_mappings([a, a])
    c = Mapping([NodeMap("n2", "press1", "Q", "plant2", "machine")], {"press1": AssetInfo("plant2", "machine")}, "opc.tcp://c:1")
    with pytest.raises(MappingError, match="plant2/machine here but plant1/machine"):
        merge_mappings([a, c])


def _big(n):
    nodes = [NodeMap(f"ns=2;i={i}", f"m{i // 10:04d}", f"p{i % 10}", "plant1", "machine") for i in range(n)]
    return Mapping(nodes, {n.asset: AssetInfo("plant1", "machine") for n in nodes}, "opc.tcp://x:4840", "urn:x")


def test_a_subscription_is_split_above_the_limit_into_balanced_parts_covering_every_variable_once():
    assert len(split_nodes(_big(3000), 3000)) == 1
    parts = split_nodes(_big(7001), 3000)
    assert [len(p.nodes) for p in parts] == [2334, 2334, 2333]
    keys = [(n.asset, n.prop) for p in parts for n in p.nodes]
    assert len(keys) == len(set(keys)) == 7001
    for p in parts:  # each part a mapping of its own: its assets, the endpoint's server and namespace
        assert set(p.assets) == {n.asset for n in p.nodes}
        assert (p.server, p.namespace) == ("opc.tcp://x:4840", "urn:x")
    assert [len(p.nodes) for p in split_nodes(_big(10), 3)] == [3, 3, 2, 2]
    with pytest.raises(ValueError):
        split_nodes(_big(10), 0)


def test_the_bridge_group_opens_one_connection_per_part_and_sums_their_counters():
    other = Mapping([NodeMap("n", "tank", "Level", "plant2", "generic")], {"tank": AssetInfo("plant2", "generic")}, None)
    g = BridgeGroup([(_big(7001), None), (other, "opc.tcp://y:4840")], lambda r: None, max_per_connection=3000)
    assert [b.url for b in g.bridges] == ["opc.tcp://x:4840"] * 3 + ["opc.tcp://y:4840"]
    owned = [k for b in g.bridges for k in b.seq.vars]
    assert len(owned) == len(set(owned)) == 7002
    g.bridges[0].seq.duplicates, g.bridges[3].seq.duplicates = 2, 3
    st = g.status()
    assert st["duplicates"] == 5 and st["connections"] == 4 and st["connects"] == 0 and not st["connected"]
