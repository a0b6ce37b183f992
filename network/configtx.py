"""The application channel's configtx.yaml and the configtxgen call that turns it into a genesis block.

Fabric 3 has no system channel: the genesis block of the application channel is made directly with
``configtxgen -profile <profile> -channelID <channel> -outputBlock <file>`` and handed to every orderer
with ``osnadmin channel join``; peers join with the same block. Hence no ``Consortiums``
section and no ``Consortium`` key in the profile (configtxgen warns about both in Fabric 3).

configtxgen loads this file with an exact unmarshal, so only keys of Fabric's genesisconfig schema are
written. All paths are absolute, so the file works from any working directory.

Channel-config group names: each org's group is named by its MSP ID (``/Channel/Application/
Hospital1MSP``), following Fabric's samples; config updates that add or remove an org must use the
same key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from network.files import write_atomic
from network.layout import Layout
from network.spec_model import Node, Org, Spec

PROFILE_NAME = "TwinLedgerChannel"
CONFIGTX_FILE = "configtx.yaml"

# Capabilities Fabric 3.1 binaries understand. V3_0 on the channel requires every node to be v3 and
# forbids the deprecated global Orderer.Addresses (endpoints live in each orderer org instead).
CHANNEL_CAPABILITIES = {"V3_0": True}
ORDERER_CAPABILITIES = {"V2_0": True}
APPLICATION_CAPABILITIES = {"V2_5": True}  # V2_5 adds private-data purge to V2_0 lifecycle

# etcdraft options. Fabric's sample ticks every 500 ms, so a follower waits 5-10 s (ElectionTick to twice
# that, randomised) before it elects a new leader -- after every restart, and after a leader crash.
# etcd's own defaults (100 ms heartbeat, election after 10 ticks: 1-2 s) are used: a leader kill -9'd
# under load is replaced in 1-2 s instead of 2-4 s (bench/faults.py). A vote lost on a stale cluster
# stream (the first message to an orderer that restarted fails with EOF) costs one more round, so
# the round must be short. Ten missed heartbeats in a row -- 1 s with no message -- still means a
# dead leader even on a busy 2-core machine.
ETCDRAFT_OPTIONS = {
    "TickInterval": "100ms",
    "ElectionTick": 10,
    "HeartbeatTick": 1,
    "MaxInflightBlocks": 5,
    "SnapshotIntervalSize": "16 MB",
}

# Resource -> policy, as in Fabric's sample. Not strictly needed -- a peer falls back to these same
# defaults for any resource the channel does not list -- but written out so the access rules of the
# channel can be read (and changed by a config update) in one place. The v1 lifecycle (lscc) entries
# of older samples are left out: Fabric 3 removed that lifecycle.
ACLS = {
    "_lifecycle/CheckCommitReadiness": "/Channel/Application/Writers",
    "_lifecycle/CommitChaincodeDefinition": "/Channel/Application/Writers",
    "_lifecycle/QueryChaincodeDefinition": "/Channel/Application/Writers",
    "_lifecycle/QueryChaincodeDefinitions": "/Channel/Application/Writers",
    "qscc/GetChainInfo": "/Channel/Application/Readers",
    "qscc/GetBlockByNumber": "/Channel/Application/Readers",
    "qscc/GetBlockByHash": "/Channel/Application/Readers",
    "qscc/GetTransactionByID": "/Channel/Application/Readers",
    "qscc/GetBlockByTxID": "/Channel/Application/Readers",
    "cscc/GetConfigBlock": "/Channel/Application/Readers",
    "cscc/GetChannelConfig": "/Channel/Application/Readers",
    "peer/Propose": "/Channel/Application/Writers",
    "peer/ChaincodeToChaincode": "/Channel/Application/Writers",
    "event/Block": "/Channel/Application/Readers",
    "event/FilteredBlock": "/Channel/Application/Readers",
}


class ConfigtxError(ValueError):
    """A spec that cannot give a valid channel configuration; the message says what to change."""


def profile_name(spec: Spec) -> str:  # noqa: ARG001 - one channel per network today; kept per-spec for later
    """The configtxgen profile that describes ``spec.channel``."""
    return PROFILE_NAME


def configtx_path(layout: Layout) -> Path:
    return layout.channel_dir / CONFIGTX_FILE


def genesis_block_path(layout: Layout, spec: Spec) -> Path:
    """Where configtxgen writes the channel's genesis block (the input of ``osnadmin channel join``)."""
    return layout.channel_dir / f"{spec.channel}.genesis.block"


# -- organizations ----------------------------------------------------------------------------------
def _signature(rule: str) -> dict[str, str]:
    return {"Type": "Signature", "Rule": rule}


def _implicit(rule: str) -> dict[str, str]:
    return {"Type": "ImplicitMeta", "Rule": rule}


def org_policies(org: Org) -> dict[str, dict[str, str]]:
    """An org's own policies, written with NodeOUs roles (admin, peer, client, orderer).

    Member orgs: everyone of the org may read; clients and admins may write (submit transactions);
    only peers endorse. The orderer org is different: its *orderer* identities sign blocks, and peers
    check blocks against /Channel/Orderer/BlockValidation = ANY Writers, so orderers must be Writers
    (and Readers, to pull blocks from one another) -- hence ``member`` for both.
    """
    m = org.msp_id
    if org.kind == "orderer":
        return {
            "Readers": _signature(f"OR('{m}.member')"),
            "Writers": _signature(f"OR('{m}.member')"),
            "Admins": _signature(f"OR('{m}.admin')"),
        }
    return {
        "Readers": _signature(f"OR('{m}.admin', '{m}.peer', '{m}.client')"),
        "Writers": _signature(f"OR('{m}.admin', '{m}.client')"),
        "Admins": _signature(f"OR('{m}.admin')"),
        "Endorsement": _signature(f"OR('{m}.peer')"),
    }


def org_definition(spec: Spec, layout: Layout, org: Org) -> dict[str, Any]:
    """One entry of configtx.yaml's Organizations (also what ``configtxgen -printOrg`` reads to add an org)."""
    definition: dict[str, Any] = {
        "Name": org.msp_id,
        "ID": org.msp_id,
        "MSPDir": str(layout.org_msp(org.name)),
        "Policies": org_policies(org),
    }
    if org.kind == "orderer":
        orderers = spec.nodes_of(org.name, "orderer")
        if not orderers:
            raise ConfigtxError(f"orderer org {org.name} runs no orderers; set orderers: 1, 3 or 5 in the spec")
        # Where peers and clients send transactions and pull blocks (V3_0 requires them per org).
        definition["OrdererEndpoints"] = [n.address for n in orderers]
    else:
        peers = spec.nodes_of(org.name, "peer")
        if not peers:
            raise ConfigtxError(f"org {org.name} runs no peers; set peers: 1..4 in the spec")
        # peer0 announces the org to the other orgs over gossip (and so to service discovery).
        definition["AnchorPeers"] = [{"Host": peers[0].host, "Port": peers[0].ports.listen}]
    return definition


# -- the channel ------------------------------------------------------------------------------------
def _byte_size(n: int) -> str | int:
    """configtxgen's own notation ("10 MB", "512 KB") when exact, plain bytes otherwise."""
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    if n % 1024 == 0:
        return f"{n // 1024} KB"
    return n


def render_configtx(spec: Spec, layout: Layout) -> dict[str, Any]:
    """configtx.yaml for ``spec.channel`` as a dict: every org, Raft over the orderer org's nodes."""
    orderer_org = spec.orderer_org
    members = spec.member_orgs
    orderers = spec.nodes_of(orderer_org.name, "orderer")
    if not orderers:
        raise ConfigtxError(f"orderer org {orderer_org.name} runs no orderers; set orderers: 1, 3 or 5 in the spec")
    if not members:
        raise ConfigtxError("the channel needs at least one hospital or plant")
    batch = spec.batch
    if batch.preferred_max_bytes > batch.absolute_max_bytes:
        raise ConfigtxError("batch.preferred_max_bytes must not exceed batch.absolute_max_bytes")

    def consenter(node: Node) -> dict[str, Any]:
        cert = str(layout.node_tls(node.name) / "server.crt")
        # The orderer presents its server certificate when it dials other orderers too
        # (peers.orderer_config sets Cluster.ClientCertificate to it), so both entries are the same file.
        return {"Host": node.host, "Port": node.ports.listen, "ClientTLSCert": cert, "ServerTLSCert": cert}

    orderer_section = {
        "OrdererType": "etcdraft",
        # No Addresses: global orderer addresses are rejected with the V3_0 channel capability.
        "BatchTimeout": f"{batch.timeout_ms}ms",
        "BatchSize": {
            "MaxMessageCount": batch.max_message_count,
            "AbsoluteMaxBytes": _byte_size(batch.absolute_max_bytes),
            "PreferredMaxBytes": _byte_size(batch.preferred_max_bytes),
        },
        "EtcdRaft": {
            "Consenters": [consenter(n) for n in orderers],
            "Options": dict(ETCDRAFT_OPTIONS),
        },
        "Organizations": [org_definition(spec, layout, orderer_org)],
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
            # What peers require of a block: signed by any orderer-org writer (an orderer).
            "BlockValidation": _implicit("ANY Writers"),
        },
        "Capabilities": dict(ORDERER_CAPABILITIES),
    }
    application_section = {
        "Organizations": [org_definition(spec, layout, o) for o in members],
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
            # Chaincode definitions need a majority of orgs; so does chaincode endorsement unless a
            # chaincode (or a key, via key-level endorsement) says otherwise.
            "LifecycleEndorsement": _implicit("MAJORITY Endorsement"),
            "Endorsement": _implicit("MAJORITY Endorsement"),
        },
        "Capabilities": dict(APPLICATION_CAPABILITIES),
        "ACLs": dict(ACLS),
    }
    profile = {
        "Policies": {
            "Readers": _implicit("ANY Readers"),
            "Writers": _implicit("ANY Writers"),
            "Admins": _implicit("MAJORITY Admins"),
        },
        "Capabilities": dict(CHANNEL_CAPABILITIES),
        "Orderer": orderer_section,
        "Application": application_section,
    }
    return {
        # Top-level Organizations is what `configtxgen -printOrg <MSPID>` reads when an org is added.
        "Organizations": [org_definition(spec, layout, o) for o in spec.orgs],
        "Capabilities": {
            "Channel": dict(CHANNEL_CAPABILITIES),
            "Orderer": dict(ORDERER_CAPABILITIES),
            "Application": dict(APPLICATION_CAPABILITIES),
        },
        "Profiles": {profile_name(spec): profile},
    }


class _NoAliasDumper(yaml.SafeDumper):
    # PyYAML would turn a dict used twice into an anchor and alias; write everything out in full so
    # the file reads plainly (configtxgen would accept either).
    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 - signature fixed by PyYAML
        return True


def dump_configtx(spec: Spec, layout: Layout) -> str:
    body = yaml.dump(render_configtx(spec, layout), Dumper=_NoAliasDumper, sort_keys=False, width=1000)
    return f"# configtx.yaml of channel {spec.channel} -- generated by TwinLedger from the network spec; edits are overwritten.\n{body}"


def write_configtx(spec: Spec, layout: Layout) -> Path:
    """Write ``<home>/channel/configtx.yaml`` (atomically) and return its path."""
    return write_atomic(configtx_path(layout), dump_configtx(spec, layout))


def configtxgen_command(bin_dir: Path | str, layout: Layout, spec: Spec) -> list[str]:
    """argv that writes the genesis block of ``spec.channel`` to ``genesis_block_path``.

    ``-configPath`` names the folder of configtx.yaml explicitly, so neither the working directory
    nor FABRIC_CFG_PATH matters (without it configtxgen searches $FABRIC_CFG_PATH, then the current
    directory). configtx.yaml holds absolute paths only, so relative-path resolution -- which
    configtxgen does against the configtx.yaml folder -- never comes into play. Run
    ``write_configtx`` first. See ``configtxgen_env`` for the environment.
    """
    return [
        str(Path(bin_dir) / "configtxgen"),
        "-configPath",
        str(layout.channel_dir),
        "-profile",
        profile_name(spec),
        "-channelID",
        spec.channel,
        "-outputBlock",
        str(genesis_block_path(layout, spec)),
    ]


def configtxgen_env(layout: Layout) -> dict[str, str]:
    """Environment additions for configtxgen: FABRIC_CFG_PATH pointing at the same folder.

    Redundant with ``-configPath`` but harmless, and it keeps configtxgen from picking up a stray
    configtx.yaml from a Fabric install elsewhere on the machine if the flag is ever dropped.
    """
    return {"FABRIC_CFG_PATH": str(layout.channel_dir)}
