"""Identity, signer and MSP folder loading."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from fabric_protos.msp import identities_pb2

from network.identity import (
    Identity,
    IdentityError,
    Signer,
    certificate_attributes,
    certificate_role,
    load_msp_identity,
    verify_signature,
)

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_signatures_are_low_s_and_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = Signer(key)
    public = key.public_key()
    # Raw ECDSA gives high S about half the time, so 400 signatures exercise the normalisation
    # path ~200 times; a missed case would show up here with overwhelming probability.
    for i in range(400):
        message = f"message {i}".encode()
        signature = signer.sign(message)
        _, s = decode_dss_signature(signature)
        assert s <= P256_ORDER // 2
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_high_s_would_have_occurred_without_normalisation() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw_high = sum(
        decode_dss_signature(key.sign(bytes([i]), ec.ECDSA(hashes.SHA256())))[1] > P256_ORDER // 2
        for i in range(64)
    )
    assert raw_high > 0  # the test above is meaningful only if raw signatures do go high


def test_sign_digest_matches_sign() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = Signer(key)
    digest = hashlib.sha256(b"payload").digest()
    key.public_key().verify(signer.sign_digest(digest), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    key.public_key().verify(signer.sign(b"payload"), b"payload", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signer.sign(b"payload"), b"other", ec.ECDSA(hashes.SHA256()))


def test_signer_rejects_unsupported_curve() -> None:
    with pytest.raises(IdentityError, match="unsupported key curve"):
        Signer(ec.generate_private_key(ec.SECP256K1()))


def test_p384_signatures_are_low_s() -> None:
    signer = Signer(ec.generate_private_key(ec.SECP384R1()))
    order = int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    )
    for i in range(50):
        assert decode_dss_signature(signer.sign(bytes([i])))[1] <= order // 2


def test_serialized_identity(issue_cert: Callable[..., tuple[bytes, ec.EllipticCurvePrivateKey]]) -> None:
    cert_pem, _ = issue_cert("user1")
    identity = Identity("Hospital1MSP", cert_pem)
    parsed = identities_pb2.SerializedIdentity.FromString(identity.serialized())
    assert parsed.mspid == "Hospital1MSP"
    assert parsed.id_bytes == cert_pem  # Fabric expects the PEM text itself
    assert identity.serialized() == identity.serialized()


def test_identity_rejects_bad_certificate() -> None:
    with pytest.raises(IdentityError, match="not valid PEM"):
        Identity("Hospital1MSP", b"not a certificate")
    with pytest.raises(IdentityError, match="MSP ID"):
        Identity("", b"whatever")


@pytest.mark.parametrize("key_format", ["pkcs8", "ec"])
def test_load_msp_identity(make_msp: Callable[..., Path], key_format: str) -> None:
    msp = make_msp(key_format=key_format, stale_keys=2, attrs={"role": "steward"})
    identity, signer = load_msp_identity(msp, "Hospital1MSP")
    assert identity.msp_id == "Hospital1MSP"
    assert identity.role == "steward"
    # The loaded key is the one matching the certificate, not a stale keystore entry.
    assert verify_signature(identity.certificate_pem, b"hello", signer.sign(b"hello"))


def test_load_msp_identity_errors(make_msp: Callable[..., Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "signcerts").mkdir(parents=True)
    with pytest.raises(IdentityError, match="no certificate"):
        load_msp_identity(empty, "Hospital1MSP")

    msp = make_msp()
    (msp / "keystore" / "priv_sk").unlink()
    (msp / "keystore" / "README").write_text("not a key")
    with pytest.raises(IdentityError, match="no private key .* matches"):
        load_msp_identity(msp, "Hospital1MSP")


def test_role_attribute(issue_cert: Callable[..., tuple[bytes, ec.EllipticCurvePrivateKey]]) -> None:
    cert_pem, _ = issue_cert(
        "op1", {"hf.Affiliation": "", "hf.EnrollmentID": "op1", "hf.Type": "client", "role": "operator"}
    )
    assert certificate_role(cert_pem) == "operator"
    assert certificate_attributes(cert_pem)["hf.EnrollmentID"] == "op1"

    plain_pem, _ = issue_cert("plain", None)
    assert certificate_role(plain_pem) is None
    assert certificate_attributes(plain_pem) == {}

    no_role_pem, _ = issue_cert("norole", {"hf.Type": "client"})
    assert certificate_role(no_role_pem) is None
