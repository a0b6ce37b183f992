"""OPC-UA application certificates (Basic256Sha256 SignAndEncrypt) and the trust list of the simulators.

``generate_certificate`` makes a self-signed RSA-2048 / SHA-256 certificate with the application URI in its
subjectAltName (OPC-UA Part 6 requires it) and 127.0.0.1/localhost, PEM files. A server started with
``trusted`` certificates accepts only clients presenting one of them (SHA-256 fingerprint match).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def generate_certificate(cert_path: str | Path, key_path: str | Path, application_uri: str, common_name: str, days: int = 365) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TwinLedger")])
    now = _dt.datetime.now(_dt.timezone.utc)
    san = x509.SubjectAlternativeName([
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    Path(cert_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    Path(key_path).chmod(0o600)


def file_format(path: str | Path) -> str:
    """"pem" or "der", by content (asyncua otherwise guesses from the file extension)."""
    return "pem" if b"-----BEGIN" in Path(path).read_bytes()[:64] else "der"


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def load_fingerprints(paths: Iterable[str | Path]) -> set[bytes]:
    out = set()
    for p in paths:
        p = Path(p)
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            data = f.read_bytes()
            c = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            out.add(fingerprint(c))
    return out


@dataclass(frozen=True)
class ClientSecurity:
    """Bridge side: Basic256Sha256 SignAndEncrypt with our certificate; ``server_cert`` pins the server's."""

    cert: Path
    key: Path
    server_cert: Path | None = None
    application_uri: str = "urn:twinledger:bridge"
