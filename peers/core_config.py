"""A peer's core.yaml, rendered complete from the spec and the home-folder layout.

Fabric reads core.yaml with viper and looks keys up one by one; a missing section does not fall back
to a default but yields zero values or nil maps, which surface as odd failures or panics far from the
cause. So this module renders the *whole* file -- every section of Fabric's sample core.yaml (v2.5/v3)
-- and sets the TwinLedger-specific values on top. CORE_* environment variables can still override
single keys at launch.

Addresses: every listener is on the node's host (its org's ``host`` in the spec, 127.0.0.1 unless given)
with a port from the spec, so networks with different ``port_base`` values never collide and nothing
listens beyond the address the spec names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from network.layout import Layout
from network.spec_model import Node, Spec
from peers.ccaas import (
    BUILDER_CONTEXT_ENV,
    BUILDER_NAME,
    CHAINCODE_ROOT_CERT_KEY,
    PEER_CLIENT_CERT_KEY,
    PEER_CLIENT_KEY_KEY,
    builder_context,
    write_builder_context,
)
from peers.generated_yaml import write_generated_yaml

#: Only for listeners that stay disabled (profiling, statsd, CouchDB): never bound.
HOST = "127.0.0.1"
# Fabric's sample defaults for the knobs that matter for throughput; keyword arguments override them.
DEFAULT_ENDORSER_CONCURRENCY = 2500
DEFAULT_DELIVER_CONCURRENCY = 2500
DEFAULT_GATEWAY_CONCURRENCY = 500
MAX_MSG_SIZE = 100 * 1024 * 1024  # Fabric's default; every node must agree on it
#: The least time between a client's keepalive pings a peer or orderer accepts (the clients ping every 60 s).
KEEPALIVE_MIN_INTERVAL = "25s"

_LOG_FORMAT = "%{color}%{time:2006-01-02 15:04:05.000 MST} [%{module}] %{shortfunc} -> %{level:.4s} %{id:03x}%{color:reset} %{message}"


class CoreConfigError(ValueError):
    """Inputs that cannot give a working core.yaml; the message says what to change."""


def peer_address(node: Node) -> str:
    """host:port where the peer serves clients, gossip, the Gateway and discovery."""
    return node.address


def peer_chaincode_listen_address(node: Node) -> str:
    """The peer's own chaincode listener (for chaincode that dials the peer).

    With CCaaS the peer dials the chaincode, so nothing connects here -- but the peer binds this
    listener at start regardless, and when it is unset it binds <peer host>:7052, which collides as
    soon as two peers run on one machine. ``ports.chaincode`` is reserved for the peer's chaincode
    *server* (the CCaaS process), so the listener takes the node's ``admin`` port, which a peer never
    uses otherwise (the admin port serves only an orderer's channel participation API).
    """
    return f"{node.host}:{node.ports.admin}"


def operations_address(node: Node) -> str:
    return f"{node.host}:{node.ports.operations}"


def render_core_yaml(
    spec: Spec,
    layout: Layout,
    node: Node,
    *,
    builder_dir: Path | str,
    chaincode_server_address: str,
    endorser_concurrency: int = DEFAULT_ENDORSER_CONCURRENCY,
    deliver_concurrency: int = DEFAULT_DELIVER_CONCURRENCY,
    gateway_concurrency: int = DEFAULT_GATEWAY_CONCURRENCY,
    validator_pool_size: int = 0,
    gateway_endorsement_timeout: str = "30s",
    # Per orderer: a broadcast stuck on a follower (forwarding to a Raft leader that just died: each
    # forward waits out the orderers' 1 s cluster DialTimeout, one after the other) is given up after
    # this long and the gateway tries the next orderer, within the client's own Submit deadline.
    # A healthy orderer answers a broadcast in milliseconds (it only queues the envelope).
    gateway_broadcast_timeout: str = "1s",
    gateway_dial_timeout: str = "2m",
    chaincode_execute_timeout: str = "30s",
) -> dict[str, Any]:
    """The complete core.yaml of one peer as a dict (``write_core_yaml`` puts it on disk).

    ``builder_dir`` holds the CCaaS builder (``bin/detect|build|release``, see
    ``peers.ccaas.install_builder``); ``chaincode_server_address`` is where this peer's chaincode
    server listens -- package addresses written as ``{{.chaincode_address}}`` resolve to it.
    ``validator_pool_size`` 0 means one validation goroutine per CPU (Fabric's default).
    """
    if node.type != "peer":
        raise CoreConfigError(f"{node.name} is a {node.type}, not a peer; core.yaml is only for peers")
    org = spec.org(node.org)
    _check_chaincode_server_address(node, chaincode_server_address)
    for name, value in (
        ("endorser_concurrency", endorser_concurrency),
        ("deliver_concurrency", deliver_concurrency),
        ("gateway_concurrency", gateway_concurrency),
        ("validator_pool_size", validator_pool_size),
    ):
        if value < 0:
            raise CoreConfigError(f"{name} must be >= 0, not {value}")

    tls = layout.node_tls(node.name)
    address = peer_address(node)
    cc_listen = peer_chaincode_listen_address(node)
    # Gossip bootstrap must name peers of the *same* org (the peer refuses others). With one peer in
    # the org it points at itself, as Fabric's sample does; that is harmless.
    same_org = [peer_address(n) for n in spec.nodes_of(node.org, "peer") if n.name != node.name]
    bootstrap = " ".join(same_org) if same_org else address

    return {
        "peer": {
            "id": node.name,
            "networkId": spec.name,
            "listenAddress": address,
            "chaincodeListenAddress": cc_listen,
            "chaincodeAddress": cc_listen,
            "address": address,
            "addressAutoDetect": False,
            "gateway": {
                "enabled": True,
                "endorsementTimeout": gateway_endorsement_timeout,
                "broadcastTimeout": gateway_broadcast_timeout,
                "dialTimeout": gateway_dial_timeout,
            },
            "keepalive": {
                "interval": "7200s",
                "timeout": "20s",
                # Strictly below the clients' 60 s ping interval: at exactly 60 s, timer jitter makes a ping
                # arrive "too early", two strikes and the server sends GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
                # (seen between the peers under load; grpc doc/keepalive.md). Other peers and the orderers'
                # delivery clients ping this listener.
                "minInterval": KEEPALIVE_MIN_INTERVAL,
                "client": {"interval": "60s", "timeout": "20s"},
                "deliveryClient": {"interval": "60s", "timeout": "20s"},
            },
            "gossip": {
                "bootstrap": bootstrap,
                # Fabric 3 peers each pull blocks from the ordering service themselves (block
                # dissemination over gossip is gone), so every peer is a static "leader" and no
                # election runs. Gossip still carries membership, private data and discovery info.
                "useLeaderElection": False,
                "orgLeader": True,
                "membershipTrackerInterval": "5s",
                "endpoint": address,
                "maxBlockCountToStore": 10,
                "maxPropagationBurstLatency": "10ms",
                "maxPropagationBurstSize": 10,
                "propagateIterations": 1,
                "propagatePeerNum": 3,
                "pullInterval": "2s",
                "pullPeerNum": 3,
                # State info carries each peer's installed chaincodes and ledger height; discovery (and
                # so the Gateway's endorser choice) only sees a chaincode on a peer once it arrived.
                "requestStateInfoInterval": "1s",
                "publishStateInfoInterval": "1s",
                "stateInfoRetentionInterval": None,
                "publishCertPeriod": "10s",
                "skipBlockVerification": False,
                "dialTimeout": "3s",
                "connTimeout": "2s",
                "recvBuffSize": 20,
                "sendBuffSize": 200,
                "digestWaitTime": "1s",
                "requestWaitTime": "1500ms",
                "responseWaitTime": "2s",
                # A first dial to another org's anchor peer can fail (it is not up yet, or this peer
                # has not yet loaded the channel's TLS roots: "certificate signed by unknown
                # authority"); Fabric then sleeps reconnectInterval before the next attempt. Its 25 s
                # default was the whole of the cross-org convergence time; 1 s makes it a second.
                # Expiration stays at 25 s so that a busy machine does not drop live peers.
                "aliveTimeInterval": "2s",
                "aliveExpirationTimeout": "25s",
                "reconnectInterval": "1s",
                "maxConnectionAttempts": 120,
                "msgExpirationFactor": 20,
                # Published to other orgs; without it this peer is invisible to them, so neither
                # anchor peers nor service discovery (which the Gateway uses to pick endorsers
                # across orgs) would ever return it.
                "externalEndpoint": address,
                "election": {
                    "startupGracePeriod": "15s",
                    "membershipSampleInterval": "1s",
                    "leaderAliveThreshold": "10s",
                    "leaderElectionDuration": "5s",
                },
                "pvtData": {
                    "pullRetryThreshold": "60s",
                    "transientstoreMaxBlockRetention": 1000,
                    "pushAckTimeout": "3s",
                    "btlPullMargin": 10,
                    "reconcileBatchSize": 10,
                    "reconcileSleepInterval": "1m",
                    "reconciliationEnabled": True,
                    "skipPullingInvalidTransactionsDuringCommit": False,
                    "implicitCollectionDisseminationPolicy": {"requiredPeerCount": 0, "maxPeerCount": 1},
                },
                "state": {
                    "enabled": False,
                    "checkInterval": "10s",
                    "responseTimeout": "3s",
                    "batchSize": 10,
                    "blockBufferSize": 20,
                    "maxRetries": 3,
                },
            },
            "tls": {
                "enabled": True,
                # Mutual TLS: a caller must present a TLS client certificate from a CA the peer
                # trusts -- its own org's (clientRootCAs below) and, once joined, the TLS roots of
                # every org of the channel, which Fabric adds by itself. Proposals are still
                # authorised by their signatures; this keeps anyone without an enrolled TLS key pair
                # from reaching the peer's services at all (and binds Deliver to the TLS session).
                "clientAuthRequired": True,
                "cert": {"file": str(tls / "server.crt")},
                "key": {"file": str(tls / "server.key")},
                "rootcert": {"file": str(tls / "ca.crt")},
                "clientRootCAs": {"files": [str(tls / "ca.crt")]},
                # Empty: outbound connections reuse the server key pair (Fabric's behaviour).
                "clientKey": {"file": ""},
                "clientCert": {"file": ""},
            },
            "authentication": {"timewindow": "15m"},
            "fileSystemPath": str(layout.node_data(node.name)),
            "BCCSP": _bccsp(),
            "mspConfigPath": str(layout.node_msp(node.name)),
            "localMspId": org.msp_id,
            "client": {"connTimeout": "3s"},
            "deliveryclient": {
                # Fabric 3 no longer gossips blocks; kept explicit (and off) for readers of the file.
                "blockGossipEnabled": False,
                "reconnectTotalTimeThreshold": "3600s",
                "connTimeout": "3s",
                "reConnectBackoffThreshold": "3600s",
                "addressOverrides": None,
                "policy": "cluster",
                "blockCensorshipTimeoutKey": "30s",
                "minimalReconnectInterval": "100ms",
            },
            "localMspType": "bccsp",
            # pprof stays off; the address is loopback so that enabling it never exposes the peer.
            "profile": {"enabled": False, "listenAddress": f"{HOST}:6060"},
            "handlers": {
                "authFilters": [{"name": "DefaultAuth"}, {"name": "ExpirationCheck"}],
                "decorators": [{"name": "DefaultDecorator"}],
                "endorsers": {"escc": {"name": "DefaultEndorsement", "library": None}},
                "validators": {"vscc": {"name": "DefaultValidation", "library": None}},
            },
            "validatorPoolSize": validator_pool_size,
            "discovery": {
                "enabled": True,
                "authCacheEnabled": True,
                "authCacheMaxSize": 1000,
                "authCachePurgeRetentionRatio": 0.75,
                "orgMembersAllowedAccess": False,
            },
            "limits": {
                "concurrency": {
                    # Concurrent proposals (endorse/evaluate), event listeners, and Gateway requests;
                    # the Gateway limit is the first to bite under load (see bench/).
                    "endorserService": endorser_concurrency,
                    "deliverService": deliver_concurrency,
                    "gatewayService": gateway_concurrency,
                }
            },
            "maxRecvMsgSize": MAX_MSG_SIZE,
            "maxSendMsgSize": MAX_MSG_SIZE,
        },
        "vm": {
            # Empty: no Docker. The peer then registers no Docker health check and never tries to
            # build chaincode images; every package must be claimed by an external builder.
            "endpoint": "",
            "docker": {
                "tls": {
                    "enabled": False,
                    "ca": {"file": "docker/ca.crt"},
                    "cert": {"file": "docker/tls.crt"},
                    "key": {"file": "docker/tls.key"},
                },
                "attachStdout": False,
                "hostConfig": {
                    "NetworkMode": "host",
                    "Dns": None,
                    "LogConfig": {"Type": "json-file", "Config": {"max-size": "50m", "max-file": "5"}},
                    "Memory": 2147483648,
                },
            },
        },
        "chaincode": {
            "id": {"path": None, "name": None},
            # Docker-only settings below are unused without vm.endpoint but kept: Fabric expects them.
            "builder": "$(DOCKER_NS)/fabric-ccenv:$(TWO_DIGIT_VERSION)",
            "pull": False,
            "golang": {"runtime": "$(DOCKER_NS)/fabric-baseos:$(TWO_DIGIT_VERSION)", "dynamicLink": False},
            "java": {"runtime": "$(DOCKER_NS)/fabric-javaenv:2.5"},
            "node": {"runtime": "$(DOCKER_NS)/fabric-nodeenv:2.5"},
            "externalBuilders": [
                {
                    "name": BUILDER_NAME,
                    "path": str(Path(builder_dir).resolve()),
                    # The peer starts builders with only PATH, LD_LIBRARY_PATH, LIBPATH and TMPDIR.
                    # Fabric's CCaaS variable carries per-peer template values; FABRIC_CFG_PATH lets
                    # the builder find ccaas-context.json next to this core.yaml instead.
                    "propagateEnvironment": [BUILDER_CONTEXT_ENV, "FABRIC_CFG_PATH"],
                }
            ],
            "installTimeout": "300s",
            "startuptimeout": "300s",
            "executetimeout": chaincode_execute_timeout,
            "mode": "net",
            "keepalive": 0,
            "system": {"_lifecycle": "enable", "cscc": "enable", "lscc": "enable", "qscc": "enable"},
            "logging": {"level": "info", "shim": "warning", "format": _LOG_FORMAT},
        },
        "ledger": {
            "blockchain": None,
            "state": {
                # LevelDB inside the peer: no CouchDB process to run; the contracts use key and
                # range queries only (no rich JSON queries).
                "stateDatabase": "goleveldb",
                "totalQueryLimit": 100000,
                "couchDBConfig": {
                    "couchDBAddress": f"{HOST}:5984",
                    "username": None,
                    "password": None,
                    "maxRetries": 3,
                    "maxRetriesOnStartup": 10,
                    "requestTimeout": "35s",
                    "internalQueryLimit": 1000,
                    "maxBatchUpdateSize": 1000,
                    "createGlobalChangesDB": False,
                    "cacheSize": 64,
                },
            },
            "history": {"enableHistoryDatabase": True},
            "pvtdataStore": {
                "collElgProcMaxDbBatchSize": 5000,
                "collElgProcDbBatchesInterval": 1000,
                "deprioritizedDataReconcilerInterval": "60m",
                "purgeInterval": 100,
                "purgedKeyAuditLogging": True,
            },
            # Must be set: Fabric's sample points at /var/hyperledger/production/snapshots, which a
            # non-root peer cannot create.
            "snapshots": {"rootDir": str(layout.node_data(node.name) / "snapshots")},
        },
        "operations": {
            "listenAddress": operations_address(node),
            # Plain HTTP on loopback: the supervisor polls /healthz and bench/ scrapes /metrics from
            # this machine only. TLS would mean client certificates for every probe, and the
            # endpoint exposes no ledger data.
            "tls": {
                "enabled": False,
                "cert": {"file": None},
                "key": {"file": None},
                "clientAuthRequired": False,
                "clientRootCAs": {"files": []},
            },
        },
        "metrics": {
            "provider": "prometheus",
            "statsd": {"network": "udp", "address": f"{HOST}:8125", "writeInterval": "10s", "prefix": None},
        },
    }


def write_core_yaml(
    spec: Spec,
    layout: Layout,
    node: Node,
    *,
    builder_dir: Path | str,
    chaincode_server_address: str,
    **tuning: Any,
) -> Path:
    """Write ``<node config>/core.yaml`` and the CCaaS builder context next to it; return core.yaml.

    Start the peer with ``FABRIC_CFG_PATH`` set to ``layout.node_config(node.name)``: the peer finds
    core.yaml there and the builder finds ccaas-context.json there.
    """
    config = render_core_yaml(
        spec, layout, node, builder_dir=builder_dir, chaincode_server_address=chaincode_server_address, **tuning
    )
    config_dir = layout.node_config(node.name)
    config_dir.mkdir(parents=True, exist_ok=True)
    write_builder_context(
        config_dir,
        builder_context(chaincode_server_address, peer=node.name, org=node.org, msp_id=spec.org(node.org).msp_id,
                        **_chaincode_tls_context(layout, node)),
    )
    return write_generated_yaml(config_dir / "core.yaml", config, f"core.yaml of {node.name}")


def _chaincode_tls_context(layout: Layout, node: Node) -> dict[str, str]:
    """The TLS values of connection.json for this peer (peers/ccaas.py's placeholders): its org's CA, which
    signed its chaincode server's certificate, and the peer's own TLS key pair as its client certificate
    (the chaincode server requires one). Empty before the peer is enrolled; the builder then names the
    missing value."""
    tls = layout.node_tls(node.name)
    files = {CHAINCODE_ROOT_CERT_KEY: tls / "ca.crt", PEER_CLIENT_CERT_KEY: tls / "server.crt",
             PEER_CLIENT_KEY_KEY: tls / "server.key"}
    if not all(f.is_file() for f in files.values()):
        return {}
    return {key: f.read_text() for key, f in files.items()}


def _check_chaincode_server_address(node: Node, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or host != node.host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CoreConfigError(f"chaincode server address {address!r} must be {node.host}:<port> (the peer's host)")
    taken = {peer_address(node), peer_chaincode_listen_address(node), operations_address(node)}
    if address in taken:
        raise CoreConfigError(
            f"chaincode server address {address} is a port {node.name} binds itself; use {node.chaincode_address}"
        )


def _bccsp() -> dict[str, Any]:
    # Software crypto with SHA2-256: what Fabric CA issues (ECDSA P-256) and Fabric hard-codes.
    # KeyStore empty = <mspConfigPath>/keystore. No PKCS11 section: no HSM, and only binaries built
    # with the pkcs11 tag would read it.
    return {"Default": "SW", "SW": {"Hash": "SHA2", "Security": 256, "FileKeyStore": {"KeyStore": None}}}
