"""The channel's MSPs as a peer sees them: who may sign, and whether a signature is good.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. It is as strict as a peer where that matters to a client: the creator
(``msp.SerializedIdentity``) must name a known MSP, its certificate must be issued by that MSP's CA
and be within its validity period, every signature must verify against it and be low-S, and the
channel's ACLs hold (with NodeOUs, /Channel/Application/Writers = an org's admin or client,
Readers = admin, peer or client, as network/configtx.py writes them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2

from network.gateway_errors import ErrorDetail

P256_HALF_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 // 2
#: The NodeOU roles each channel policy admits (network/configtx.py: an application org's policies).
WRITERS = frozenset({"admin", "client"})
READERS = frozenset({"admin", "peer", "client"})


class Rejected(Exception):
    """A request the double refuses: becomes a gRPC status (with the gateway's ErrorDetails, if any)."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or []


@dataclass(frozen=True)
class Creator:
    """A verified signer: its MSP ID, certificate (PEM) and NodeOU role (None without NodeOUs)."""

    msp_id: str
    certificate_pem: bytes
    node_ou: str | None
    serialized: bytes

    def shim_creator(self) -> dict[str, object]:
        """The creator as the Python shim hands it to the chaincode (``stub.get_creator()``)."""
        return {"mspid": self.msp_id, "idBytes": self.certificate_pem}


@dataclass(frozen=True)
class Msp:
    msp_id: str
    ca_cert: x509.Certificate
    node_ous: bool = True
    application: bool = True  # an application org (hospital, plant), not the orderer org

    @classmethod
    def from_folder(cls, msp_id: str, msp_dir: Path, application: bool) -> Msp:
        """A verifying MSP folder (cacerts/ca.pem; NodeOUs on when config.yaml enables them)."""
        ca = x509.load_pem_x509_certificate((msp_dir / "cacerts" / "ca.pem").read_bytes())
        config = msp_dir / "config.yaml"
        node_ous = config.exists() and "Enable: true" in config.read_text()
        return cls(msp_id, ca, node_ous, application)


@dataclass
class MspRegistry:
    msps: dict[str, Msp]
    _verified: dict[bytes, Creator] = field(default_factory=dict)

    def creator(self, serialized: bytes) -> Creator:
        """The verified creator of a request (cached: the same bytes come with every call)."""
        if serialized in self._verified:
            return self._verified[serialized]
        identity = identities_pb2.SerializedIdentity.FromString(serialized)
        msp = self.msps.get(identity.mspid)
        if msp is None:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, f"unknown MSP {identity.mspid!r}")
        try:
            cert = x509.load_pem_x509_certificate(bytes(identity.id_bytes))
        except ValueError:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "creator certificate is not PEM") from None
        ca_key = msp.ca_cert.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        try:
            if cert.issuer != msp.ca_cert.subject:
                raise InvalidSignature
            ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "creator certificate not issued by the MSP CA") from None
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "creator certificate has expired or is not yet valid")
        node_ou = None
        if msp.node_ous:
            ous = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
            node_ou = next((ou for ou in ("admin", "peer", "client", "orderer") if ou in ous), None)
            if node_ou is None:
                raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "creator certificate has no NodeOU")
        creator = Creator(identity.mspid, bytes(identity.id_bytes), node_ou, serialized)
        self._verified[serialized] = creator
        return creator

    def verify(self, serialized: bytes, data: bytes, signature: bytes) -> Creator:
        """The creator, once its signature over data checks out (SHA-256, DER, low S)."""
        creator = self.creator(serialized)
        public_key = x509.load_pem_x509_certificate(creator.certificate_pem).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        try:
            _, s = decode_dss_signature(signature)
        except ValueError:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "signature is not DER") from None
        if s > P256_HALF_ORDER:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "invalid S. Must be smaller than half the order")
        try:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "signature verification failed") from None
        return creator

    def require(self, creator: Creator, roles: frozenset[str], channel: str) -> None:
        """The channel policy (Writers or Readers) holds for creator, else Fabric's access-denied text."""
        msp = self.msps[creator.msp_id]
        if msp.application and (creator.node_ou is None or creator.node_ou in roles):
            return
        raise Rejected(grpc.StatusCode.PERMISSION_DENIED,
                       f"access denied: channel [{channel}] creator org [{creator.msp_id}]")
