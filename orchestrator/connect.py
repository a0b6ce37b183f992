"""Gateway connections for `--as ORG:USER`: the identity enrolled for that user, dialling its org's peer."""

from __future__ import annotations

from network.gateway import Gateway
from network.gateway_sync import SyncGateway
from network.identity import load_msp_identity
from network.layout import Layout
from network.spec import USER_ROLES, Spec, SpecError


def parse_as(value: str, spec: Spec) -> tuple[str, str]:
    """``hospital1:steward`` -> (org, user); ``hospital1`` alone means that org's admin."""
    org, _, user = value.partition(":")
    user = user or "admin"
    spec.org(org)  # unknown org -> SpecError naming the known ones
    if user not in USER_ROLES:
        raise SpecError(f"unknown user {user!r}; each org has: {', '.join(USER_ROLES)}")
    return org, user


def _params(spec: Spec, layout: Layout, org: str, user: str, peer_index: int) -> dict:
    msp = layout.user_msp(org, user)
    if not msp.exists():
        raise SpecError(f"{user}@{org} is not enrolled in {layout.root}; run `twinledger up` first")
    identity, signer = load_msp_identity(msp, spec.org(org).msp_id)
    peers = spec.nodes_of(org, "peer")
    if not peers:
        raise SpecError(f"org {org} runs no peer to connect to")
    node = peers[peer_index]
    return dict(
        endpoint=f"127.0.0.1:{node.ports.listen}", identity=identity, signer=signer,
        tls_root_cert_pem=layout.ca_cert(org),
        peer_names={f"127.0.0.1:{node.ports.listen}": node.name},
    )


def connect(spec: Spec, layout: Layout, org: str, user: str = "admin", peer_index: int = 0) -> Gateway:
    """Async gateway (call from the event loop that will use it)."""
    return Gateway.connect(**_params(spec, layout, org, user, peer_index))


def connect_sync(spec: Spec, layout: Layout, org: str, user: str = "admin", peer_index: int = 0) -> SyncGateway:
    return SyncGateway.connect(**_params(spec, layout, org, user, peer_index))
