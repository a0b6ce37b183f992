"""Helpers for the tests that look at (or hurt) the nodes of the session's real Fabric network.

Block heights and the Raft leader come from the nodes' own operations endpoints (Prometheus metrics),
process ids and restarts from the supervisor; certificates from an unknown CA are made here to show
what the real nodes refuse.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network.identity import Identity, Signer
from network.processes.health import scrape
from tests.fabric_net import FabricNet


def block_height(net: FabricNet, peer: str) -> int:
    """The channel's height as the peer reports it (``ledger_blockchain_height``): last block + 1."""
    samples = scrape(net.node(peer).ports.operations, "ledger_blockchain_height")
    assert samples is not None, f"{peer} does not answer on its operations port"
    return int(samples[f'channel="{net.spec.channel}"'])


def wait_height(net: FabricNet, peer: str, at_least: int, timeout: float = 10.0) -> int:
    """Until ``peer`` has committed block ``at_least - 1`` (peers commit a block independently)."""
    deadline = time.monotonic() + timeout
    while (height := block_height(net, peer)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return height


def wait_peers_caught_up(net: FabricNet, reference: str, timeout: float = 10.0) -> int:
    """Until every member peer has the height ``reference`` has now; returns that height.

    A commit status comes from the gateway's own peer; other orgs' peers commit the same block a little
    later, and a proposal they endorse before that reads the older state.
    """
    height = block_height(net, reference)
    for org in net.spec.member_orgs:
        for node in net.spec.nodes_of(org.name, "peer"):
            reached = wait_height(net, node.name, height, timeout)
            assert reached >= height, f"{node.name} is at height {reached}, {reference} at {height}"
    return height


def raft_leader(net: FabricNet) -> str:
    """The orderer whose ``consensus_etcdraft_is_leader`` is 1 for the channel."""
    label = f'channel="{net.spec.channel}"'
    leaders = [node.name for node in net.spec.nodes_of(net.spec.orderer_org.name, "orderer")
               if (scrape(node.ports.operations, "consensus_etcdraft_is_leader") or {}).get(label) == 1]
    assert len(leaders) == 1, f"expected one Raft leader, found {leaders}"
    return leaders[0]


def kill_hard(net: FabricNet, names: list[str], timeout: float = 60.0) -> dict[str, dict]:
    """kill -9 each named process at once; wait until the supervisor runs each again (new pid, healthy)."""
    before = net.processes()
    for name in names:
        os.kill(before[name]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = net.processes()
        if all(now[n]["pid"] not in (None, before[n]["pid"]) and now[n]["healthy"] for n in names):
            return {n: {"before": before[n], "after": now[n]} for n in names}
        time.sleep(0.2)
    raise AssertionError(f"the supervisor did not restart {names} within {timeout:.0f} s: "
                         f"{ {n: net.processes()[n] for n in names} }")


@dataclass
class Stranger:
    """A CA no org of the network knows, and one client identity it issued (PEM bytes)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def identity(self, msp_id: str) -> tuple[Identity, Signer]:
        """This certificate presented as a member of ``msp_id``."""
        return Identity(msp_id, self.cert_pem), Signer.from_pem(self.key_pem)


def stranger(common_name: str = "steward") -> Stranger:
    """A self-made CA and a client certificate (NodeOU "client", TLS client and server usage) from it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca.stranger")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "client"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return Stranger(ca.public_bytes(pem), cert.public_bytes(pem),
                    key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
