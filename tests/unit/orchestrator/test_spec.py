"""The consortium spec: defaults, derived nodes and ports, and one clear error per bad input."""

import pytest

from network.spec import SpecError, dump_spec, load_spec, parse_spec
from network.spec_model import PORTS_PER_NODE
import yaml


def test_default_spec_is_the_documented_consortium():
    spec = load_spec()
    assert [o.name for o in spec.member_orgs] == ["hospital1", "hospital2", "plant1", "plant2"]
    assert spec.orderer_org.orderers == 3
    assert spec.org("hospital1").msp_id == "Hospital1MSP"
    types = [n.type for n in spec.nodes()]
    assert types.count("ca") == 5 and types.count("orderer") == 3 and types.count("peer") == 4


def test_ports_are_unique_and_follow_the_base():
    a, b = load_spec(port_base=20000), load_spec(port_base=30000)
    ports_a = [p for n in a.nodes() for p in (n.ports.listen, n.ports.operations, n.ports.admin, n.ports.chaincode)]
    assert len(ports_a) == len(set(ports_a))
    assert min(ports_a) == 20000 and max(ports_a) < 20000 + len(a.nodes()) * PORTS_PER_NODE
    ports_b = {n.ports.listen for n in b.nodes()}
    assert not ports_b & set(ports_a), "two port bases must not overlap"


def test_spec_round_trips_through_yaml():
    spec = load_spec(port_base=21000)
    assert parse_spec(yaml.safe_load(dump_spec(spec))) == spec


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(orgs=[]), "non-empty list 'orgs'"),
        (lambda d: d["orgs"].append({"name": "hospital1", "kind": "hospital"}), "appears twice"),
        (lambda d: d["orgs"].append({"name": "lab1", "kind": "lab"}), "kind must be hospital, plant or orderer"),
        (lambda d: d["orgs"].append({"name": "Bad Name", "kind": "plant"}), "lowercase"),
        (lambda d: d["orgs"][0].update(orderers=2), "Raft needs 1, 3 or 5"),
        (lambda d: d.update(port_base=80), "port_base"),
        (lambda d: d["orgs"].append({"name": "orderer2", "kind": "orderer"}), "exactly one org of kind orderer"),
        (lambda d: d.update(channel="Bad_Channel"), "not a valid Fabric channel name"),
        (lambda d: d.update(batch={"timeout_ms": 0}), "batch.timeout_ms"),
    ],
)
def test_bad_specs_fail_with_one_clear_message(mutate, message):
    data = yaml.safe_load(dump_spec(load_spec()))
    mutate(data)
    with pytest.raises(SpecError, match=message):
        parse_spec(data)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("orgs: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_unknown_org_and_node_name_the_known_ones():
    spec = load_spec()
    with pytest.raises(SpecError, match="hospital1"):
        spec.org("clinic9")
    with pytest.raises(SpecError, match="twinledger status"):
        spec.node("peer7.plant1")
