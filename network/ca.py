"""Each org's own Fabric CA: how its server runs, and enrolment of the org's nodes and users.

Every org (hospitals, plants and the orderer org) runs a fabric-ca-server with TLS on. The same CA signs
the org's enrolment certificates and, with the ``tls`` profile, its TLS certificates (SANs 127.0.0.1,
localhost and the org's ``host``), so one root per org is both its MSP root and its TLS root.

User certificates carry attributes the way Fabric CA writes them -- an X.509 extension
(OID 1.2.3.4.5.6.7.8.1) holding ``{"attrs": {"role": "steward", "org_kind": "hospital", ...}}`` -- because
attributes registered with the ``:ecert`` suffix are put into every enrolment certificate. The chaincode
decides access from these, never from arguments. NodeOUs (client, peer, admin, orderer) come from the
identity type given at registration.

No secret ever appears on a command line (``/proc/PID/cmdline`` and ``ps`` show argv to every local user)
or in a log: the CA's bootstrap password and every enrolment secret reach fabric-ca-server's one-time
init and fabric-ca-client through their environment (viper reads ``FABRIC_CA_SERVER_*`` /
``FABRIC_CA_CLIENT_*`` for every flag), which only the process's owner can read (``/proc/PID/environ`` is
owner-only), and their output is never logged as is. The secrets live in one 0600 file per org;
everything the CA and its clients write is private to the owner (umask 077: the CA's config holds the
bootstrap password, its keystore the CA keys).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from network.files import PRIVATE_UMASK, private_dir, write_private
from network.layout import Layout
from network.msp import write_nodeou_config
from network.spec_model import USER_ROLES, Node, Org, Spec


class EnrolmentError(RuntimeError):
    """fabric-ca-client refused; the message carries its last error line."""


def _redact(text: str, secret_values: Iterable[str]) -> str:
    """text with every secret value -- and the password inside a URL value -- replaced by ***."""
    for value in secret_values:
        for s in (value, urlsplit(value).password):
            if s:
                text = text.replace(s, "***")
    return text


def ca_node(spec: Spec, org: str) -> Node:
    return spec.node(f"ca.{org}")


def ca_url(spec: Spec, org: str) -> str:
    return f"https://{ca_node(spec, org).address}"


def _secrets_file(layout: Layout, org: str) -> Path:
    return layout.ca_client_home(org) / "secrets.json"


def _load_secrets(layout: Layout, org: str) -> dict[str, str]:
    """Enrolment secrets of an org's identities, kept 0600 so `up` can re-enrol after a crash."""
    f = _secrets_file(layout, org)
    if f.exists():
        return json.loads(f.read_text())
    data = {"bootstrap-admin": secrets.token_urlsafe(18)}
    _save_secrets(layout, org, data)
    return data


def _save_secrets(layout: Layout, org: str, data: dict[str, str]) -> None:
    write_private(_secrets_file(layout, org), json.dumps(data))  # 0600 from creation, atomic


@dataclass(frozen=True)
class CAServer:
    """The command line and environment of one org's fabric-ca-server."""

    argv: list[str]
    env: dict[str, str]
    health: str


def ca_server(spec: Spec, layout: Layout, org: Org, server_bin: Path) -> CAServer:
    """server_bin: the fabric-ca-server binary (peers.binaries finds it; network/ does not depend on peers/)."""
    node = ca_node(spec, org.name)
    home = layout.ca_home(org.name)
    flags = [
        "--home", str(home),
        "--address", node.host,
        "--port", str(node.ports.listen),
        "--tls.enabled",
        "--ca.name", f"ca-{org.name}",
        "--csr.cn", f"ca.{org.name}",
        "--csr.hosts", ",".join(tls_hosts(node.host)),
    ]
    env = {
        # Operations (health, metrics) in plain HTTP on the org's host, like the peers' and orderers'.
        "FABRIC_CA_SERVER_OPERATIONS_LISTENADDRESS": f"{node.host}:{node.ports.operations}",
        "FABRIC_CA_SERVER_METRICS_PROVIDER": "prometheus",
    }
    _init_ca(layout, org.name, server_bin, flags, env)
    return CAServer([str(server_bin), "start", *flags], env, f"{node.operations_url}/healthz")


def _init_ca(layout: Layout, org: str, server_bin: Path, flags: list[str], env: dict[str, str]) -> None:
    """`fabric-ca-server init` once, here rather than under the supervisor, so that the bootstrap password
    never reaches the supervised CA process.

    fabric-ca-server needs the bootstrap registrar (`--boot`) only to write its default config, but logs
    its whole configuration at every start, `boot: user:password` included (its redaction of "pass",
    "secret", ... misses that key; fabric-ca v1.5.15 cmd/fabric-ca-server/config.go). So: init once with
    the password in the environment (not argv: only the owner reads /proc/PID/environ), output captured
    and dropped, umask 077 (the config it writes holds the password in clear, its keystore the CA keys);
    the supervised `start` then runs with no password at all and reads the registrar from that config.
    """
    home = layout.ca_home(org)
    config = home / "fabric-ca-server-config.yaml"
    if config.exists():
        if config.stat().st_mode & 0o077:
            config.chmod(0o600)  # a home made before configs were private
        return
    private_dir(home)
    boot = _load_secrets(layout, org)["bootstrap-admin"]
    secret_env = {"FABRIC_CA_SERVER_BOOT": f"registrar:{boot}"}  # not "admin": that name is the org admin user
    r = subprocess.run([str(server_bin), "init", *flags], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env, **secret_env}, umask=PRIVATE_UMASK)
    if r.returncode != 0:
        config.unlink(missing_ok=True)  # half an init must not pass for a done one next time
        out = _redact(r.stdout + r.stderr, [boot])
        lines = [ln for ln in out.splitlines() if "rror" in ln] or [out.strip()]
        raise EnrolmentError(f"fabric-ca-server init (ca.{org}) failed: {lines[-1]}")


class CAClient:
    """Runs fabric-ca-client against one org's CA, as that CA's bootstrap admin (the registrar)."""

    def __init__(self, spec: Spec, layout: Layout, org: str, client_bin: Path):
        self.spec, self.layout, self.org, self.client_bin = spec, layout, org, client_bin
        self.url = ca_url(spec, org)
        self.tls_root = layout.ca_home(org) / "ca-cert.pem"  # the server's TLS cert is signed by this root
        self.registrar_home = layout.ca_client_home(org) / "registrar"

    def _run(self, *args: str, home: Path, secret_env: dict[str, str]) -> str:
        """Run fabric-ca-client; secret_env carries the credentials (never argv) and is scrubbed from
        whatever output or error this returns (`register` prints the secret back, for one)."""
        home.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.client_bin), *args, "--home", str(home),
               "--tls.certfiles", str(self.tls_root), "--caname", f"ca-{self.org}"]
        # PRIVATE_UMASK: the keystore and the client config it writes are the owner's alone from creation.
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **secret_env},
                           umask=PRIVATE_UMASK)
        out = _redact(r.stdout + r.stderr, secret_env.values())
        if r.returncode != 0:
            lines = [ln for ln in out.splitlines() if "Error" in ln or "error" in ln]
            raise EnrolmentError(f"fabric-ca-client {args[0]} ({self.org}) failed: {(lines or [out.strip()])[-1]}")
        return out

    def _url_env(self, name: str, secret: str) -> dict[str, str]:
        # The enrolment URL with its credentials (what `-u https://id:secret@host` would pass).
        return {"FABRIC_CA_CLIENT_URL": self.url.replace("https://", f"https://{name}:{secret}@")}

    def _enrol_registrar(self) -> None:
        if (self.registrar_home / "msp" / "signcerts" / "cert.pem").exists():
            return
        boot = _load_secrets(self.layout, self.org)["bootstrap-admin"]
        self._run("enroll", home=self.registrar_home, secret_env=self._url_env("registrar", boot))

    def register(self, name: str, id_type: str, attrs: dict[str, str]) -> str:
        """Register an identity once (idempotent through the secrets file); returns its secret."""
        data = _load_secrets(self.layout, self.org)
        if name in data:
            return data[name]
        self._enrol_registrar()
        secret = secrets.token_urlsafe(18)
        # ":ecert" puts the attribute into every enrolment certificate without the client asking for it.
        attr_arg = ",".join(f"{k}={v}:ecert" for k, v in attrs.items())
        args = ["register", "-u", self.url, "--id.name", name, "--id.type", id_type]
        if attr_arg:
            args += ["--id.attrs", attr_arg]
        try:
            # --id.secret through the environment; the registrar's own credentials are in its enrolled MSP.
            self._run(*args, home=self.registrar_home, secret_env={"FABRIC_CA_CLIENT_ID_SECRET": secret})
        except EnrolmentError as e:
            if "already registered" not in str(e):
                raise
            raise EnrolmentError(f"{name} is registered at ca-{self.org} but its secret was lost; run `twinledger clean`") from e
        data[name] = secret
        _save_secrets(self.layout, self.org, data)
        return secret

    def enrol(self, name: str, secret: str, msp_dir: Path, *, tls_hosts: list[str] | None = None,
              rsa_bits: int | None = None) -> None:
        """Enrol into msp_dir (an MSP folder); with tls_hosts, a TLS certificate for those SANs instead (a URI
        among them becomes a URI SAN); rsa_bits: an RSA key of that size instead of ECDSA P-256 (OPC-UA's RSA
        security policies)."""
        work = msp_dir.parent / f".enrol-{msp_dir.name}"
        shutil.rmtree(work, ignore_errors=True)
        args = ["enroll", "--mspdir", str(work)]
        if tls_hosts:
            args += ["--enrollment.profile", "tls", "--csr.hosts", ",".join(tls_hosts)]
        if rsa_bits:
            args += ["--csr.keyrequest.algo", "rsa", "--csr.keyrequest.size", str(rsa_bits)]
        self._run(*args, home=msp_dir.parent, secret_env=self._url_env(name, secret))
        # fabric-ca-client also drops a fabric-ca-client-config.yaml next to the MSP; keep only the MSP.
        (msp_dir.parent / "fabric-ca-client-config.yaml").unlink(missing_ok=True)
        shutil.rmtree(msp_dir, ignore_errors=True)
        work.rename(msp_dir)


TLS_HOSTS = ["127.0.0.1", "localhost"]


def tls_hosts(host: str) -> list[str]:
    """The SANs of a server certificate on ``host``: the loopback names and, off loopback, the host."""
    return TLS_HOSTS + ([host] if host not in TLS_HOSTS else [])


def _tls_to_server_files(tls_msp: Path, dest: Path) -> None:
    """Lay out an enrolled TLS MSP as server.crt / server.key / ca.crt, the names node configs use."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((tls_msp / "signcerts").iterdir()), dest / "server.crt")
    write_private(dest / "server.key", next((tls_msp / "keystore").iterdir()).read_bytes())  # 0600 from creation
    shutil.copy(next((tls_msp / "tlscacerts").iterdir()), dest / "ca.crt")


def enrol_org(spec: Spec, layout: Layout, org: Org, client_bin: Path) -> list[str]:
    """Register and enrol every identity of an org; skips what already exists. Returns what was done."""
    done: list[str] = []
    client = CAClient(spec, layout, org.name, client_bin)
    ca_cert = layout.ca_cert(org.name)

    # The org's verifying MSP, used in the channel configuration.
    org_msp = layout.org_msp(org.name)
    if not (org_msp / "config.yaml").exists():
        for sub in ("cacerts", "tlscacerts"):
            (org_msp / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(ca_cert, org_msp / sub / "ca.pem")
        write_nodeou_config(org_msp, "cacerts/ca.pem")
        done.append(f"{org.name} MSP")

    for node in spec.nodes_of(org.name):
        if node.type not in ("peer", "orderer"):
            continue
        msp = layout.node_msp(node.name)
        if (msp / "config.yaml").exists() and (layout.node_tls(node.name) / "server.crt").exists():
            continue
        secret = client.register(node.short, node.type, {})
        client.enrol(node.short, secret, msp)
        _normalise_msp(msp)
        tls_msp = layout.node_dir(node.name) / "tls-msp"
        client.enrol(node.short, secret, tls_msp, tls_hosts=tls_hosts(node.host) + [node.name])
        _tls_to_server_files(tls_msp, layout.node_tls(node.name))
        shutil.rmtree(tls_msp)
        done.append(node.name)

    for node in spec.nodes_of(org.name, "peer"):
        if enrol_chaincode_server_tls(client, layout, node):
            done.append(f"chaincode server of {node.name}")

    roles = ("admin",) if org.kind == "orderer" else USER_ROLES
    for role in roles:
        msp = layout.user_msp(org.name, role)
        if (msp / "config.yaml").exists():
            continue
        attrs = {"role": role}
        if org.kind != "orderer":
            attrs["org_kind"] = org.kind
        secret = client.register(role, "admin" if role == "admin" else "client", attrs)
        client.enrol(role, secret, msp)
        _normalise_msp(msp)
        tls_msp = layout.user_dir(org.name, role) / "tls-msp"
        client.enrol(role, secret, tls_msp, tls_hosts=TLS_HOSTS)
        tls = layout.user_tls(org.name, role)
        _tls_to_server_files(tls_msp, tls)
        # Client-side names: the same key pair serves as a TLS client certificate (mutual TLS, osnadmin).
        shutil.move(tls / "server.crt", tls / "client.crt")
        shutil.move(tls / "server.key", tls / "client.key")
        shutil.rmtree(tls_msp)
        done.append(f"{role}@{org.name}")
    return done


def chaincode_tls_dir(layout: Layout, peer: str) -> Path:
    """server.crt / server.key / ca.crt of the chaincode server that ``peer`` dials."""
    return layout.node_dir(peer) / "chaincode-tls"


def enrol_chaincode_server_tls(client: CAClient, layout: Layout, peer: Node) -> bool:
    """A TLS certificate of its own for the chaincode server of ``peer`` (False: it already has one).

    Its own identity (type ``chaincode``, so the certificate's OU is not ``peer``) rather than the peer's key
    pair: the chaincode process then holds no key that could act as the peer, and the peer's client
    certificate is something the server can tell apart from its own. TLS profile only -- it never signs.
    """
    dest = chaincode_tls_dir(layout, peer.name)
    if (dest / "server.crt").exists() and (dest / "server.key").exists():
        return False
    name = f"chaincode.{peer.short}"
    secret = client.register(name, "chaincode", {})
    tls_msp = layout.node_dir(peer.name) / "chaincode-tls-msp"
    client.enrol(name, secret, tls_msp, tls_hosts=tls_hosts(peer.host))
    _tls_to_server_files(tls_msp, dest)
    shutil.rmtree(tls_msp)
    return True


def _normalise_msp(msp: Path) -> None:
    """Name the CA cert cacerts/ca.pem (fabric-ca-client names it after host and port) and add NodeOUs."""
    cacerts = msp / "cacerts"
    files = sorted(cacerts.iterdir())
    if files and files[0].name != "ca.pem":
        files[0].rename(cacerts / "ca.pem")
    write_nodeou_config(msp, "cacerts/ca.pem")
    # tlscacerts in an enrolment MSP is the same root; an empty IssuerPublicKey/RevocationPublicKey
    # (idemix leftovers) confuses nothing, but keep the folder tidy.
    for leftover in ("IssuerPublicKey", "IssuerRevocationPublicKey", "user"):
        p = msp / leftover
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
