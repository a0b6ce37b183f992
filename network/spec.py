"""The consortium as data: orgs, nodes, channel and the ports every node listens on.

A spec is a small YAML file (see ``network/default_spec.yaml``). Everything else -- CA
configs, MSP folders, node configs, the channel -- is derived from it, so two networks
with different ``port_base`` values can run side by side on one machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

OrgKind = Literal["hospital", "plant", "orderer"]
NodeType = Literal["peer", "orderer", "ca", "chaincode", "superlink", "supernode"]

DEFAULT_SPEC_PATH = Path(__file__).with_name("default_spec.yaml")
USER_ROLES = ("admin", "steward", "operator", "client")

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,30}$")
# Each node owns a block of this many consecutive ports starting at port_base + slot * PORTS_PER_NODE.
PORTS_PER_NODE = 10


class SpecError(ValueError):
    """A spec file that cannot describe a network; the message says what to fix."""


@dataclass(frozen=True)
class Ports:
    """The 127.0.0.1 ports of one node (unused ones are simply never bound)."""

    listen: int  # peer / orderer gRPC, CA HTTPS
    operations: int  # /healthz and /metrics
    admin: int  # orderer channel participation API (osnadmin)
    chaincode: int  # chaincode-as-a-service server of a peer


@dataclass(frozen=True)
class Node:
    name: str  # e.g. peer0.hospital1, orderer1.orderer, ca.plant2
    org: str
    type: NodeType
    ports: Ports

    @property
    def short(self) -> str:
        """The enrolment id of the node in its org's CA (``peer0``, ``orderer1``)."""
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Org:
    name: str
    kind: OrgKind
    msp_id: str
    peers: int = 0
    orderers: int = 0


@dataclass(frozen=True)
class BatchConfig:
    """Orderer block cutting: a block is cut at max_message_count or timeout, whichever first."""

    timeout_ms: int = 100
    max_message_count: int = 500
    absolute_max_bytes: int = 10 * 1024 * 1024
    preferred_max_bytes: int = 2 * 1024 * 1024


@dataclass(frozen=True)
class Spec:
    name: str
    channel: str
    port_base: int
    orgs: tuple[Org, ...]
    batch: BatchConfig = field(default_factory=BatchConfig)

    # -- derived views -----------------------------------------------------------------
    @property
    def member_orgs(self) -> tuple[Org, ...]:
        """Hospitals and plants: the orgs that own data and run peers."""
        return tuple(o for o in self.orgs if o.kind != "orderer")

    @property
    def orderer_org(self) -> Org:
        return next(o for o in self.orgs if o.kind == "orderer")

    def org(self, name: str) -> Org:
        for o in self.orgs:
            if o.name == name:
                return o
        known = ", ".join(o.name for o in self.orgs)
        raise SpecError(f"unknown org {name!r}; this network has: {known}")

    def nodes(self) -> list[Node]:
        """Every process of the network, in start order: CAs, orderers, peers, chaincode servers."""
        names: list[tuple[str, str, NodeType]] = []
        for o in self.orgs:
            names.append((f"ca.{o.name}", o.name, "ca"))
        for o in self.orgs:
            names += [(f"orderer{i}.{o.name}", o.name, "orderer") for i in range(o.orderers)]
        for o in self.orgs:
            names += [(f"peer{i}.{o.name}", o.name, "peer") for i in range(o.peers)]
        nodes = []
        for slot, (name, org, typ) in enumerate(names):
            base = self.port_base + slot * PORTS_PER_NODE
            nodes.append(Node(name, org, typ, Ports(listen=base, operations=base + 1, admin=base + 2, chaincode=base + 3)))
        return nodes

    def node(self, name: str) -> Node:
        for n in self.nodes():
            if n.name == name:
                return n
        raise SpecError(f"unknown node {name!r}; see `twinledger status` for the node names")

    def nodes_of(self, org: str, typ: NodeType | None = None) -> list[Node]:
        return [n for n in self.nodes() if n.org == org and (typ is None or n.type == typ)]

    @property
    def port_range(self) -> tuple[int, int]:
        n = len(self.nodes())
        return self.port_base, self.port_base + n * PORTS_PER_NODE - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channel": self.channel,
            "port_base": self.port_base,
            "batch": {
                "timeout_ms": self.batch.timeout_ms,
                "max_message_count": self.batch.max_message_count,
                "absolute_max_bytes": self.batch.absolute_max_bytes,
                "preferred_max_bytes": self.batch.preferred_max_bytes,
            },
            "orgs": [
                {k: v for k, v in {"name": o.name, "kind": o.kind, "msp_id": o.msp_id, "peers": o.peers, "orderers": o.orderers}.items() if v or k in ("name", "kind", "msp_id")}
                for o in self.orgs
            ],
        }


def default_msp_id(org_name: str) -> str:
    """``hospital1`` -> ``Hospital1MSP``: the convention of Fabric's samples."""
    return org_name[:1].upper() + org_name[1:] + "MSP"


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


def parse_spec(data: Any, *, port_base: int | None = None) -> Spec:
    """Validate a spec mapping (as loaded from YAML) and build a Spec; SpecError says what is wrong."""
    _require(isinstance(data, dict), "spec must be a YAML mapping with name, channel, orgs")
    name = str(data.get("name", "twinledger"))
    _require(bool(_NAME_RE.match(name)), f"spec name {name!r} must be lowercase letters/digits, starting with a letter")
    channel = str(data.get("channel", "consortium"))
    _require(bool(re.match(r"^[a-z][a-z0-9.-]{0,48}$", channel)), f"channel name {channel!r} is not a valid Fabric channel name")
    base = int(port_base if port_base is not None else data.get("port_base", 17000))
    _require(1024 < base < 65000, f"port_base {base} must be between 1025 and 64999")

    raw_orgs = data.get("orgs")
    _require(isinstance(raw_orgs, list) and raw_orgs, "spec needs a non-empty list 'orgs'")
    orgs: list[Org] = []
    seen: set[str] = set()
    for i, ro in enumerate(raw_orgs):
        _require(isinstance(ro, dict), f"orgs[{i}] must be a mapping")
        oname = str(ro.get("name", ""))
        _require(bool(_NAME_RE.match(oname)), f"orgs[{i}].name {oname!r} must be lowercase letters/digits (e.g. hospital1)")
        _require(oname not in seen, f"org {oname!r} appears twice")
        seen.add(oname)
        kind = ro.get("kind")
        _require(kind in ("hospital", "plant", "orderer"), f"org {oname}: kind must be hospital, plant or orderer, not {kind!r}")
        peers = int(ro.get("peers", 1 if kind != "orderer" else 0))
        orderers = int(ro.get("orderers", 3 if kind == "orderer" else 0))
        if kind == "orderer":
            _require(peers == 0, f"org {oname}: an orderer org runs no peers")
            _require(orderers in (1, 3, 5), f"org {oname}: Raft needs 1, 3 or 5 orderers, not {orderers}")
        else:
            _require(orderers == 0, f"org {oname}: only the orderer org runs orderers")
            _require(1 <= peers <= 4, f"org {oname}: peers must be 1..4, not {peers}")
        orgs.append(Org(oname, kind, str(ro.get("msp_id") or default_msp_id(oname)), peers, orderers))
    _require(sum(o.kind == "orderer" for o in orgs) == 1, "spec needs exactly one org of kind orderer")
    _require(any(o.kind != "orderer" for o in orgs), "spec needs at least one hospital or plant")

    rb = data.get("batch") or {}
    _require(isinstance(rb, dict), "batch must be a mapping")
    batch = BatchConfig(
        timeout_ms=int(rb.get("timeout_ms", 100)),
        max_message_count=int(rb.get("max_message_count", 500)),
        absolute_max_bytes=int(rb.get("absolute_max_bytes", 10 * 1024 * 1024)),
        preferred_max_bytes=int(rb.get("preferred_max_bytes", 2 * 1024 * 1024)),
    )
    _require(1 <= batch.timeout_ms <= 10_000, "batch.timeout_ms must be 1..10000")
    _require(1 <= batch.max_message_count <= 10_000, "batch.max_message_count must be 1..10000")
    spec = Spec(name, channel, base, tuple(orgs), batch)
    _require(spec.port_range[1] < 65536, f"port_base {base} leaves no room for {len(spec.nodes())} nodes")
    return spec


def load_spec(path: Path | str | None = None, *, port_base: int | None = None) -> Spec:
    """Load a spec file (default: the 2 hospitals + 2 plants + 3 orderers consortium)."""
    p = Path(path) if path else DEFAULT_SPEC_PATH
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {p} not found") from None
    except yaml.YAMLError as e:
        raise SpecError(f"spec file {p} is not valid YAML: {e}") from None
    return parse_spec(data, port_base=port_base)


def dump_spec(spec: Spec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
