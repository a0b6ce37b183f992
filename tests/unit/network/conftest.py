"""Fixtures for the Gateway client unit tests: a throwaway CA issuing Fabric-CA-style certificates."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network.identity import FABRIC_CA_ATTRS_OID

IssueCert = Callable[..., tuple[bytes, ec.EllipticCurvePrivateKey]]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="session")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ca.hospital1"))
        .issuer_name(_name("ca.hospital1"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="session")
def issue_cert(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> IssueCert:
    """issue_cert(common_name, attrs=None) -> (certificate PEM, private key), attrs as Fabric CA writes them."""
    ca_cert, ca_key = ca

    def issue(
        common_name: str = "user1", attrs: dict[str, str] | None = None
    ) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if attrs is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(FABRIC_CA_ATTRS_OID, json.dumps({"attrs": attrs}).encode()),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key

    return issue


def key_pem(key: ec.EllipticCurvePrivateKey, fmt: str = "pkcs8") -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8 if fmt == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture
def make_msp(tmp_path: Path, issue_cert: IssueCert) -> Callable[..., Path]:
    """make_msp(key_format="pkcs8"|"ec", stale_keys=0, attrs=None) -> MSP folder like fabric-ca-client writes."""

    def make(key_format: str = "pkcs8", stale_keys: int = 0, attrs: dict[str, str] | None = None) -> Path:
        msp = tmp_path / f"msp-{key_format}-{stale_keys}"
        (msp / "signcerts").mkdir(parents=True)
        (msp / "keystore").mkdir()
        (msp / "cacerts").mkdir()
        cert_pem, key = issue_cert("steward1", attrs)
        (msp / "signcerts" / "cert.pem").write_bytes(cert_pem)
        for i in range(stale_keys):
            stale = ec.generate_private_key(ec.SECP256R1())
            # Named to sort before the real key, so picking by name would pick the wrong one.
            (msp / "keystore" / f"0{i}_sk").write_bytes(key_pem(stale, key_format))
        (msp / "keystore" / "priv_sk").write_bytes(key_pem(key, key_format))
        return msp

    return make

