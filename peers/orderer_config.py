"""An orderer's orderer.yaml for a Raft node that joins channels through the participation API.

Unlike the peer, the orderer loads orderer.yaml with an *exact* unmarshal into Fabric's
``localconfig.TopLevel``: a key Fabric 3 does not know (``Kafka``, ``General.GenesisMethod`` in the wrong
place, a typo) stops the orderer at start. So this module renders every section Fabric 3.1 knows --
General, FileLedger, Debug, Consensus, Operations, Metrics, ChannelParticipation, Admin -- and nothing
else. ORDERER_* environment variables can still override single keys at launch.

No system channel: ``General.BootstrapMethod: none``; channels are joined later with ``osnadmin
channel join`` against the Admin endpoint, using the genesis block from ``network.configtx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from network.layout import Layout
from network.spec_model import Node, Spec
from peers.core_config import KEEPALIVE_MIN_INTERVAL
from peers.generated_yaml import write_generated_yaml

#: Only for listeners that stay disabled (profiling, statsd): never bound.
HOST = "127.0.0.1"
MAX_MSG_SIZE = 100 * 1024 * 1024  # must match the peers' maxRecvMsgSize / maxSendMsgSize


class OrdererConfigError(ValueError):
    """Inputs that cannot give a working orderer.yaml; the message says what to change."""


def orderer_address(node: Node) -> str:
    """host:port for Broadcast/Deliver *and* Raft traffic between orderers (one shared listener)."""
    return node.address


def admin_address(node: Node) -> str:
    """host:port of the channel participation API (``osnadmin -o``)."""
    return node.admin_address


def operations_address(node: Node) -> str:
    return f"{node.host}:{node.ports.operations}"


def etcdraft_wal_dir(layout: Layout, node: Node) -> Path:
    return layout.node_data(node.name) / "etcdraft" / "wal"


def etcdraft_snap_dir(layout: Layout, node: Node) -> Path:
    return layout.node_data(node.name) / "etcdraft" / "snapshot"


def render_orderer_yaml(
    spec: Spec,
    layout: Layout,
    node: Node,
    *,
    send_buffer_size: int = 100,
) -> dict[str, Any]:
    """The complete orderer.yaml of one orderer as a dict (``write_orderer_yaml`` puts it on disk).

    ``send_buffer_size`` is Raft's egress buffer per peer orderer (Fabric's default 100): consensus
    messages are dropped and transactions wait when it is full.
    """
    if node.type != "orderer":
        raise OrdererConfigError(f"{node.name} is a {node.type}, not an orderer; orderer.yaml is only for orderers")
    if send_buffer_size < 1:
        raise OrdererConfigError(f"send_buffer_size must be >= 1, not {send_buffer_size}")
    org = spec.org(node.org)
    tls = layout.node_tls(node.name)
    cert, key, ca = str(tls / "server.crt"), str(tls / "server.key"), str(tls / "ca.crt")

    return {
        "General": {
            "ListenAddress": node.host,
            "ListenPort": node.ports.listen,
            "TLS": {
                "Enabled": True,
                "PrivateKey": key,
                "Certificate": cert,
                "RootCAs": [ca],
                # Mutual TLS: peers, the peer CLI and the other orderers must present a TLS client
                # certificate. Static roots are this org's CA; for each joined channel Fabric adds the
                # TLS roots of its application and orderer orgs. Envelopes are still authorised by
                # their signatures, and Raft traffic (sharing this listener) additionally by the
                # consenter's ClientTLSCert in the channel config.
                "ClientAuthRequired": True,
                "ClientRootCAs": [ca],
            },
            # Below the peers' 60 s delivery-client pings, for the reason given at core_config.KEEPALIVE_MIN_INTERVAL.
            "Keepalive": {"ServerMinInterval": KEEPALIVE_MIN_INTERVAL, "ServerInterval": "7200s", "ServerTimeout": "20s"},
            "MaxRecvMsgSize": MAX_MSG_SIZE,
            "MaxSendMsgSize": MAX_MSG_SIZE,
            "Cluster": {
                # ListenAddress/ListenPort/ServerCertificate/ServerPrivateKey are left out on purpose:
                # then intra-cluster Raft traffic uses the General listener above. One port per
                # orderer is enough on one machine, and the consenter entries in configtx.yaml name
                # exactly this port and this certificate.
                "SendBufferSize": send_buffer_size,
                # The certificate this node presents when it dials the other orderers; it must equal
                # its consenter's ClientTLSCert in the channel config (network.configtx uses the same
                # server.crt for both).
                "ClientCertificate": cert,
                "ClientPrivateKey": key,
                "RootCAs": [ca],
                "DialTimeout": "1s",
                "RPCTimeout": "7s",
                "ReplicationBufferSize": 20971520,
                "ReplicationPullTimeout": "5s",
                "ReplicationRetryTimeout": "5s",
                "ReplicationMaxRetries": 12,
                "CertExpirationWarningThreshold": "168h",
            },
            # No system channel (removed in Fabric 3): start empty, join channels via Admin.
            "BootstrapMethod": "none",
            "LocalMSPDir": str(layout.node_msp(node.name)),
            "LocalMSPID": org.msp_id,
            "Profile": {"Enabled": False, "Address": f"{HOST}:6060"},
            # Software crypto, SHA2-256 (KeyStore defaults to <LocalMSPDir>/keystore).
            "BCCSP": {"Default": "SW", "SW": {"Hash": "SHA2", "Security": 256}},
            "Authentication": {"TimeWindow": "15m", "NoExpirationChecks": False},
        },
        "FileLedger": {"Location": str(layout.node_data(node.name))},
        "Debug": {"BroadcastTraceDir": "", "DeliverTraceDir": ""},
        "Operations": {
            "ListenAddress": operations_address(node),
            # Plain HTTP on loopback for the supervisor's /healthz polls and bench/'s /metrics
            # scrapes; nothing outside this machine can reach it and it exposes no ledger data.
            "TLS": {
                "Enabled": False,
                "Certificate": "",
                "PrivateKey": "",
                "ClientAuthRequired": False,
                "ClientRootCAs": [],
            },
        },
        "Metrics": {
            "Provider": "prometheus",
            "Statsd": {"Network": "udp", "Address": f"{HOST}:8125", "WriteInterval": "30s", "Prefix": ""},
        },
        "ChannelParticipation": {"Enabled": True, "MaxRequestBodySize": "1 MB"},
        "Admin": {
            "ListenAddress": admin_address(node),
            # Joining and removing channels changes what this node orders, so the Admin endpoint
            # takes only mutual TLS with a client certificate issued by the orderer org's CA (the
            # orderer org admin's TLS certificate). Fabric refuses Admin TLS without client auth.
            "TLS": {
                "Enabled": True,
                "Certificate": cert,
                "PrivateKey": key,
                "RootCAs": [ca],
                "ClientAuthRequired": True,
                "ClientRootCAs": [str(layout.ca_cert(org.name))],
            },
        },
        # Read by the etcdraft consenter (not part of the exact schema above, but the only keys it knows).
        "Consensus": {
            "WALDir": str(etcdraft_wal_dir(layout, node)),
            "SnapDir": str(etcdraft_snap_dir(layout, node)),
        },
    }


def write_orderer_yaml(spec: Spec, layout: Layout, node: Node, **tuning: Any) -> Path:
    """Write ``<node config>/orderer.yaml``; start the orderer with FABRIC_CFG_PATH set to that folder."""
    config = render_orderer_yaml(spec, layout, node, **tuning)
    return write_generated_yaml(layout.node_config(node.name) / "orderer.yaml", config, f"orderer.yaml of {node.name}")
