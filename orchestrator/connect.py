"""Gateway connections for `--as ORG:USER`: the identity enrolled for that user, dialling its org's peer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from network.gateway import Gateway
from network.gateway_sync import SyncGateway
from network.identity import load_msp_identity
from network.layout import Layout
from network.spec_model import USER_ROLES, Spec, SpecError


def parse_as(value: str, spec: Spec) -> tuple[str, str]:
    """``hospital1:steward`` -> (org, user); ``hospital1`` alone means that org's admin."""
    org, _, user = value.partition(":")
    user = user or "admin"
    spec.org(org)  # unknown org -> SpecError naming the known ones
    if user not in USER_ROLES:
        raise SpecError(f"unknown user {user!r}; each org has: {', '.join(USER_ROLES)}")
    return org, user


@dataclass(frozen=True)
class PeerTarget:
    """Where and as whom a user of an org reaches its org's peer -- plain paths, so that another process
    (an org's ClientApp recording its data use) can connect the same way."""

    endpoint: str
    peer: str  # the peer's node name
    msp_id: str
    msp_dir: Path
    tls_ca: Path
    # The user's TLS key pair from its org's CA: peers require a client certificate (mutual TLS).
    tls_cert: Path
    tls_key: Path


def peer_target(spec: Spec, layout: Layout, org: str, user: str = "admin", peer_index: int = 0) -> PeerTarget:
    msp = layout.user_msp(org, user)
    if not msp.exists():
        raise SpecError(f"{user}@{org} is not enrolled in {layout.root}; run `twinledger up` first")
    if spec.org(org).removed:
        raise SpecError(f"org {org} was removed from the consortium (`twinledger org remove`): its identities can no "
                        "longer act on the channel")
    peers = spec.nodes_of(org, "peer")
    if not peers:
        raise SpecError(f"org {org} runs no peer to connect to")
    node = peers[peer_index]
    tls = layout.user_tls(org, user)
    return PeerTarget(node.address, node.name, spec.org(org).msp_id, msp, layout.ca_cert(org),
                      tls / "client.crt", tls / "client.key")


def _params(spec: Spec, layout: Layout, org: str, user: str, peer_index: int) -> dict:
    t = peer_target(spec, layout, org, user, peer_index)
    identity, signer = load_msp_identity(t.msp_dir, t.msp_id)
    return dict(
        endpoint=t.endpoint, identity=identity, signer=signer, tls_root_cert_pem=t.tls_ca,
        client_cert_pem=t.tls_cert, client_key_pem=t.tls_key,
        peer_names={t.endpoint: t.peer},
    )


def connect(spec: Spec, layout: Layout, org: str, user: str = "admin", peer_index: int = 0) -> Gateway:
    """Async gateway (call from the event loop that will use it)."""
    return Gateway.connect(**_params(spec, layout, org, user, peer_index))


def connect_sync(spec: Spec, layout: Layout, org: str, user: str = "admin", peer_index: int = 0) -> SyncGateway:
    return SyncGateway.connect(**_params(spec, layout, org, user, peer_index))
