"""OPC-UA security of the simulators and the bridge: SignAndEncrypt with application certificates from the orgs'
own Fabric CAs, and trust lists of those CAs.

Policy: ``Aes256_Sha256_RsaPss`` SignAndEncrypt (OPC-UA 1.04+; RSA-OAEP-SHA256 key transport, RSA-PSS-SHA256
signatures, AES-256-CBC) — asyncua 2.1 serves it as well as Basic256Sha256, which OPC-UA 1.05 deprecates
(``POLICY`` below names it once for server and client).

Application certificates (``issue_app_certificate``): each is enrolled at the org's own Fabric CA (network.ca),
``fabric-ca-client enroll --enrollment.profile tls --csr.hosts URN,127.0.0.1,localhost[,HOST] --csr.keyrequest.algo rsa``
(HOST: the OPC-UA org's spec ``host`` when it is not loopback, the address the simulators listen on and are reached at).
fabric-ca-client puts a ``scheme:...`` host into the CSR as a URI SAN and the CA's tls profile keeps it, so the
application URI that OPC-UA Part 6 requires in subjectAltName comes from the CA itself: no OPC-UA issuing key
of our own, and every application certificate is in the CA's database (revocable there like any identity).
Checked on fabric-ca v1.5.15. The identity is registered with id type ``opcua``: with NodeOUs on, an identity that
is not client/peer/admin/orderer is not a member of the org's MSP, so this key can never sign a Fabric transaction.
The tls profile's key usage is digitalSignature + keyEncipherment (+ keyAgreement) — what RSA SignAndEncrypt
uses — but not the dataEncipherment/nonRepudiation that Part 6 lists; ``validator`` therefore checks those two
bits itself instead of asyncua's KEY_USAGE option (which demands all four). A CA signing profile for OPC-UA would
add them (network/ca.py's CA configuration).

Trust (``trust_folder``): the CA roots of the orgs whose assets the simulators serve. The server admits a client
only if its certificate chains to one of them (so a self-signed certificate, one from another CA, or none at all is
refused) and the bridge connects only to a server certified the same way. Not the whole consortium: an org with no
assets there has no business reading them; not only one org: every data owner may connect its own client.

``generate_certificate`` makes a self-signed certificate (tests use it as the untrusted outsider).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions as V
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from network.files import write_private
from network.identity import subject_alt_names

log = logging.getLogger("twins.security")
POLICY_NAME = "Aes256_Sha256_RsaPss"
SERVER_POLICY = ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt
CLIENT_POLICY = security_policies.SecurityPolicyAes256Sha256RsaPss
RSA_BITS = 2048
#: Renew an application certificate this long before it expires.
RENEW_BEFORE = _dt.timedelta(days=7)
INSECURE_WARNING = ("WARNING: OPC-UA WITHOUT SECURITY (--insecure-opcua): sensor values travel in plain text and any "
                    "local process can connect to the simulators; use this for debugging only")


def check_security_flags(insecure: bool, cert: object, key: object, trust: object) -> None:
    """The command-line rule the simulators and the bridge share: --cert, --key and --trust (SignAndEncrypt),
    or --insecure alone, which is announced on stderr every run. Exits with one line otherwise."""
    if insecure:
        if cert or key or trust:
            raise SystemExit("error: --insecure excludes --cert, --key and --trust")
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
    elif not (cert and key and trust):
        raise SystemExit("error: give --cert, --key and --trust (SignAndEncrypt), or --insecure")


def application_uri(org: str, app: str) -> str:
    return f"urn:twinledger:{org}:{app}"


def uri_of(cert_path: str | Path) -> str:
    """The application URI (first URI SAN) of a certificate: server and client take theirs from it, so the URI
    they announce always matches their certificate."""
    cert = load_certificate(cert_path)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    if not uris:
        raise ValueError(f"{cert_path} has no URI in its subjectAltName (an OPC-UA application certificate needs one)")
    return uris[0]


def load_certificate(path: str | Path) -> x509.Certificate:
    data = Path(path).read_bytes()
    return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)


def file_format(path: str | Path) -> str:
    """"pem" or "der", by content (asyncua otherwise guesses from the file extension)."""
    return "pem" if b"-----BEGIN" in Path(path).read_bytes()[:64] else "der"


# --- application certificates from the org's Fabric CA ---------------------------------------------------------
@dataclass(frozen=True)
class AppCertificate:
    org: str
    uri: str
    cert: Path
    key: Path


def ip_sans(cert: x509.Certificate) -> set[str]:
    """The IP addresses in a certificate's subjectAltName."""
    return subject_alt_names(cert)[0]


def _still_valid(cert_path: Path, key_path: Path, uri: str, ca_path: Path, host: str) -> bool:
    """The certificate there was issued by this CA (a network re-created from nothing has a new one), for this URI
    and host (an org moved to another host needs its address in the certificate), and is not about to expire."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert, ca = load_certificate(cert_path), load_certificate(ca_path)
        cert.verify_directly_issued_by(ca)
        return (uri_of(cert_path) == uri and host in ip_sans(cert)
                and cert.not_valid_after_utc - RENEW_BEFORE > _dt.datetime.now(_dt.timezone.utc))
    except Exception:  # unreadable, not issued by this CA, no URI: issue a new one
        return False


def app_cert_hosts(uri: str, host: str = "127.0.0.1") -> list[str]:
    """The ``--csr.hosts`` of an application certificate: its URI, the loopback names, ``host`` (the address the
    application listens on and is reached at, when not loopback) and this machine's name (asyncua warns about an
    application certificate without it)."""
    from network.ca import tls_hosts

    return [uri, *tls_hosts(host), socket.gethostname()]


def issue_app_certificate(home: Path, org: str, app: str, dest: Path, host: str = "127.0.0.1") -> AppCertificate:
    """An RSA application certificate for ``urn:twinledger:<org>:<app>`` on ``host`` from ``org``'s Fabric CA, in
    ``dest/cert.pem`` + ``dest/key.pem`` (0600); reused while still valid. The network's CA must be up."""
    from network.ca import CAClient
    from network.layout import Layout
    from network.spec import load_spec
    from peers.binaries import fabric_ca_binary

    layout = Layout(home)
    uri = application_uri(org, app)
    cert_path, key_path = dest / "cert.pem", dest / "key.pem"
    if _still_valid(cert_path, key_path, uri, layout.ca_cert(org), host):
        return AppCertificate(org, uri, cert_path, key_path)
    client = CAClient(load_spec(layout.spec_file), layout, org, fabric_ca_binary("fabric-ca-client"))
    name = f"opcua-{app}"
    secret = client.register(name, "opcua", {})
    msp = dest / "msp"
    client.enrol(name, secret, msp, tls_hosts=app_cert_hosts(uri, host), rsa_bits=RSA_BITS)
    try:
        shutil.copy(msp / "signcerts" / "cert.pem", cert_path)
        write_private(key_path, next((msp / "keystore").iterdir()).read_bytes())
    finally:
        shutil.rmtree(msp, ignore_errors=True)
    return AppCertificate(org, uri, cert_path, key_path)


def trust_folder(home: Path, orgs: list[str], dest: Path) -> Path:
    """``dest`` holding exactly the CA roots of ``orgs`` (``<org>.pem``): the trust list of both ends."""
    from network.layout import Layout

    layout = Layout(home)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        old.unlink()
    for org in orgs:
        shutil.copy(layout.ca_cert(org), dest / f"{org}.pem")
    return dest


# --- validation --------------------------------------------------------------------------------------------------
#: asyncua's checks minus KEY_USAGE (see the module doc): validity period, application URI in the SAN, extended key
#: usage for the peer's role, chain to a trusted CA, not revoked.
_CHECKS = V.TIME_RANGE | V.URI | V.EXT_KEY_USAGE | V.TRUSTED | V.REVOKED


class TrustList:
    """The trusted CA roots: folders of PEM/DER certificates (``*.pem``/``*.der``, asyncua's TrustStore), loaded once."""

    def __init__(self, locations: list[Path]) -> None:
        for p in locations:
            if not Path(p).is_dir() or not any(Path(p).glob("*.pem")) and not any(Path(p).glob("*.der")):
                raise ValueError(f"trust list {p}: not a folder of CA certificates (*.pem, *.der)")
        self.store = TrustStore([Path(p) for p in locations], [])
        # asyncua logs every refusal with a traceback; the validator below logs one line instead
        logging.getLogger("asyncuagds.validate").setLevel(logging.CRITICAL)

    async def load(self) -> TrustList:
        await self.store.load_trust()
        return self

    def trusts(self, cert: x509.Certificate) -> bool:
        return self.store.is_trusted(cert)


def validator(trust: TrustList, peer: str) -> CertificateValidator:
    """asyncua's certificate validator for the other end (``peer``: "client" on the server, "server" on the
    client), plus the key usage RSA SignAndEncrypt needs."""
    role = V.PEER_CLIENT if peer == "client" else V.PEER_SERVER

    class _Validator(CertificateValidator):
        async def validate(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
            try:
                await super().validate(cert, app)
            except ServiceError as exc:
                log.warning("refused the %s certificate %s (%s): %s", peer, cert.subject.rfc4514_string(),
                            app.ApplicationUri, ua.StatusCode(exc.code).name)
                raise
            try:
                ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            except x509.ExtensionNotFound:
                raise ServiceError(ua.StatusCodes.BadCertificateUseNotAllowed) from None
            if not (ku.digital_signature and ku.key_encipherment):
                raise ServiceError(ua.StatusCodes.BadCertificateUseNotAllowed)

    return _Validator(_CHECKS | role, trust.store)


# --- what each end is configured with ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientSecurity:
    """Bridge side: SignAndEncrypt with our certificate; the server must chain to ``trust`` (and, with
    ``server_cert``, be exactly that certificate)."""

    cert: Path
    key: Path
    trust: list[Path] = field(default_factory=list)
    server_cert: Path | None = None


def generate_certificate(cert_path: str | Path, key_path: str | Path, application_uri: str, common_name: str, days: int = 365) -> None:
    """A self-signed RSA-2048 / SHA-256 application certificate (URI SAN, 127.0.0.1/localhost): an outsider's."""
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
    write_private(Path(key_path), key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                                    serialization.NoEncryption()))


@dataclass(frozen=True)
class OpcuaPki:
    """What `twinledger twins run` gives its processes: the simulators' and the bridge's application certificates
    (from the operating org's CA) and the trust list both check the other end against."""

    org: str
    server: AppCertificate
    bridge: AppCertificate
    trust: Path


def prepare_pki(home: Path, org: str, asset_orgs: list[str], root: Path, host: str = "127.0.0.1") -> OpcuaPki:
    """Certificates under ``root/<org>/{simulators,bridge}/`` and the trust list ``root/trust/`` (the CAs of
    ``asset_orgs``, which must include ``org``). ``host``: the OPC-UA org's address (its spec placement), where
    the simulators listen and the bridge runs; both certificates carry it as an IP SAN."""
    if org not in asset_orgs:
        raise ValueError(f"the OPC-UA org {org} has no assets in this run ({', '.join(asset_orgs)})")
    trust = trust_folder(home, sorted(asset_orgs), root / "trust")
    server = issue_app_certificate(home, org, "simulators", root / org / "simulators", host)
    bridge = issue_app_certificate(home, org, "bridge", root / org / "bridge", host)
    return OpcuaPki(org, server, bridge, trust)
