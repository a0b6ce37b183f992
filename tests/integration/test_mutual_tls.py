"""Every Fabric hop is mutual TLS: a peer, an orderer and a chaincode server each refuse a TLS client that
presents no certificate, or one from a CA they do not trust; the certificate they expect gets through.

Raw gRPC on the session network, so that what is tested is the transport and nothing above it: an empty
proposal to the peer's Endorser and an empty envelope to the orderer's Deliver are answered (with a
refusal of the message itself: UNKNOWN, BAD_REQUEST) once the TLS handshake is accepted; without it the
call never reaches the node (UNAVAILABLE).
The Gateway client, the peer CLI, the lifecycle and the FL/twins connections present their certificates
in every other integration test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.orderer import ab_pb2_grpc
from fabric_protos.peer import chaincode_shim_pb2, chaincode_shim_pb2_grpc, peer_pb2_grpc, proposal_pb2

from network.ca import chaincode_tls_dir
from orchestrator.fabric_stage import chaincode_address
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import stranger

pytestmark = pytest.mark.integration

TIMEOUT = 10


def pair(folder: Path, cert: str, key: str) -> tuple[bytes, bytes]:
    return (folder / cert).read_bytes(), (folder / key).read_bytes()


def credentials(root: Path | bytes, client: tuple[bytes, bytes] | None) -> grpc.ChannelCredentials:
    root_pem = root.read_bytes() if isinstance(root, Path) else root
    if client is None:
        return grpc.ssl_channel_credentials(root_pem)
    return grpc.ssl_channel_credentials(root_pem, private_key=client[1], certificate_chain=client[0])


def endorse_empty(address: str, creds: grpc.ChannelCredentials) -> object:
    """The peer's answer to an empty proposal, or the gRPC status code of the refused call."""
    with grpc.secure_channel(address, creds) as channel:
        try:
            return peer_pb2_grpc.EndorserStub(channel).ProcessProposal(proposal_pb2.SignedProposal(), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            return exc.code()


def deliver_empty(address: str, creds: grpc.ChannelCredentials) -> object:
    """The orderer's first answer to an empty Deliver envelope, or the gRPC status code of the refused call."""
    with grpc.secure_channel(address, creds) as channel:
        try:
            return next(ab_pb2_grpc.AtomicBroadcastStub(channel).Deliver(iter([common_pb2.Envelope()]), timeout=TIMEOUT))
        except grpc.RpcError as exc:
            return exc.code()


def open_chaincode_stream(address: str, creds: grpc.ChannelCredentials) -> object:
    """What a chaincode server says first on a new Connect stream (REGISTER), or the refused call's code."""

    async def first() -> object:
        async with grpc.aio.secure_channel(address, creds) as channel:
            call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
            try:
                return await asyncio.wait_for(call.read(), TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            finally:
                call.cancel()

    return asyncio.run(first())


def test_peer_refuses_tls_clients_without_an_accepted_certificate(fabric_net: FabricNet) -> None:
    net = fabric_net
    address, root = f"127.0.0.1:{net.peer('hospital1').ports.listen}", net.layout.ca_cert("hospital1")
    user = pair(net.layout.user_tls("hospital1", "client"), "client.crt", "client.key")
    outsider = stranger("client")
    # Accepted at the transport: the endorser itself rejects the empty proposal (UNKNOWN, with its reason).
    assert endorse_empty(address, credentials(root, user)) == grpc.StatusCode.UNKNOWN
    assert endorse_empty(address, credentials(root, None)) == grpc.StatusCode.UNAVAILABLE
    assert endorse_empty(address, credentials(root, (outsider.cert_pem, outsider.key_pem))) == grpc.StatusCode.UNAVAILABLE


def test_orderer_refuses_tls_clients_without_an_accepted_certificate(fabric_net: FabricNet) -> None:
    net = fabric_net
    orderer = net.spec.nodes_of(net.spec.orderer_org.name, "orderer")[0]
    address, root = f"127.0.0.1:{orderer.ports.listen}", net.layout.ca_cert(orderer.org)
    # A member org's admin: the orderer trusts the channel's orgs' TLS CAs, not only its own org's.
    admin = pair(net.layout.user_tls("plant2", "admin"), "client.crt", "client.key")
    answered = deliver_empty(address, credentials(root, admin))
    assert getattr(answered, "status", None) == common_pb2.BAD_REQUEST, answered  # the envelope, not the client
    assert deliver_empty(address, credentials(root, None)) == grpc.StatusCode.UNAVAILABLE
    outsider = stranger("client")
    assert deliver_empty(address, credentials(root, (outsider.cert_pem, outsider.key_pem))) == grpc.StatusCode.UNAVAILABLE


def test_chaincode_server_accepts_only_its_own_orgs_peer(fabric_net: FabricNet) -> None:
    net = fabric_net
    node = net.peer("hospital1")
    address, root = chaincode_address(node), net.layout.ca_cert("hospital1")
    # The server has its own certificate from the org's CA, not the peer's.
    server_cert = (chaincode_tls_dir(net.layout, node.name) / "server.crt").read_bytes()
    assert server_cert != (net.layout.node_tls(node.name) / "server.crt").read_bytes()

    own_peer = pair(net.layout.node_tls(node.name), "server.crt", "server.key")
    registered = open_chaincode_stream(address, credentials(root, own_peer))
    assert getattr(registered, "type", None) == chaincode_shim_pb2.ChaincodeMessage.REGISTER, registered

    outsider = stranger("peer0")
    refused = {
        "no certificate": None,
        "another org's peer": pair(net.layout.node_tls(net.peer("plant1").name), "server.crt", "server.key"),
        "a CA nobody knows": (outsider.cert_pem, outsider.key_pem),
    }
    for what, client in refused.items():
        assert open_chaincode_stream(address, credentials(root, client)) == grpc.StatusCode.UNAVAILABLE, what
    # Same org's CA but not a peer (a user's TLS certificate, OU client): through TLS, refused by the server.
    user = pair(net.layout.user_tls("hospital1", "client"), "client.crt", "client.key")
    assert open_chaincode_stream(address, credentials(root, user)) == grpc.StatusCode.PERMISSION_DENIED
