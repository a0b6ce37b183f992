"""`twinledger peer add --org ORG`: another peer of an existing org joins the running network.

The peer is added to the home's spec (``added``: its ports come after every founding node's and the
supervisor's, so no running node's ports move) and then brought up by the same idempotent stages as `up`:
its identities from its org's CA, its core.yaml, its process under the supervisor, the channel joined from
the genesis block (it replays the chain from the orderers, and pulls the private data its org is entitled
to from its org's other peers), the committed chaincode's package installed (the very package id its org
approved) with a chaincode server of its own. It is done when discovery shows it to every org's peers with
the chaincode and it is level with the others; only then is it marked joined.

Resumable: the spec is written first, the mark last. A `peer add` that died half-way leaves a peer in the
spec without the mark, and the next `peer add` for that org finishes that peer instead of adding another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from network.files import write_atomic
from network.layout import Layout
from network.processes.control import supervisor_pid
from network.processes.health import scrape
from network.spec import Spec, dump_spec, load_spec, parse_spec
from network.spec_model import Node
from orchestrator.bringup import up
from orchestrator.cli_common import UserError

Progress = Callable[[str], None]
JOINED_MARK = "joined"


@dataclass(frozen=True)
class PeerPlan:
    node: Node
    resuming: bool  # an earlier `peer add` wrote it into the spec and did not finish


def joined(layout: Layout, name: str) -> bool:
    return (layout.node_dir(name) / JOINED_MARK).exists()


def plan_peer(spec: Spec, layout: Layout, org: str) -> tuple[Spec, PeerPlan]:
    """The spec with the peer to add (or the unfinished one to resume) and what will be done."""
    member = {o.name: o for o in spec.member_orgs}
    if org not in member:
        known = ", ".join(member) or "none"
        raise UserError(f"{org!r} is not a hospital or plant of this network (its orgs: {known}); a new org "
                        f"needs a channel configuration update, which `peer add` does not make")
    pending = [n for n in spec.added
               if n.endswith(f".{org}") and spec.node(n).type == "peer" and not joined(layout, n)]
    if pending:
        return spec, PeerPlan(spec.node(pending[0]), resuming=True)
    grown = parse_spec({**spec.to_dict(), "added": [*spec.added, spec.next_peer(org)]})
    return grown, PeerPlan(grown.node(spec.next_peer(org)), resuming=False)


def height(node: Node) -> int | None:
    sample = scrape(node.ports.operations, "ledger_blockchain_height", 1.0, host=node.host) or {}
    return int(next(iter(sample.values()))) if len(sample) == 1 else None


def wait_level(spec: Spec, node: Node, timeout: float, progress: Progress) -> int:
    """Until ``node`` has the height of the highest other peer (it replays the chain from the orderers)."""
    others = [n for n in spec.nodes() if n.type == "peer" and n.name != node.name]
    deadline = time.monotonic() + timeout
    last_said = 0.0
    while True:
        target = max((h for h in (height(n) for n in others) if h is not None), default=0)
        mine = height(node) or 0
        if target and mine >= target:
            return mine
        if time.monotonic() > deadline:
            raise UserError(f"{node.name} is at block {mine} of {target} after {timeout:.0f} s; "
                            f"`twinledger logs {node.name}` shows why; `twinledger peer add --org {node.org}` resumes")
        if time.monotonic() - last_said > 5:
            progress(f"  {node.name} catching up: block {mine} of {target}")
            last_said = time.monotonic()
        time.sleep(0.2)


def add_peer(home: Path, org: str, *, dry_run: bool = False, progress: Progress = print,
             timeout: float = 120.0) -> Node:
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; `twinledger up --home {home}` first")
    if supervisor_pid(home) is None and not dry_run:
        raise UserError(f"the network in {home} is not running; `twinledger up --home {home}` first")
    spec = load_spec(layout.spec_file)
    grown, plan = plan_peer(spec, layout, org)
    n = plan.node
    if dry_run:
        what = "would resume" if plan.resuming else "would add"
        progress(f"{what} {n.name} (org {n.org}, {spec.org(org).msp_id}): gRPC {n.address}, "
                 f"operations {n.ports.operations}, chaincode server {n.ports.chaincode}; identities from "
                 f"ca.{org}, channel {spec.channel} joined from its genesis block, chaincode installed; "
                 f"no channel configuration change (a peer of a member org needs none)")
        return n
    if plan.resuming:
        progress(f"resuming {n.name}: an earlier `peer add` did not finish")
    else:
        write_atomic(layout.spec_file, dump_spec(grown))  # first: a crash from here on is resumed
        progress(f"adding {n.name} (ports {n.ports.listen}-{n.ports.listen + 9})")
    up(home, progress=progress, timeout=timeout)  # every stage skips what exists: only the new peer is new
    at = wait_level(grown, n, timeout, progress)
    write_atomic(layout.node_dir(n.name) / JOINED_MARK, f"{time.time():.0f}\n")
    progress(f"{n.name} joined: at block {at} with every other peer, seen by discovery from every org, "
             f"chaincode server running")
    return n
