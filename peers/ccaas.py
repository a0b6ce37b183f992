"""Chaincode as a service (CCaaS): the external builder and the chaincode package the peer installs.

TwinLedger's chaincode is a Python process that listens on its own port; the peer dials it. Fabric
learns this from a chaincode package whose metadata.json says ``"type": "ccaas"`` and whose code
archive holds only a ``connection.json`` (address, dial timeout, TLS material). Our external builder
(``peers/ccaas_builder/bin``) recognises such packages and hands connection.json to the peer; there is
no ``run`` script because the peer never starts the chaincode itself -- the supervisor does.

Package format (what ``peer lifecycle chaincode package`` produces and the peer parses):

    <label>.tar.gz          gzip'd tar with exactly two regular files
      metadata.json         {"type": "ccaas", "label": "<label>"}
      code.tar.gz           gzip'd tar with connection.json

The package ID is ``<label>:<sha256 of the package file bytes>``, so the archive is written
deterministically (fixed mtimes, owners and gzip header): the same inputs give the same package ID on
every run, which keeps ``twinledger up`` idempotent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from network.files import write_atomic

# The files of our builder, kept in the repository as real scripts so they can be read and diffed.
BUILDER_SOURCE = Path(__file__).with_name("ccaas_builder")
BUILDER_SCRIPTS = ("detect", "build", "release")
# Name of the builder in core.yaml's chaincode.externalBuilders (shows up in peer logs).
BUILDER_NAME = "ccaas"

# How the builder learns per-peer values such as the chaincode server address (see bin/build):
# Fabric's own variable, and a JSON file next to each peer's core.yaml found via $FABRIC_CFG_PATH.
BUILDER_CONTEXT_ENV = "CHAINCODE_AS_A_SERVICE_BUILDER_CONFIG"
BUILDER_CONTEXT_FILE = "ccaas-context.json"
# Put this in a package's address to let every peer dial its own chaincode server with one package.
CHAINCODE_ADDRESS_TEMPLATE = "{{.chaincode_address}}"
# The same for the TLS material of connection.json: each peer trusts its own org's CA for its chaincode
# server and presents its own client key pair. A package is installed on every org's peers, so a key
# written into the package itself would be handed to every other org; the placeholders keep each key
# in its own peer's builder context (written 0600, see write_builder_context).
CHAINCODE_ROOT_CERT_KEY, PEER_CLIENT_CERT_KEY, PEER_CLIENT_KEY_KEY = "chaincode_root_cert", "peer_client_cert", "peer_client_key"
CHAINCODE_ROOT_CERT_TEMPLATE = f"{{{{.{CHAINCODE_ROOT_CERT_KEY}}}}}"
PEER_CLIENT_CERT_TEMPLATE = f"{{{{.{PEER_CLIENT_CERT_KEY}}}}}"
PEER_CLIENT_KEY_TEMPLATE = f"{{{{.{PEER_CLIENT_KEY_KEY}}}}}"

# Fabric's label rule (core/chaincode/persistence: ValidateLabel).
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_PLACEHOLDER_RE = re.compile(r"^\{\{\s*\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")

PemSource = str | bytes | Path


class PackageError(ValueError):
    """A chaincode package that Fabric would refuse; the message says what to change."""


@dataclass(frozen=True)
class CcaasTLS:
    """TLS for the peer -> chaincode connection.

    ``root_cert`` is the CA that signed the chaincode server's certificate. Give ``client_cert`` and
    ``client_key`` when the chaincode server requires client authentication: the peer then presents
    them. Values are PEM text (str/bytes), a Path to a PEM file (Fabric wants the PEM *contents*
    inside connection.json, not file names), or a ``{{.key}}`` placeholder the builder fills per peer.
    """

    root_cert: PemSource
    client_cert: PemSource | None = None
    client_key: PemSource | None = None


@dataclass(frozen=True)
class CcaasPackage:
    path: Path
    label: str
    package_id: str


# -- the builder ------------------------------------------------------------------------------------
def install_builder(dest_dir: Path | str) -> Path:
    """Copy the builder scripts to ``dest_dir/bin`` with mode 0755 and return ``dest_dir``.

    Why copy instead of pointing core.yaml at the repository: the executable bit does not survive
    every checkout, zip download or wheel install, and the peer refuses a builder whose scripts it
    cannot execute. Writing them with an explicit mode makes a fresh clone work.
    """
    dest = Path(dest_dir)
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in BUILDER_SCRIPTS:
        src = BUILDER_SOURCE / "bin" / name
        if not src.is_file():
            raise FileNotFoundError(f"builder script {src} is missing from the TwinLedger checkout; reinstall TwinLedger")
        # Atomic, executable from creation: a peer running `detect` never sees half a script.
        write_atomic(bin_dir / name, src.read_bytes(), 0o755)
    return dest


def builder_context(chaincode_address: str, **extra: str) -> dict[str, str]:
    """The values a package's ``{{.key}}`` placeholders can use for one peer."""
    return {"chaincode_address": chaincode_address, **extra}


def builder_context_env(chaincode_address: str, **extra: str) -> dict[str, str]:
    """Environment for a peer process that passes the builder context the way Fabric's samples do."""
    return {BUILDER_CONTEXT_ENV: json.dumps(builder_context(chaincode_address, **extra), sort_keys=True)}


def write_builder_context(config_dir: Path | str, context: Mapping[str, str]) -> Path:
    """Write the context file the builder reads from ``$FABRIC_CFG_PATH`` (the peer's config folder).

    0600 from creation: it holds the peer's TLS client key.
    """
    text = json.dumps(dict(context), indent=2, sort_keys=True) + "\n"
    return write_atomic(Path(config_dir) / BUILDER_CONTEXT_FILE, text, mode=0o600)


# -- the package ------------------------------------------------------------------------------------
def package_id(label: str, package_bytes: bytes) -> str:
    """Fabric's package ID: the label, a colon, and the hex SHA-256 of the whole package file."""
    return f"{label}:{hashlib.sha256(package_bytes).hexdigest()}"


def connection_json(address: str, *, dial_timeout: str = "10s", tls: CcaasTLS | None = None) -> dict[str, object]:
    """connection.json as Fabric's ChaincodeServerUserData reads it (all fields, like Fabric's builder writes)."""
    if not address:
        raise PackageError("chaincode address is empty; give host:port of the chaincode server")
    if not _DURATION_RE.match(dial_timeout):
        raise PackageError(f"dial_timeout {dial_timeout!r} is not a Go duration such as 10s")
    conn: dict[str, object] = {
        "address": address,
        "dial_timeout": dial_timeout,
        "tls_required": tls is not None,
        "client_auth_required": False,
        "root_cert": "",
        "client_key": "",
        "client_cert": "",
    }
    if tls is not None:
        conn["root_cert"] = _pem(tls.root_cert, "root_cert")
        if (tls.client_cert is None) != (tls.client_key is None):
            raise PackageError("give both client_cert and client_key (or neither) for chaincode TLS")
        if tls.client_cert is not None and tls.client_key is not None:
            conn["client_auth_required"] = True
            conn["client_cert"] = _pem(tls.client_cert, "client_cert")
            conn["client_key"] = _pem(tls.client_key, "client_key")
    return conn


def package_ccaas(
    label: str,
    address: str,
    out_path: Path | str,
    tls: CcaasTLS | None = None,
    *,
    dial_timeout: str = "10s",
) -> CcaasPackage:
    """Write a CCaaS chaincode package to ``out_path`` and return its path, label and package ID.

    ``address`` is host:port of the chaincode server, or ``CHAINCODE_ADDRESS_TEMPLATE`` to let each
    peer fill in its own server (see bin/build).
    """
    if not _LABEL_RE.match(label):
        raise PackageError(
            f"chaincode label {label!r} is invalid: use letters, digits and . + - _, starting with a letter or digit"
        )
    conn = connection_json(address, dial_timeout=dial_timeout, tls=tls)
    code = _targz({"connection.json": _json_bytes(conn)})
    metadata = _json_bytes({"type": "ccaas", "label": label})
    # Order as `peer lifecycle chaincode package` writes it; the peer accepts either order.
    package = _targz({"metadata.json": metadata, "code.tar.gz": code})

    out = write_atomic(out_path, package)
    return CcaasPackage(path=out, label=label, package_id=package_id(label, package))


def read_package(package_bytes: bytes) -> tuple[dict[str, object], dict[str, object]]:
    """(metadata.json, connection.json) of a CCaaS package, checked the way the peer checks it."""
    files = _untargz(package_bytes, "chaincode package")
    if "metadata.json" not in files:
        raise PackageError("chaincode package has no metadata.json")
    if "code.tar.gz" not in files:
        raise PackageError("chaincode package has no code.tar.gz")
    metadata = json.loads(files["metadata.json"])
    code = _untargz(files["code.tar.gz"], "code.tar.gz")
    if "connection.json" not in code:
        raise PackageError("code.tar.gz has no connection.json")
    return metadata, json.loads(code["connection.json"])


# -- helpers ----------------------------------------------------------------------------------------
def _pem(value: PemSource, what: str) -> str:
    text = value.read_text() if isinstance(value, Path) else value.decode() if isinstance(value, bytes) else value
    if _PLACEHOLDER_RE.match(text):
        return text  # filled per peer by the builder (bin/build)
    if "-----BEGIN " not in text:
        raise PackageError(f"{what} is not PEM text (pass a Path to read a file)")
    return text


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=2).encode() + b"\n"


def _targz(files: Mapping[str, bytes]) -> bytes:
    """A gzip'd tar of regular files only, byte-for-byte reproducible.

    The peer rejects any tar entry that is not a regular file, so no directory entries are written.
    USTAR keeps the headers plain for Go's archive/tar.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # mtime=0 and no file name in the gzip header: otherwise every run gives a new package ID.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _untargz(data: bytes, what: str) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            files: dict[str, bytes] = {}
            for member in tar.getmembers():
                if not member.isreg():
                    raise PackageError(f"{what}: entry {member.name} is not a regular file")
                f = tar.extractfile(member)
                assert f is not None
                files[member.name] = f.read()
            return files
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PackageError(f"{what} is not a gzip'd tar: {e}") from None
