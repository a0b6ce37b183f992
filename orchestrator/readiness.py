"""When is the network ready? When the ordering service has a Raft leader that every orderer follows,
and every org's Gateway can find an endorser in every other org.

After a restart the orderers need an election (several Raft ticks) before they order anything; until
then a submit fails with "no orderers could successfully process transaction". Each orderer's
operations endpoint tells: ``consensus_etcdraft_is_leader`` is 1 on the leader, and a follower's
``consensus_etcdraft_active_nodes`` is set from the metadata the current leader sends it.

A Fabric node answering /healthz is not enough: the Gateway plans endorsements from its peer's gossip
view, and until gossip has exchanged membership and state info across orgs, a submit that needs several
orgs fails with "no combination of peers can be derived which satisfy the endorsement policy". So
``up`` (and tests after a peer restart) wait on exactly that view: discovery on each member peer lists
every member peer with the chaincode installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from network.discovery import DiscoveredPeer, DiscoveryError, discover_peers
from network.identity import load_msp_identity
from network.layout import Layout
from network.spec_model import Node, Spec
from network.processes.health import scrape


class NotConverged(RuntimeError):
    """Ordering or gossip did not settle in time; the message says what is missing where."""


def ordering_gaps(spec: Spec) -> list[str]:
    """What keeps the channel's Raft cluster from ordering right now; [] when a leader leads a quorum."""
    orderers = spec.nodes_of(spec.orderer_org.name, "orderer")
    label = f'channel="{spec.channel}"'
    leaders, following, gaps = [], 0, []
    for node in orderers:
        is_leader = scrape(node.ports.operations, "consensus_etcdraft_is_leader", host=node.host)
        active = scrape(node.ports.operations, "consensus_etcdraft_active_nodes", host=node.host)
        if is_leader is None or active is None:
            gaps.append(f"{node.name} does not answer")
            continue
        if is_leader.get(label) == 1:
            leaders.append(node.name)
        elif active.get(label, 0) > 0:
            following += 1
    if len(leaders) != 1:
        gaps.append("no Raft leader elected yet" if not leaders else f"several leaders ({', '.join(leaders)})")
    # The leader and a majority of the cluster in all, as Raft needs to commit anything.
    elif 1 + following < len(orderers) // 2 + 1:
        gaps.append(f"only {following} follower(s) have heard from leader {leaders[0]}")
    return gaps


def wait_ordering(spec: Spec, timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> float:
    """Block until the channel's ordering service can order; returns seconds waited."""
    t0 = time.monotonic()
    while gaps := ordering_gaps(spec):
        if time.monotonic() - t0 > timeout:
            raise NotConverged(f"the ordering service is not ready after {timeout:.0f} s: {'; '.join(gaps)} "
                               "(see `twinledger logs orderer0.orderer`)")
        time.sleep(0.2)
    waited = time.monotonic() - t0
    if progress:
        progress(f"  ordering ready: Raft leader elected on {spec.channel} ({waited:.1f} s)")
    return waited


def member_peers(spec: Spec) -> list[Node]:
    return [n for o in spec.member_orgs for n in spec.nodes_of(o.name, "peer")]


def peer_view(spec: Spec, layout: Layout, node: Node, timeout: float = 3.0) -> list[DiscoveredPeer]:
    """What the peer ``node`` sees of the channel, asked as its org's admin."""
    org = spec.org(node.org)
    identity, signer = load_msp_identity(layout.user_msp(org.name, "admin"), org.msp_id)
    tls = layout.user_tls(org.name, "admin")
    return discover_peers(
        node.address, spec.channel, identity=identity, signer=signer,
        tls_root_cert_pem=layout.ca_cert(org.name).read_bytes(),
        client_cert_pem=(tls / "client.crt").read_bytes(), client_key_pem=(tls / "client.key").read_bytes(),
        timeout=timeout,
    )


def missing_from_view(spec: Spec, layout: Layout, node: Node, chaincode: str | None) -> list[str]:
    """The peers ``node`` does not yet see (with ``chaincode`` installed, when given); [] when converged."""
    try:
        view = {p.endpoint: p for p in peer_view(spec, layout, node)}
    except DiscoveryError as exc:
        return [f"(no answer: {exc})"]
    missing = []
    for other in member_peers(spec):
        seen = view.get(other.address)
        if seen is None:
            missing.append(other.name)
        elif chaincode and chaincode not in seen.chaincodes:
            missing.append(f"{other.name} (no {chaincode} yet)")
    return missing


def wait_converged(spec: Spec, layout: Layout, chaincode: str | None, timeout: float = 60.0,
                   progress: Callable[[str], None] | None = None) -> float:
    """Block until every member peer sees every member peer (with ``chaincode``); returns seconds waited."""
    t0 = time.monotonic()
    pending = {n.name: n for n in member_peers(spec)}
    gaps: dict[str, list[str]] = {}
    while True:
        for name, node in list(pending.items()):
            gaps[name] = missing_from_view(spec, layout, node, chaincode)
            if not gaps[name]:
                del pending[name]
        if not pending:
            waited = time.monotonic() - t0
            if progress:
                progress(f"  gossip converged: every peer sees all {len(member_peers(spec))} peers"
                         + (f" with {chaincode}" if chaincode else "") + f" ({waited:.1f} s)")
            return waited
        if time.monotonic() - t0 > timeout:
            detail = "; ".join(f"{n} misses {', '.join(gaps[n])}" for n in sorted(pending))
            raise NotConverged(f"gossip did not converge within {timeout:.0f} s: {detail} "
                               f"(see `twinledger logs PEER` for gossip errors)")
        time.sleep(0.25)
