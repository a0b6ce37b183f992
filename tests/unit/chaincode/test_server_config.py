"""chaincode.server's configuration from the environment: every bad setting is named in one line."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chaincode.server import DEFAULT_ADDRESS, ConfigError, load_config, refusal

ID = "registry_1.0:0123abcd"


@pytest.fixture
def tls_files(tmp_path: Path, certs: Any) -> dict[str, str]:
    """A key with its matching certificate, a client CA file, and a certificate of another key."""
    pem = certs.issue("registry.chaincode")
    cert = x509.load_pem_x509_certificate(pem)
    # The factory keeps its leaf keys to itself: make a key and a self-signed certificate for it.
    key = ec.generate_private_key(ec.SECP256R1())
    self_signed = (
        x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
        .sign(key, cert.signature_hash_algorithm)
    )
    files = {
        "CHAINCODE_TLS_KEY_FILE": tmp_path / "key.pem",
        "CHAINCODE_TLS_CERT_FILE": tmp_path / "cert.pem",
        "CHAINCODE_TLS_CLIENT_CACERT_FILE": tmp_path / "ca.pem",
        "other_cert": tmp_path / "other.pem",
    }
    files["CHAINCODE_TLS_KEY_FILE"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files["CHAINCODE_TLS_CERT_FILE"].write_bytes(self_signed.public_bytes(serialization.Encoding.PEM))
    # Any PEM certificate serves as the client CA bundle for parsing purposes.
    files["CHAINCODE_TLS_CLIENT_CACERT_FILE"].write_bytes(self_signed.public_bytes(serialization.Encoding.PEM))
    files["other_cert"].write_bytes(pem)  # a valid certificate that does not match the key
    return {k: str(v) for k, v in files.items()}


def test_defaults() -> None:
    config = load_config({"CHAINCODE_ID": ID})
    assert (config.chaincode_id, config.address, config.tls) == (ID, DEFAULT_ADDRESS, None)
    assert DEFAULT_ADDRESS == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CHAINCODE_ID is not set"),
        ({"CHAINCODE_ID": "registry"}, "is not a package ID of the form label:hash"),
        ({"CHAINCODE_ID": ":abc"}, "is not a package ID"),
        ({"CHAINCODE_ID": "a b:c"}, "is not a package ID"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "9999"}, "is not host:port"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:http"}, "is not host:port"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:70000"}, "is not host:port"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "[::1:9999"}, "IPv6 host in brackets"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_TLS_CLIENT_CACERT_FILE": "/x"}, "but TLS is off"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_TLS_CLIENT_OU": "peer"}, "also set CHAINCODE_TLS_CLIENT_CACERT_FILE"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_TLS_KEY_FILE": "/x"}, "CHAINCODE_TLS_CERT_FILE is not set"),
        ({"CHAINCODE_ID": ID, "CHAINCODE_TLS_CERT_FILE": "/x"}, "CHAINCODE_TLS_KEY_FILE is not set"),
    ],
)
def test_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_addresses() -> None:
    assert load_config({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0"}).address == "127.0.0.1:0"
    assert load_config({"CHAINCODE_ID": ID, "CHAINCODE_SERVER_ADDRESS": "[::1]:7052"}).address == "[::1]:7052"


def test_server_tls_and_mutual_tls(tls_files: dict[str, str]) -> None:
    server_only = {k: tls_files[k] for k in ("CHAINCODE_TLS_KEY_FILE", "CHAINCODE_TLS_CERT_FILE")}
    config = load_config({"CHAINCODE_ID": ID, **server_only})
    assert config.tls is not None and config.tls.mode == "server" and config.tls.client_ca_pem is None
    config = load_config({"CHAINCODE_ID": ID, **{k: v for k, v in tls_files.items() if k.startswith("CHAINCODE")}})
    assert config.tls is not None and config.tls.mode == "mutual" and config.tls.client_ca_pem
    config.tls.credentials()  # gRPC accepts the material


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"CHAINCODE_TLS_KEY_FILE": "/nonexistent/key.pem"}, "CHAINCODE_TLS_KEY_FILE='/nonexistent/key.pem' cannot be read"),
        ({"CHAINCODE_TLS_KEY_FILE": "CERT"}, "is not an unencrypted PEM private key"),
        ({"CHAINCODE_TLS_CERT_FILE": "KEY"}, "is not a PEM certificate"),
        ({"CHAINCODE_TLS_CERT_FILE": "OTHER"}, "does not match the certificate"),
        ({"CHAINCODE_TLS_CLIENT_CACERT_FILE": "KEY"}, "holds no PEM certificate"),
    ],
)
def test_bad_tls_material_is_named(tls_files: dict[str, str], override: dict[str, str], message: str) -> None:
    aliases = {"CERT": tls_files["CHAINCODE_TLS_CERT_FILE"], "KEY": tls_files["CHAINCODE_TLS_KEY_FILE"],
               "OTHER": tls_files["other_cert"]}
    env = {"CHAINCODE_ID": ID, **{k: v for k, v in tls_files.items() if k.startswith("CHAINCODE")}}
    env.update({k: aliases.get(v, v) for k, v in override.items()})
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_client_ou_needs_mutual_tls_and_refuses_other_ous(tls_files: dict[str, str]) -> None:
    env = {"CHAINCODE_ID": ID, **{k: v for k, v in tls_files.items() if k.startswith("CHAINCODE")}}
    assert load_config({**env, "CHAINCODE_TLS_CLIENT_OU": "peer"}).tls.client_ou == "peer"
    assert load_config(env).tls.client_ou is None

    def cert(*ous: str) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([*(x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in ous),
                          x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    assert refusal({"x509_pem_cert": [cert("peer")]}, "peer") is None
    assert "not peer" in refusal({"x509_pem_cert": [cert("client")]}, "peer")
    assert "not peer" in refusal({"x509_pem_cert": [cert()]}, "peer")
    assert refusal({}, "peer") == "no client certificate"
