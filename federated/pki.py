"""Key material for a Flower deployment, made with ``cryptography``.

* a TLS CA and the SuperLink's server certificate (SANs 127.0.0.1, localhost and the host it runs on) --
  Fleet, Control and ServerAppIo (Runtime) APIs all serve HTTPS with it; SuperNodes, the SuperLink's SuperExec and the
  ``flwr`` CLI verify it against the CA;
* one server certificate per SuperNode from the same CA for its ClientAppIo (Runtime) API, which the
  SuperExec and every ClientApp process verify (``issue_server_cert``);
* a random SuperExec secret per Runtime API (``make_secret``): Flower 1.41 lets only a SuperExec that
  signs with it acquire tasks (and their tokens) on a ``--isolation process`` SuperLink or SuperNode;
* one EC P-384 key pair per org for SuperNode authentication, private key in OpenSSH format (what
  ``flower-supernode --auth-supernode-private-key`` reads), public key as an OpenSSH line (what
  ``flwr supernode register`` reads). Its fingerprint (SHA-256 of the DER SubjectPublicKeyInfo) is how the
  ServerApp maps an authenticated node to its org.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network.files import write_atomic, write_private
from network.identity import subject_alt_names
from federated.participants import key_fingerprint


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # A private key is 0600 from its first byte (never written first and narrowed after).
    if private:
        write_private(path, data)
    else:
        write_atomic(path, data)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _ca_name() -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TwinLedger"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "TwinLedger Flower CA")])  # fmt: skip


def make_ca_and_server_cert(
    folder: Path, common_name: str = "superlink", hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 365
) -> TlsFiles:
    """A fresh CA (ca.crt, ca.key) and a server certificate signed by it (server.crt, server.key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _ca_name()
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    _write(folder / "ca.crt", ca_cert.public_bytes(pem))
    _write(folder / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), True)
    return issue_server_cert(folder, "server", common_name, hosts, days)


def issue_server_cert(
    folder: Path, name: str, common_name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 365
) -> TlsFiles:
    """``<name>.crt`` / ``<name>.key``: a server certificate signed by the CA in ``folder`` (ca.crt, ca.key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(_ca_name()).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    files = TlsFiles(folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
    # the key first (0600 from its first byte), then the certificate that makes the pair usable
    _write(files.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), True)
    _write(files.cert, cert.public_bytes(pem))
    return files


def server_cert_hosts(cert: Path) -> set[str]:
    """The IP addresses and DNS names a certificate's SAN names (empty when the file does not exist)."""
    if not cert.exists():
        return set()
    ips, names = subject_alt_names(x509.load_pem_x509_certificate(cert.read_bytes()))
    return ips | names


def make_secret(path: Path, nbytes: int = 32) -> Path:
    """A random shared secret (hex, no newline: Flower reads the file as exact bytes), 0600, kept if present."""
    if not path.exists():
        _write(path, os.urandom(nbytes).hex().encode(), True)
    return path


@dataclass(frozen=True)
class NodeKey:
    private: Path  # OpenSSH private key
    public: Path  # OpenSSH public key line
    fingerprint: str


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An EC P-384 SuperNode key pair: ``<name>`` (private, OpenSSH) and ``<name>.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    priv = folder / name
    pub = folder / f"{name}.pub"
    _write(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), True)  # fmt: skip
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(pub, line + b"\n")
    return NodeKey(priv, pub, key_fingerprint(line))


def load_node_key(folder: Path, name: str) -> NodeKey:
    pub = folder / f"{name}.pub"
    return NodeKey(folder / name, pub, key_fingerprint(pub.read_bytes()))
