"""Chaincode-as-a-service entry point: ``python -m chaincode.server``.

The peer dials this server (through the external builder's connection.json) and opens the
``protos.Chaincode/Connect`` stream; the shim's ChaincodeService then speaks the chaincode protocol.
The shim's own ``start()`` is not used because it has no signal handling, turns an unreadable TLS
file into PEM text silently, and leaves gRPC's keepalive policy at defaults that make a Fabric peer
(which pings every 60 s) get disconnected with "too many pings".

Environment:
  CHAINCODE_ID                      Fabric package ID, e.g. ``registry_1.0:3a5f...`` (required)
  CHAINCODE_SERVER_ADDRESS          listen address host:port (default 127.0.0.1:9999; port 0 = any free)
  CHAINCODE_TLS_KEY_FILE            PEM private key   } both or neither: TLS
  CHAINCODE_TLS_CERT_FILE           PEM certificate   }
  CHAINCODE_TLS_CLIENT_CACERT_FILE  PEM CA(s) of the peers' client certs: mutual TLS is then required
  CHAINCODE_TLS_CLIENT_OU           with mutual TLS: the OU the client certificate must carry (e.g. ``peer``,
                                    so that a user's TLS certificate from the same CA is refused)
  CORE_CHAINCODE_LOGGING_LEVEL      log level (default INFO); CORE_CHAINCODE_LOGGING_SHIM: the shim's (WARNING)
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chaincode import compat

LOG = logging.getLogger("chaincode.server")

DEFAULT_ADDRESS = "127.0.0.1:9999"
#: Seconds in-flight transactions get to finish after SIGTERM before streams are cancelled.
SHUTDOWN_GRACE_S = 2.0
EXIT_CONFIG_ERROR = 2
EXIT_RUNTIME_ERROR = 1
_MESSAGE_LIMIT = 100 * 1024 * 1024
# Same policy as Fabric's Go and Java chaincode servers: messages up to 100 MiB (state values and
# range query pages), and the peer may ping every minute even while the stream is idle. SO_REUSEPORT
# is off so that a second server on a taken port fails instead of silently sharing the peer's calls.
GRPC_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
    ("grpc.max_send_message_length", _MESSAGE_LIMIT),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
    ("grpc.keepalive_time_ms", 2 * 60 * 60 * 1000),
    ("grpc.keepalive_timeout_ms", 20_000),
)
# Fabric package IDs are "<label>:<hash>"; labels use [A-Za-z0-9_.+-] and start alphanumerically.
_CHAINCODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*:[A-Za-z0-9]+")


class ConfigError(Exception):
    """The environment does not describe a usable server; the message says which setting and why."""


@dataclass(frozen=True)
class TlsConfig:
    key_pem: bytes
    cert_pem: bytes
    client_ca_pem: bytes | None
    client_ou: str | None = None

    @property
    def mode(self) -> str:
        return "mutual" if self.client_ca_pem else "server"

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.client_ca_pem is not None,
        )


@dataclass(frozen=True)
class ServerConfig:
    chaincode_id: str
    address: str
    tls: TlsConfig | None


def _parse_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"CHAINCODE_SERVER_ADDRESS={value!r} is not host:port (e.g. {DEFAULT_ADDRESS})")
    if host.startswith("[") != host.endswith("]"):
        raise ConfigError(f"CHAINCODE_SERVER_ADDRESS={value!r}: write an IPv6 host in brackets, e.g. [::1]:9999")
    return value


def _read_pem(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path!r} cannot be read: {exc.strerror or exc}") from exc


def _load_tls(environ: Mapping[str, str]) -> TlsConfig | None:
    key_path = environ.get("CHAINCODE_TLS_KEY_FILE", "").strip()
    cert_path = environ.get("CHAINCODE_TLS_CERT_FILE", "").strip()
    ca_path = environ.get("CHAINCODE_TLS_CLIENT_CACERT_FILE", "").strip()
    client_ou = environ.get("CHAINCODE_TLS_CLIENT_OU", "").strip() or None
    if client_ou and not ca_path:
        raise ConfigError("CHAINCODE_TLS_CLIENT_OU is set but client certificates are not required: "
                          "also set CHAINCODE_TLS_CLIENT_CACERT_FILE")
    if not key_path and not cert_path:
        if ca_path:
            raise ConfigError(
                "CHAINCODE_TLS_CLIENT_CACERT_FILE is set but TLS is off: "
                "also set CHAINCODE_TLS_KEY_FILE and CHAINCODE_TLS_CERT_FILE"
            )
        return None
    if not key_path or not cert_path:
        missing = "CHAINCODE_TLS_KEY_FILE" if not key_path else "CHAINCODE_TLS_CERT_FILE"
        raise ConfigError(f"{missing} is not set: TLS needs both CHAINCODE_TLS_KEY_FILE and CHAINCODE_TLS_CERT_FILE")

    key_pem = _read_pem("CHAINCODE_TLS_KEY_FILE", key_path)
    cert_pem = _read_pem("CHAINCODE_TLS_CERT_FILE", cert_path)
    # Parse here so a wrong file is reported by name, instead of as a TLS handshake failure later.
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"CHAINCODE_TLS_KEY_FILE={key_path!r} is not an unencrypted PEM private key") from exc
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"CHAINCODE_TLS_CERT_FILE={cert_path!r} is not a PEM certificate") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ConfigError(
            f"CHAINCODE_TLS_KEY_FILE={key_path!r} does not match the certificate in CHAINCODE_TLS_CERT_FILE"
        )

    ca_pem = None
    if ca_path:
        ca_pem = _read_pem("CHAINCODE_TLS_CLIENT_CACERT_FILE", ca_path)
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise ConfigError(
                f"CHAINCODE_TLS_CLIENT_CACERT_FILE={ca_path!r} holds no PEM certificate"
            ) from exc
    return TlsConfig(key_pem=key_pem, cert_pem=cert_pem, client_ca_pem=ca_pem, client_ou=client_ou)


def refusal(auth_context: Mapping[str, Any], required_ou: str) -> str | None:
    """Why a TLS client may not open the chaincode stream (None: it may).

    gRPC has already checked that the certificate chains to CHAINCODE_TLS_CLIENT_CACERT_FILE; every identity
    the org's CA enrolled passes that, so the OU (Fabric CA writes the identity type there) narrows it to
    the org's peers.
    """
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return "no client certificate"
    cert = x509.load_pem_x509_certificate(pems[0])
    ous = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if required_ou not in ous:
        return f"client certificate {cert.subject.rfc4514_string()} has OU {ous or 'none'}, not {required_ou}"
    return None


def load_config(environ: Mapping[str, str]) -> ServerConfig:
    chaincode_id = environ.get("CHAINCODE_ID", "").strip()
    if not chaincode_id:
        raise ConfigError("CHAINCODE_ID is not set: set it to the chaincode package ID (label:hash)")
    if not _CHAINCODE_ID_RE.fullmatch(chaincode_id):
        raise ConfigError(f"CHAINCODE_ID={chaincode_id!r} is not a package ID of the form label:hash")
    address = _parse_address(environ.get("CHAINCODE_SERVER_ADDRESS", "").strip() or DEFAULT_ADDRESS)
    return ServerConfig(chaincode_id=chaincode_id, address=address, tls=_load_tls(environ))


def _bind(server: grpc.aio.Server, config: ServerConfig) -> int:
    try:
        if config.tls is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, config.tls.credentials())
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {config.address}: {exc}") from exc
    if port == 0:  # older grpc versions report a failed bind this way instead of raising
        raise ConfigError(f"cannot listen on {config.address}: address in use or not local")
    return port


async def serve(config: ServerConfig, chaincode: Any, stop: asyncio.Event | None = None) -> None:
    """Serve until stop is set (main() sets it on SIGTERM/SIGINT)."""
    from fabric_chaincode_python.fabric_shim.server import ChaincodeService
    from fabric_protos.peer import chaincode_shim_pb2_grpc

    class Service(ChaincodeService):
        async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
            required_ou = config.tls.client_ou if config.tls else None
            if required_ou:
                reason = refusal(context.auth_context(), required_ou)
                if reason:
                    LOG.warning("refused a chaincode stream from %s: %s", context.peer(), reason)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not a peer of this org: {reason}")
            await super().Connect(request_iterator, context)

    stop = stop or asyncio.Event()
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(Service(config.chaincode_id, chaincode), server)
    try:
        port = _bind(server, config)
    except ConfigError:
        await server.stop(None)
        raise
    await server.start()
    host = config.address.rpartition(":")[0]
    LOG.info(
        "chaincode server started id=%s address=%s:%d tls=%s pid=%d",
        config.chaincode_id, host, port, _tls_description(config.tls), os.getpid(),
    )
    try:
        await stop.wait()
    finally:
        await server.stop(SHUTDOWN_GRACE_S)


def _tls_description(tls: TlsConfig | None) -> str:
    if tls is None:
        return "off"
    return f"{tls.mode}(ou={tls.client_ou})" if tls.client_ou else tls.mode


async def _run(config: ServerConfig, chaincode: Any) -> str:
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: (received.append(s.name), stop.set()))
    await serve(config, chaincode, stop)
    return received[0] if received else "stop"


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    # One line per event on stderr; the shim's import already installed a root handler, replace its format.
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        compat.apply(env)
        config = load_config(env)
    except (ConfigError, compat.CompatConfigError) as exc:
        print(f"chaincode server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

    from chaincode.app import build_chaincode

    try:
        reason = asyncio.run(_run(config, build_chaincode()))
    except ConfigError as exc:
        print(f"chaincode server: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    LOG.info("chaincode server stopped id=%s reason=%s", config.chaincode_id, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
