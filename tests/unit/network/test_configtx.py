"""configtx.yaml for the application channel (Fabric 3: no system channel, Raft, V3_0)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from network.configtx import (
    configtx_path,
    configtxgen_command,
    configtxgen_env,
    genesis_block_path,
    org_policies,
    profile_name,
    render_configtx,
    write_configtx,
)
from network.layout import Layout
from network.spec import SpecError, load_spec, parse_spec

# Fabric 3 internal/configtxgen/genesisconfig. configtxgen unmarshals exactly: unknown keys fail.
# None = leaf, "MAP" = free-form map (policies, capabilities, ACLs, profiles).
POLICY = {"Type": None, "Rule": None}
ORG = {"Name": None, "ID": None, "MSPDir": None, "MSPType": None, "Policies": ("MAP", POLICY),
       "AnchorPeers": [{"Host": None, "Port": None}], "OrdererEndpoints": None, "AdminPrincipal": None,
       "SkipAsForeign": None}
APPLICATION = {"Organizations": [ORG], "Capabilities": None, "Policies": ("MAP", POLICY), "ACLs": None}
ORDERER = {
    "OrdererType": None, "Addresses": None, "BatchTimeout": None,
    "BatchSize": {"MaxMessageCount": None, "AbsoluteMaxBytes": None, "PreferredMaxBytes": None},
    "ConsenterMapping": None,
    "EtcdRaft": {"Consenters": [{"Host": None, "Port": None, "ClientTLSCert": None, "ServerTLSCert": None}],
                 "Options": {"TickInterval": None, "ElectionTick": None, "HeartbeatTick": None,
                             "MaxInflightBlocks": None, "SnapshotIntervalSize": None}},
    "SmartBFT": None, "Organizations": [ORG], "MaxChannels": None, "Capabilities": None,
    "Policies": ("MAP", POLICY),
}
PROFILE = {"Consortium": None, "Application": APPLICATION, "Orderer": ORDERER, "Consortiums": None,
           "Capabilities": None, "Policies": ("MAP", POLICY)}
TOP = {"Profiles": ("MAP", PROFILE), "Organizations": [ORG], "Channel": PROFILE, "Application": APPLICATION,
       "Orderer": ORDERER, "Capabilities": None}


def check(data: Any, schema: Any, path: str) -> None:
    if schema is None:
        return
    if isinstance(schema, tuple):  # ("MAP", value schema)
        assert isinstance(data, dict), path
        for k, v in data.items():
            check(v, schema[1], f"{path}.{k}")
    elif isinstance(schema, list):
        assert isinstance(data, list), path
        for i, v in enumerate(data):
            check(v, schema[0], f"{path}[{i}]")
    else:
        assert isinstance(data, dict), path
        lower = {k.lower(): v for k, v in schema.items()}
        for k, v in data.items():
            assert k.lower() in lower, f"{path}.{k} is not a configtx.yaml key"
            check(v, lower[k.lower()], f"{path}.{k}")


@pytest.fixture
def spec():
    return load_spec()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "home")


def profile_of(spec, layout) -> dict[str, Any]:
    return render_configtx(spec, layout)["Profiles"][profile_name(spec)]


def test_schema_and_no_system_channel(spec, layout):
    cfg = render_configtx(spec, layout)
    check(cfg, TOP, "configtx")
    prof = cfg["Profiles"][profile_name(spec)]
    assert "Consortiums" not in prof and "Consortium" not in prof
    # V3_0 rejects global orderer addresses; endpoints live in the orderer org.
    assert "Addresses" not in prof["Orderer"]


def test_capabilities(spec, layout):
    cfg = render_configtx(spec, layout)
    prof = cfg["Profiles"][profile_name(spec)]
    assert prof["Capabilities"] == {"V3_0": True}
    assert prof["Orderer"]["Capabilities"] == {"V2_0": True}
    assert prof["Application"]["Capabilities"] == {"V2_5": True}
    assert cfg["Capabilities"]["Channel"] == {"V3_0": True}


def test_organizations(spec, layout):
    cfg = render_configtx(spec, layout)
    by_id = {o["ID"]: o for o in cfg["Organizations"]}
    assert set(by_id) == {o.msp_id for o in spec.orgs}
    for org in spec.orgs:
        d = by_id[org.msp_id]
        assert d["Name"] == org.msp_id
        assert d["MSPDir"] == str(layout.org_msp(org.name))
        if org.kind == "orderer":
            assert d["OrdererEndpoints"] == [f"127.0.0.1:{n.ports.listen}" for n in spec.nodes_of(org.name, "orderer")]
            assert "AnchorPeers" not in d
        else:
            peer0 = spec.node(f"peer0.{org.name}")
            assert d["AnchorPeers"] == [{"Host": "127.0.0.1", "Port": peer0.ports.listen}]
            m = org.msp_id
            assert d["Policies"]["Readers"]["Rule"] == f"OR('{m}.admin', '{m}.peer', '{m}.client')"
            assert d["Policies"]["Writers"]["Rule"] == f"OR('{m}.admin', '{m}.client')"
            assert d["Policies"]["Admins"]["Rule"] == f"OR('{m}.admin')"
            assert d["Policies"]["Endorsement"]["Rule"] == f"OR('{m}.peer')"
    prof = profile_of(spec, layout)
    assert [o["ID"] for o in prof["Application"]["Organizations"]] == [o.msp_id for o in spec.member_orgs]
    assert [o["ID"] for o in prof["Orderer"]["Organizations"]] == ["OrdererMSP"]


def test_orderer_org_writers_include_orderers():
    # Blocks are signed by orderer identities and checked against ANY Writers of the orderer org.
    spec = load_spec()
    assert org_policies(spec.orderer_org)["Writers"]["Rule"] == "OR('OrdererMSP.member')"


def test_raft_consenters_and_batch(spec, layout):
    orderer = profile_of(spec, layout)["Orderer"]
    assert orderer["OrdererType"] == "etcdraft"
    nodes = spec.nodes_of(spec.orderer_org.name, "orderer")
    consenters = orderer["EtcdRaft"]["Consenters"]
    assert len(consenters) == len(nodes) == 3
    for c, n in zip(consenters, nodes):
        cert = str(layout.node_tls(n.name) / "server.crt")
        assert c == {"Host": "127.0.0.1", "Port": n.ports.listen, "ClientTLSCert": cert, "ServerTLSCert": cert}
    assert orderer["BatchTimeout"] == "100ms"
    assert orderer["BatchSize"] == {"MaxMessageCount": 500, "AbsoluteMaxBytes": "10 MB", "PreferredMaxBytes": "2 MB"}
    assert orderer["Policies"]["BlockValidation"] == {"Type": "ImplicitMeta", "Rule": "ANY Writers"}
    assert set(orderer["EtcdRaft"]["Options"]) == {"TickInterval", "ElectionTick", "HeartbeatTick",
                                                  "MaxInflightBlocks", "SnapshotIntervalSize"}


def test_batch_from_spec_and_single_orderer(layout):
    def make(absolute: int, preferred: int):
        return parse_spec({
            "batch": {"timeout_ms": 250, "max_message_count": 42, "absolute_max_bytes": absolute,
                      "preferred_max_bytes": preferred},
            "orgs": [{"name": "ord", "kind": "orderer", "orderers": 1}, {"name": "plant1", "kind": "plant"}],
        })

    spec = make(10 * 1024 * 1024 + 1, 512 * 1024)
    prof = profile_of(spec, layout)
    orderer = prof["Orderer"]
    assert orderer["BatchTimeout"] == "250ms"
    assert orderer["BatchSize"]["MaxMessageCount"] == 42
    # configtxgen's byte-size strings need a unit; sizes that are no whole KB stay plain numbers.
    assert orderer["BatchSize"]["AbsoluteMaxBytes"] == 10 * 1024 * 1024 + 1
    assert orderer["BatchSize"]["PreferredMaxBytes"] == "512 KB"
    assert len(orderer["EtcdRaft"]["Consenters"]) == 1
    assert orderer["Organizations"][0]["OrdererEndpoints"] == [f"127.0.0.1:{spec.node('orderer0.ord').ports.listen}"]
    # A preferred size above the absolute one is refused with the spec, before any configtx is rendered.
    with pytest.raises(SpecError, match="preferred_max_bytes"):
        make(8192, 512 * 1024)


def test_byte_sizes_use_configtxgen_units(spec, layout):
    # Fabric's byteSizeDecodeHook: ^([0-9]+)\s*(?i)(k|m|g)b?$ -- Go's (?i) covers the rest of the pattern.
    size_re = re.compile(r"^[0-9]+\s*(?i:[kmg]b?)$")
    orderer = profile_of(spec, layout)["Orderer"]
    for v in (*orderer["BatchSize"].values(), orderer["EtcdRaft"]["Options"]["SnapshotIntervalSize"]):
        assert isinstance(v, int) or size_re.match(v), v


def test_application_policies_and_acls(spec, layout):
    app = profile_of(spec, layout)["Application"]
    assert app["Policies"]["LifecycleEndorsement"] == {"Type": "ImplicitMeta", "Rule": "MAJORITY Endorsement"}
    assert app["Policies"]["Endorsement"] == {"Type": "ImplicitMeta", "Rule": "MAJORITY Endorsement"}
    assert app["ACLs"]["peer/Propose"] == "/Channel/Application/Writers"
    assert not any(k.startswith("lscc/") for k in app["ACLs"])
    assert all(v.startswith("/Channel/Application/") for v in app["ACLs"].values())


def test_every_address_is_loopback(spec, layout):
    text = yaml.safe_dump(render_configtx(spec, layout))
    for host, _ in re.findall(r"(\d+\.\d+\.\d+\.\d+):(\d+)", text):
        assert host == "127.0.0.1"
    assert "Host: 127.0.0.1" in text


def test_write_and_command(spec, layout):
    path = write_configtx(spec, layout)
    assert path == configtx_path(layout) == layout.channel_dir / "configtx.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded == render_configtx(spec, layout)
    assert "&id" not in path.read_text() and "*id" not in path.read_text()  # no YAML aliases
    cmd = configtxgen_command("/opt/fabric/bin", layout, spec)
    assert cmd[0] == "/opt/fabric/bin/configtxgen"
    args = dict(zip(cmd[1::2], cmd[2::2]))
    assert args == {"-configPath": str(layout.channel_dir), "-profile": profile_name(spec),
                    "-channelID": spec.channel, "-outputBlock": str(genesis_block_path(layout, spec))}
    assert genesis_block_path(layout, spec).parent == layout.channel_dir
    assert configtxgen_env(layout) == {"FABRIC_CFG_PATH": str(layout.channel_dir)}
