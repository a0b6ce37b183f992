"""Fabric's discovery service, asked the one question TwinLedger needs: which peers does this peer see?

The Gateway picks endorsers through the very same service, so "discovery on every org's peer lists every
member org's peer with the chaincode installed" is exactly the condition under which a submit that needs
any combination of orgs can be endorsed. ``twinledger up`` waits on it instead of on a sleep, and tests
and ``status`` read ledger heights from it.

The discovery service authenticates the request twice: the payload is signed by an enrolled identity
(which must be a member of the channel), and it carries the SHA-256 of the client's TLS certificate,
which must be the certificate of this very TLS session -- so the call uses mutual TLS with the user's
TLS key pair from its org's CA.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fabric_protos.discovery import protocol_pb2, protocol_pb2_grpc
from fabric_protos.gossip import message_pb2

from network.identity import Identity, Signer

__all__ = ["DiscoveredPeer", "DiscoveryError", "discover_peers"]


class DiscoveryError(RuntimeError):
    """The peer could not be reached or refused the query; the message says which and why."""


@dataclass(frozen=True)
class DiscoveredPeer:
    msp_id: str
    endpoint: str
    ledger_height: int | None  # None: the peer has published no state for the channel yet
    chaincodes: tuple[str, ...]  # chaincodes installed *and* defined on the channel, as gossip reports them


def _tls_cert_hash(cert_pem: bytes) -> bytes:
    """SHA-256 of the DER certificate, as Fabric computes it from the TLS session."""
    return hashlib.sha256(x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)).digest()


def _peer_of(msp_id: str, peer: protocol_pb2.Peer) -> DiscoveredPeer:
    alive = message_pb2.GossipMessage.FromString(peer.membership_info.payload).alive_msg
    height, chaincodes = None, ()
    if peer.state_info.payload:
        props = message_pb2.GossipMessage.FromString(peer.state_info.payload).state_info.properties
        height = props.ledger_height
        chaincodes = tuple(sorted(cc.name for cc in props.chaincodes))
    return DiscoveredPeer(msp_id, alive.membership.endpoint, height, chaincodes)


def discover_peers(endpoint: str, channel: str, *, identity: Identity, signer: Signer, tls_root_cert_pem: bytes,
                   client_cert_pem: bytes, client_key_pem: bytes, timeout: float = 5.0) -> list[DiscoveredPeer]:
    """Every peer of the channel that the peer at ``endpoint`` knows through gossip, itself included.

    A peer lists another org's peer only once gossip has exchanged membership with it, and lists a
    chaincode on a peer only once that peer has published it in its state info.
    """
    request = protocol_pb2.Request(
        authentication=protocol_pb2.AuthInfo(client_identity=identity.serialized(),
                                             client_tls_cert_hash=_tls_cert_hash(client_cert_pem)),
        queries=[protocol_pb2.Query(channel=channel, peer_query=protocol_pb2.PeerMembershipQuery())],
    )
    payload = request.SerializeToString()
    signed = protocol_pb2.SignedRequest(payload=payload, signature=signer.sign(payload))
    credentials = grpc.ssl_channel_credentials(tls_root_cert_pem, client_key_pem, client_cert_pem)
    try:
        with grpc.secure_channel(endpoint, credentials) as conn:
            response = protocol_pb2_grpc.DiscoveryStub(conn).Discover(signed, timeout=timeout)
    except grpc.RpcError as exc:
        raise DiscoveryError(f"discovery at {endpoint}: {exc.code().name}: {exc.details()}") from None
    result = response.results[0]
    if result.WhichOneof("result") == "error":
        raise DiscoveryError(f"discovery at {endpoint} refused the query on {channel}: {result.error.content}")
    return sorted(
        (_peer_of(msp_id, p) for msp_id, peers in result.members.peers_by_org.items() for p in peers.peers),
        key=lambda p: (p.msp_id, p.endpoint),
    )
