"""Client identity and signing for the Fabric Gateway client.

A Fabric client is an X.509 certificate issued by its organisation's CA (the *identity*, sent with every
request as an ``msp.SerializedIdentity``) plus the matching private key (the *signer*). Peers check the
signature against the certificate and the certificate against the channel's MSP definitions; chaincode
then reads the MSP ID and the certificate attributes (our ``role``) to decide access.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.msp import identities_pb2

__all__ = [
    "FABRIC_CA_ATTRS_OID",
    "Identity",
    "IdentityError",
    "Signer",
    "certificate_attributes",
    "certificate_role",
    "load_msp_identity",
    "verify_signature",
]

# Fabric CA puts the enrolment attributes (hf.*, and custom ones such as our ``role``) into this private
# extension as raw JSON ``{"attrs": {...}}``; the chaincode library reads the same extension.
FABRIC_CA_ATTRS_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")

# Group orders of the curves Fabric accepts. Fabric rejects signatures whose S is in the upper half of
# the order (ECDSA malleability: (r, s) and (r, n - s) both verify), so we must know n to normalise.
_CURVE_ORDERS: dict[str, int] = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}


class IdentityError(Exception):
    """An identity or key could not be loaded or used; the message says which file and why."""


@dataclass(frozen=True)
class Identity:
    """An MSP identity: the organisation's MSP ID and the member's X.509 certificate (PEM)."""

    msp_id: str
    certificate_pem: bytes
    _serialized: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.msp_id:
            raise IdentityError("identity needs an MSP ID")
        try:
            x509.load_pem_x509_certificate(self.certificate_pem)
        except ValueError as exc:
            raise IdentityError(f"identity of {self.msp_id}: certificate is not valid PEM: {exc}") from exc
        # Serialised once: it goes into every proposal, commit-status and events request, and the tx id
        # derivation hashes it, so it must be byte-identical each time.
        serialized = identities_pb2.SerializedIdentity(
            mspid=self.msp_id, id_bytes=self.certificate_pem
        ).SerializeToString()
        object.__setattr__(self, "_serialized", serialized)

    def serialized(self) -> bytes:
        """The ``msp.SerializedIdentity`` bytes Fabric calls the *creator*."""
        return self._serialized

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def role(self) -> str | None:
        """The ``role`` attribute Fabric CA put in the certificate (admin, steward, operator, client)."""
        return certificate_role(self.certificate_pem)


class Signer:
    """ECDSA signer producing Fabric-acceptable signatures: SHA-256 digest, DER encoding, low S."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        curve = private_key.curve.name
        if curve not in _CURVE_ORDERS:
            raise IdentityError(f"unsupported key curve {curve}; Fabric needs ECDSA P-256 or P-384")
        self._key = private_key
        self._order = _CURVE_ORDERS[curve]

    @classmethod
    def from_pem(cls, key_pem: bytes, password: bytes | None = None) -> Signer:
        """Load a PEM private key (PKCS#8 ``PRIVATE KEY`` or SEC1 ``EC PRIVATE KEY``)."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"not a usable PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError("private key is not an ECDSA key; Fabric identities use ECDSA")
        return cls(key)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``: Fabric verifies ECDSA over the SHA-256 digest of the signed bytes."""
        return self.sign_digest(hashlib.sha256(message).digest())

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a precomputed SHA-256 digest (lets callers sign offline or from another process)."""
        der = self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        if s > self._order // 2:
            # Fabric's bccsp rejects high-S signatures ("invalid S. Must be smaller than half the order");
            # n - s is the equivalent low-S signature for the same (r).
            s = self._order - s
        return encode_dss_signature(r, s)


def verify_signature(certificate_pem: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid ECDSA/SHA-256 signature of ``message`` by the certificate's key."""
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def certificate_attributes(certificate_pem: bytes) -> dict[str, str]:
    """The Fabric CA attributes of a certificate (empty when it carries none)."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    try:
        ext = cert.extensions.get_extension_for_oid(FABRIC_CA_ATTRS_OID)
    except x509.ExtensionNotFound:
        return {}
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"certificate attribute extension is not JSON: {exc}") from exc
    attrs = parsed.get("attrs", {}) if isinstance(parsed, dict) else {}
    if not isinstance(attrs, dict):
        raise IdentityError("certificate attribute extension has no attrs object")
    return {str(k): str(v) for k, v in attrs.items()}


def subject_alt_names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """(IP addresses, DNS names) of a certificate's subjectAltName; both empty when it has none. Whether a TLS
    certificate names the host it is served on (Flower's server certificates, OPC-UA application certificates)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)}, set(san.get_values_for_type(x509.DNSName))


def certificate_role(certificate_pem: bytes) -> str | None:
    """The ``role`` attribute of a certificate, or None when it has none."""
    return certificate_attributes(certificate_pem).get("role")


def load_msp_identity(msp_dir: str | Path, msp_id: str) -> tuple[Identity, Signer]:
    """Read a Fabric MSP folder: the certificate in ``signcerts/`` and its private key in ``keystore/``.

    The keystore may hold stale keys from earlier enrolments (fabric-ca-client never deletes them), so the
    key is chosen by matching the certificate's public key rather than by file name.
    """
    msp = Path(msp_dir)
    certs = sorted(p for p in (msp / "signcerts").glob("*") if p.is_file())
    if not certs:
        raise IdentityError(f"no certificate in {msp / 'signcerts'}; enrol the identity first")
    if len(certs) > 1:
        raise IdentityError(
            f"{msp / 'signcerts'} holds {len(certs)} certificates; keep exactly one"
        )
    cert_pem = certs[0].read_bytes()
    identity = Identity(msp_id=msp_id, certificate_pem=cert_pem)
    cert_public = _public_der(identity.certificate.public_key())

    key_files = sorted(p for p in (msp / "keystore").glob("*") if p.is_file())
    for key_file in key_files:
        try:
            signer = Signer.from_pem(key_file.read_bytes())
        except IdentityError:
            continue  # not a key file (or another key type); keep looking
        if _public_der(signer.public_key) == cert_public:
            return identity, signer
    raise IdentityError(
        f"no private key in {msp / 'keystore'} matches the certificate {certs[0].name}"
    )


def _public_der(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IdentityError("certificate key is not ECDSA; Fabric identities use ECDSA")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
