"""Serving the double: one TLS gateway server per peer, all over one shared channel.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. ``GatewayServers`` binds a peer's gateway service on 127.0.0.1 with that peer's TLS
key pair. ``serve_home`` does it for every peer of a TwinLedger home, as ``twinledger up`` left it:
each peer's listen port from spec.yaml, its TLS certificate and key issued by its org's real Fabric
CA (nodes/<peer>/tls/server.crt|key), its enrolment identity (nodes/<peer>/msp) to sign endorsements,
and every org's verifying MSP (orgs/<org>/msp) to check creators — so the project's Gateway client
(``orchestrator.connect``) connects to it exactly as it would to the real peers. Everything here
must run on the event loop that serves it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from fabric_protos.gateway import gateway_pb2_grpc

from network.identity import load_msp_identity
from network.layout import Layout
from network.spec import Spec, load_spec
from orchestrator.bringup import CHAINCODE_NAME
from tests.fabric_double.channel import Channel, PeerInfo
from tests.fabric_double.executor import ChaincodeExecutor
from tests.fabric_double.ledger import Ledger
from tests.fabric_double.msp import Msp, MspRegistry
from tests.fabric_double.operations import serve_operations
from tests.fabric_double.proposal import PeerSigner
from tests.fabric_double.service import PeerGateway


class PortInUse(RuntimeError):
    """A peer's port cannot be bound (another process holds it)."""


@dataclass
class GatewayServers:
    """Gateway servers of several peers over one channel; add() them, then start()."""

    channel: Channel
    peers: list[PeerInfo] = field(default_factory=list)
    _servers: list[grpc.aio.Server] = field(default_factory=list)
    _operations: list[asyncio.Server] = field(default_factory=list)

    def add(self, name: str, msp_id: str, credentials: grpc.ServerCredentials, port: int = 0) -> PeerInfo:
        """Bind one peer's gateway (port 0: any free port); returns the peer with the address clients dial."""
        server = grpc.aio.server()
        servicer = PeerGateway(self.channel, PeerInfo(name, msp_id, ""))
        gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
        try:
            bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
        except RuntimeError:  # grpc raises instead of returning 0 when the port is taken
            bound = 0
        if not bound:
            raise PortInUse(f"{name}: cannot listen on 127.0.0.1:{port} (is another process using it?)")
        # Error details name the peer by the address clients dial, known only once bound.
        servicer.peer = PeerInfo(name, msp_id, f"127.0.0.1:{bound}")
        self._servers.append(server)
        self.peers.append(servicer.peer)
        return servicer.peer

    async def add_operations(self, port: int) -> None:
        try:
            self._operations.append(await serve_operations(port, self.channel.name, lambda: self.channel.cutter.height))
        except OSError as exc:
            raise PortInUse(f"operations endpoint: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None

    async def start(self) -> None:
        for server in self._servers:
            await server.start()

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(0)
        for ops in self._operations:
            ops.close()
            await ops.wait_closed()


def _home_msps(spec: Spec, layout: Layout) -> MspRegistry:
    return MspRegistry({
        org.msp_id: Msp.from_folder(org.msp_id, layout.org_msp(org.name), application=org.kind != "orderer")
        for org in spec.orgs
    })


def _peer_signers(spec: Spec, layout: Layout) -> dict[str, PeerSigner]:
    """Each member org's first peer signs that org's endorsements, with its own enrolment key."""
    signers = {}
    for org in spec.member_orgs:
        peers = spec.nodes_of(org.name, "peer")
        if peers:
            identity, signer = load_msp_identity(layout.node_msp(peers[0].name), org.msp_id)
            signers[org.msp_id] = PeerSigner(identity, signer)
    return signers


def _credentials(layout: Layout, peer: str) -> grpc.ServerCredentials:
    tls = layout.node_tls(peer)
    return grpc.ssl_server_credentials([((tls / "server.key").read_bytes(), (tls / "server.crt").read_bytes())])


async def serve_home(home: Path, *, operations: bool = True, block_interval: float | None = None) -> GatewayServers:
    """Start every peer of the home's spec (gateway on its listen port, health/metrics on its operations port).

    The ledger is in memory and starts empty (a genesis block only): state lives as long as the
    double. ``block_interval`` defaults to the spec's batch timeout, as an orderer would cut.
    """
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise FileNotFoundError(f"no network in {home}: run `twinledger up --home {home}` first")
    spec = load_spec(layout.spec_file)
    channel = Channel(
        spec.channel, _home_msps(spec, layout), ChaincodeExecutor(Ledger(), CHAINCODE_NAME),
        _peer_signers(spec, layout),
        block_interval=spec.batch.timeout_ms / 1000 if block_interval is None else block_interval,
        max_block_count=spec.batch.max_message_count,
    )
    servers = GatewayServers(channel)
    try:
        for org in spec.member_orgs:
            for node in spec.nodes_of(org.name, "peer"):
                servers.add(node.name, org.msp_id, _credentials(layout, node.name), node.ports.listen)
                if operations:
                    await servers.add_operations(node.ports.operations)
        await servers.start()
    except BaseException:
        await servers.stop()
        raise
    return servers
