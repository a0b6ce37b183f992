"""orderer.yaml rendering: exactly Fabric 3's schema, Raft + channel participation, loopback only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from network.layout import Layout
from network.spec import load_spec
from peers.orderer_config import OrdererConfigError, render_orderer_yaml, write_orderer_yaml

# Fabric 3.1.5 orderer/common/localconfig.TopLevel (read off its config.go; v3 dropped
# ReplicationBackgroundRefreshInterval, which an earlier draft of this tree still listed). The orderer unmarshals orderer.yaml *exactly*, so a
# key outside this tree stops it at start. None = leaf; "ANY" = free-form (Consensus is interface{}).
_TLS = {k: None for k in ("Enabled", "PrivateKey", "Certificate", "RootCAs", "ClientAuthRequired",
                          "ClientRootCAs", "TLSHandshakeTimeShift")}
SCHEMA: dict[str, Any] = {
    "General": {
        "ListenAddress": None, "ListenPort": None, "TLS": _TLS,
        "Cluster": {k: None for k in (
            "ListenAddress", "ListenPort", "ServerCertificate", "ServerPrivateKey", "ClientCertificate",
            "ClientPrivateKey", "RootCAs", "DialTimeout", "RPCTimeout", "ReplicationBufferSize",
            "ReplicationPullTimeout", "ReplicationRetryTimeout", "ReplicationPolicy",
            "ReplicationMaxRetries", "SendBufferSize", "CertExpirationWarningThreshold", "TLSHandshakeTimeShift")},
        "Keepalive": {"ServerMinInterval": None, "ServerInterval": None, "ServerTimeout": None},
        "ConnectionTimeout": None, "GenesisMethod": None, "GenesisFile": None, "BootstrapMethod": None,
        "BootstrapFile": None, "Profile": {"Enabled": None, "Address": None}, "LocalMSPDir": None,
        "LocalMSPID": None, "BCCSP": "ANY", "Authentication": {"TimeWindow": None, "NoExpirationChecks": None},
        "MaxRecvMsgSize": None, "MaxSendMsgSize": None,
    },
    "FileLedger": {"Location": None, "Prefix": None},
    "Debug": {"BroadcastTraceDir": None, "DeliverTraceDir": None},
    "Consensus": "ANY",
    "Operations": {"ListenAddress": None, "TLS": _TLS},
    "Metrics": {"Provider": None, "Statsd": {"Network": None, "Address": None, "WriteInterval": None, "Prefix": None}},
    "ChannelParticipation": {"Enabled": None, "MaxRequestBodySize": None},
    "Admin": {"ListenAddress": None, "TLS": _TLS},
}


def check_schema(data: dict[str, Any], schema: dict[str, Any], path: str = "") -> None:
    lower = {k.lower(): v for k, v in schema.items()}  # mapstructure matches keys case-insensitively
    for key, value in data.items():
        assert key.lower() in lower, f"{path}{key} is not a Fabric 3 orderer.yaml key"
        sub = lower[key.lower()]
        if isinstance(sub, dict):
            assert isinstance(value, dict), f"{path}{key} must be a mapping"
            check_schema(value, sub, f"{path}{key}.")


@pytest.fixture
def spec():
    return load_spec()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "home")


def test_every_orderer_matches_fabric3_schema_and_is_complete(spec, layout):
    for node in spec.nodes_of("orderer", "orderer"):
        cfg = render_orderer_yaml(spec, layout, node)
        check_schema(cfg, SCHEMA)
        assert set(cfg) == set(SCHEMA)  # every section present, none invented
        assert "Kafka" not in cfg


def test_raft_with_channel_participation(spec, layout):
    node = spec.node("orderer1.orderer")
    cfg = render_orderer_yaml(spec, layout, node)
    g = cfg["General"]
    assert g["BootstrapMethod"] == "none"
    assert "BootstrapFile" not in g and "GenesisMethod" not in g
    assert cfg["ChannelParticipation"]["Enabled"] is True
    assert g["ListenAddress"] == "127.0.0.1" and g["ListenPort"] == node.ports.listen
    assert g["LocalMSPID"] == "OrdererMSP" and g["LocalMSPDir"] == str(layout.node_msp(node.name))
    tls = layout.node_tls(node.name)
    assert g["TLS"]["Enabled"] is True
    assert g["TLS"]["Certificate"] == str(tls / "server.crt")
    assert g["TLS"]["PrivateKey"] == str(tls / "server.key")
    assert g["TLS"]["RootCAs"] == [str(tls / "ca.crt")]
    assert g["TLS"]["ClientAuthRequired"] is True  # mutual TLS for every client (issue 13)
    # Cluster shares the general listener: no separate listener keys, client cert = server cert.
    assert not {"ListenAddress", "ListenPort", "ServerCertificate", "ServerPrivateKey"} & set(g["Cluster"])
    assert g["Cluster"]["ClientCertificate"] == str(tls / "server.crt")
    data = layout.node_data(node.name)
    assert cfg["FileLedger"]["Location"] == str(data)
    assert cfg["Consensus"]["WALDir"].startswith(str(data)) and cfg["Consensus"]["SnapDir"].startswith(str(data))
    assert cfg["Consensus"]["WALDir"] != cfg["Consensus"]["SnapDir"]
    assert g["BCCSP"] == {"Default": "SW", "SW": {"Hash": "SHA2", "Security": 256}}


def test_admin_is_mutual_tls_with_orderer_org_ca(spec, layout):
    node = spec.node("orderer0.orderer")
    cfg = render_orderer_yaml(spec, layout, node)
    admin = cfg["Admin"]
    assert admin["ListenAddress"] == f"127.0.0.1:{node.ports.admin}"
    assert admin["TLS"]["Enabled"] is True and admin["TLS"]["ClientAuthRequired"] is True
    assert admin["TLS"]["ClientRootCAs"] == [str(layout.ca_cert("orderer"))]
    assert cfg["Operations"]["ListenAddress"] == f"127.0.0.1:{node.ports.operations}"
    assert cfg["Operations"]["TLS"]["Enabled"] is False
    assert cfg["Metrics"]["Provider"] == "prometheus"


def test_rejects_peer_and_writes_file(spec, layout):
    with pytest.raises(OrdererConfigError, match="not an orderer"):
        render_orderer_yaml(spec, layout, spec.node("peer0.hospital1"))
    node = spec.node("orderer2.orderer")
    path = write_orderer_yaml(spec, layout, node)
    assert path == layout.node_config(node.name) / "orderer.yaml"
    assert yaml.safe_load(path.read_text()) == render_orderer_yaml(spec, layout, node)
