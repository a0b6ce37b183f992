"""The consortium as data: orgs, nodes, channel and the ports every node listens on.

Everything else -- CA configs, MSP folders, node configs, the channel -- is derived from a ``Spec``, so two
networks with different ``port_base`` values can run side by side on one machine. The spec file (YAML) that
describes one is read, validated and written by ``network.spec``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

#: Where an org's nodes listen unless its spec entry names a ``host``: everything on this machine.
LOOPBACK = "127.0.0.1"

OrgKind = Literal["hospital", "plant", "orderer"]
NodeType = Literal["peer", "orderer", "ca", "chaincode", "superlink", "supernode"]

USER_ROLES = ("admin", "steward", "operator", "client")

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,30}$")
# Each node owns a block of this many consecutive ports starting at port_base + slot * PORTS_PER_NODE.
PORTS_PER_NODE = 10


class SpecError(ValueError):
    """A spec file that cannot describe a network; the message says what to fix."""


@dataclass(frozen=True)
class Placement:
    """Where an org's processes run: the address they listen on and are reached at, and the Linux network
    namespace they start in (None: the machine's own). Fabric nodes, chaincode servers, SuperNodes and
    twins processes of the org all take it from the org's spec entry."""

    host: str = LOOPBACK
    netns: str | None = None


@dataclass(frozen=True)
class Ports:
    """The ports of one node on its org's host (unused ones are simply never bound)."""

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
    #: The address the node listens on and is reached at: its org's ``host`` (every certificate of the node
    #: names it, and every endpoint written into configs uses it).
    host: str = LOOPBACK
    #: The Linux network namespace its process runs in (its org's ``netns``), or None: the machine's own.
    netns: str | None = None

    @property
    def address(self) -> str:
        """``host:port`` of its gRPC (peer, orderer) or HTTPS (CA) listener."""
        return f"{self.host}:{self.ports.listen}"

    @property
    def admin_address(self) -> str:
        """``host:port`` of an orderer's channel participation API (osnadmin)."""
        return f"{self.host}:{self.ports.admin}"

    @property
    def chaincode_address(self) -> str:
        """``host:port`` where a peer's chaincode-as-a-service server listens (the peer dials it)."""
        return f"{self.host}:{self.ports.chaincode}"

    @property
    def operations_url(self) -> str:
        """Base URL of its operations endpoint (/healthz, /metrics): plain HTTP, on the node's host."""
        return f"http://{self.host}:{self.ports.operations}"

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
    #: False for an org that joined the running network (`twinledger org add`): its CA and peers are then
    #: in ``Spec.added`` (ports after the founding nodes'), and it is no founding member of the channel.
    founding: bool = True
    #: True while `org add` has not yet had the channel accept it: its CA and peer may run, but it is no
    #: channel member (no join, chaincode or registry step treats it as one).
    joining: bool = False
    #: True once `org remove` has begun: the channel may still hold it (its nodes run until the update).
    leaving: bool = False
    #: True once the channel no longer holds it (`org remove`): no member, its nodes stopped and never started
    #: again. It stays in the spec so that no other node's ports move (ports follow the nodes' order).
    removed: bool = False
    #: The IPv4 address of the org's machine: its CA, peers, chaincode servers, SuperNode and twins bridge
    #: listen there, and every other node reaches them there (certificates name it).
    host: str = LOOPBACK
    #: A Linux network namespace its processes run in (``ip netns exec``), for an org isolated on this
    #: machine as on a host of its own; None: the machine's own network.
    netns: str | None = None

    @property
    def placement(self) -> Placement:
        return Placement(self.host, self.netns)


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
    #: Nodes joined after the network was founded, in the order they joined: peers (`twinledger peer add`)
    #: and an added org's CA and first peer (`twinledger org add`). Their ports come after the founding
    #: nodes' and the supervisor's, so no running node's ports ever move.
    added: tuple[str, ...] = ()
    #: Nodes that left the running network one by one (`twinledger orderer remove`): never started again, and
    #: their port slots stay taken so that no other node's ports move.
    removed_nodes: tuple[str, ...] = ()

    # -- derived views -----------------------------------------------------------------
    @property
    def member_orgs(self) -> tuple[Org, ...]:
        """Hospitals and plants of the channel: the orgs that own data and run peers (an org that
        `org add` has not yet had the channel accept is not one)."""
        return tuple(o for o in self.orgs if o.kind != "orderer" and not o.joining and not o.removed)

    @property
    def live_orgs(self) -> tuple[Org, ...]:
        """Every org whose CA and nodes run: all but the removed ones."""
        return tuple(o for o in self.orgs if not o.removed)

    @property
    def founding_orgs(self) -> tuple[Org, ...]:
        return tuple(o for o in self.orgs if o.founding)

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
        founding: list[tuple[str, str, NodeType]] = []
        orgs = self.founding_orgs
        for o in orgs:
            founding.append((f"ca.{o.name}", o.name, "ca"))
        for o in orgs:
            founding += [(f"orderer{i}.{o.name}", o.name, "orderer") for i in range(o.orderers)]
        for o in orgs:
            founding += [(f"peer{i}.{o.name}", o.name, "peer") for i in range(o.peers)]
        # The slot after the founding nodes is the supervisor's (supervisor_port); added nodes follow it.
        slots = list(enumerate(founding)) + [
            (len(founding) + 1 + i, (name, name.split(".", 1)[1], _added_type(name)))
            for i, name in enumerate(self.added)]
        gone = {o.name for o in self.orgs if o.removed}
        by_name = {o.name: o for o in self.orgs}
        nodes = []
        for slot, (name, org, typ) in slots:
            if org in gone or name in self.removed_nodes:  # its slot stays taken: the other nodes keep their ports
                continue
            base = self.port_base + slot * PORTS_PER_NODE
            owner = by_name.get(org)
            nodes.append(Node(name, org, typ, Ports(listen=base, operations=base + 1, admin=base + 2, chaincode=base + 3),
                              host=owner.host if owner else LOOPBACK, netns=owner.netns if owner else None))
        return nodes

    @property
    def supervisor_port(self) -> int:
        """The supervisor's Prometheus metrics: the first port after the founding nodes' (fixed for life)."""
        founding = sum(1 + o.orderers + o.peers for o in self.founding_orgs)
        return self.port_base + founding * PORTS_PER_NODE

    def next_peer(self, org: str) -> str:
        """The name the next peer added to ``org`` takes (``peer<N>.<org>``)."""
        return f"peer{len(self.nodes_of(org, 'peer'))}.{org}"

    def next_orderer(self) -> str:
        """The name the next orderer added takes (``orderer<N>.<orderer org>``; a removed one's name is not reused)."""
        org = self.orderer_org
        return f"orderer{org.orderers + sum(_added_type(n) == 'orderer' for n in self.added)}.{org.name}"

    def node(self, name: str) -> Node:
        for n in self.nodes():
            if n.name == name:
                return n
        raise SpecError(f"unknown node {name!r}; see `twinledger status` for the node names")

    def nodes_of(self, org: str, typ: NodeType | None = None) -> list[Node]:
        return [n for n in self.nodes() if n.org == org and (typ is None or n.type == typ)]

    @property
    def port_range(self) -> tuple[int, int]:
        """The nodes' ports (with the supervisor's slot between founding and added nodes)."""
        last = max(n.ports.listen for n in self.nodes())
        return self.port_base, last + PORTS_PER_NODE - 1

    @staticmethod
    def _removal(o: Org) -> dict[str, bool]:
        return {"removed": True} if o.removed else {"leaving": True} if o.leaving else {}

    @staticmethod
    def _placement(o: Org) -> dict[str, str]:
        return {**({"host": o.host} if o.host != LOOPBACK else {}), **({"netns": o.netns} if o.netns else {})}

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
                {**{k: v for k, v in {"name": o.name, "kind": o.kind, "msp_id": o.msp_id, "peers": o.peers, "orderers": o.orderers}.items() if v or k in ("name", "kind", "msp_id")},
                 **self._placement(o), **self._removal(o)}
                for o in self.founding_orgs
            ],
            **({"added_orgs": [{"name": o.name, "kind": o.kind, "msp_id": o.msp_id, **({"joining": True} if o.joining else {}),
                                **self._placement(o), **self._removal(o)}
                               for o in self.orgs if not o.founding]}
               if any(not o.founding for o in self.orgs) else {}),
            **({"added": list(self.added)} if self.added else {}),
            **({"removed_nodes": list(self.removed_nodes)} if self.removed_nodes else {}),
        }


def default_msp_id(org_name: str) -> str:
    """``hospital1`` -> ``Hospital1MSP``: the convention of Fabric's samples."""
    return org_name[:1].upper() + org_name[1:] + "MSP"


def _added_type(name: str) -> NodeType:
    """What an added node is, from its name (``ca.<org>``, ``orderer<N>.<org>``, ``peer<N>.<org>``)."""
    return "ca" if name.startswith("ca.") else "orderer" if name.startswith("orderer") else "peer"
