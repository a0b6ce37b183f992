"""A channel configuration update, Fabric's way: fetch the latest config block, decode it with configtxlator,
change it, compute the update, collect the admins' signatures, submit it to the orderer.

Every step is the documented Fabric v3 tool run as a local command -- ``peer channel fetch config``,
``configtxlator proto_decode / proto_encode / compute_update`` (no REST server), ``configtxgen -printOrg``
for an org's group, ``peer channel signconfigtx`` and ``peer channel update`` -- so what a channel accepts
is exactly what Fabric's own tools produce. The pure parts (adding or removing an org's group, what the
change means for the channel's implicit-meta policies, whose signatures an envelope carries) work on the
decoded JSON and are unit-tested without a network.

Why checks come first: the orderer rejects an update whose signatures do not satisfy /Channel/Application's
mod_policy (``MAJORITY Admins``) or come from an expired certificate, but only after everything before the
submit has run. ``check_admin`` and ``majority`` let the caller refuse before it changes anything.

This module knows nothing of the orchestrator: an ``Admin`` carries the peer CLI environment and orderer
flags of one org's admin (orchestrator.fabric_stage builds them), and ``bin_dir`` the Fabric binaries.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from network.files import write_atomic

#: ConfigUpdate envelopes carry HeaderType CONFIG_UPDATE (common.HeaderType = 2).
CONFIG_UPDATE = 2
APPLICATION = "Application"
#: Fabric's ImplicitMeta policy type in decoded JSON (common.Policy.PolicyType IMPLICIT_META = 3).
IMPLICIT_META = 3
#: Seconds to keep asking an orderer that answers SERVICE_UNAVAILABLE (no Raft leader yet, catching up).
FETCH_RETRY_S = 30.0


class ChannelConfigError(RuntimeError):
    """A step of a config update failed; the message names the step and the tool's last error line."""


class StaleConfig(ChannelConfigError):
    """The orderer refused the update because the config changed since it was fetched (its read set is old)."""


@dataclass(frozen=True)
class Admin:
    """One org's admin as the peer CLI acts: its environment (MSP, peer, TLS) and its orderer flags."""

    org: str
    msp_id: str
    env: dict[str, str]
    orderer_args: list[str]


def _tool(step: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else "(no output)"
        # The orderer's answers when the config moved on since the fetch: the update's read set names a
        # version the channel no longer has, or its write set one the channel already has.
        if any(s in last for s in ("error validating ReadSet", "but it is currently at version", "but key is at version")):
            raise StaleConfig(f"{step}: the channel configuration changed since it was fetched: {last}")
        raise ChannelConfigError(f"{step}: {Path(argv[0]).name} exited {r.returncode}: {last}")
    return r


# -- fetching and decoding ----------------------------------------------------------------------------
def decode(bin_dir: Path, pb: Path, msg_type: str) -> dict[str, Any]:
    r = _tool(f"decode {pb.name}", [str(bin_dir / "configtxlator"), "proto_decode", "--input", str(pb), "--type", msg_type])
    return json.loads(r.stdout)


def encode(bin_dir: Path, data: dict[str, Any], msg_type: str, out: Path) -> Path:
    src = write_atomic(out.with_suffix(".json"), json.dumps(data))
    _tool(f"encode {out.name}", [str(bin_dir / "configtxlator"), "proto_encode", "--input", str(src),
                                 "--type", msg_type, "--output", str(out)])
    return out


def fetch_config(bin_dir: Path, channel: str, admin: Admin, workdir: Path) -> dict[str, Any]:
    """The channel's current configuration (decoded), from its latest config block on the orderer."""
    workdir.mkdir(parents=True, exist_ok=True)
    block = workdir / "config_block.pb"
    # An orderer answers SERVICE_UNAVAILABLE while its channel has no Raft leader or is catching up (right after a
    # consenter was restarted, killed or reconfigured): that passes within seconds, so ask again until it does.
    deadline = time.monotonic() + FETCH_RETRY_S
    while True:
        try:
            _tool(f"fetch the config block of {channel} as {admin.org}'s admin",
                  [str(bin_dir / "peer"), "channel", "fetch", "config", str(block), "-c", channel, *admin.orderer_args],
                  admin.env)
            break
        except ChannelConfigError as exc:
            if "SERVICE_UNAVAILABLE" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    return decode(bin_dir, block, "common.Block")["data"]["data"][0]["payload"]["data"]["config"]


def org_group(bin_dir: Path, definition: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """An org's channel-config group (MSP, policies, anchor peers) as ``configtxgen -printOrg`` makes it from
    its configtx.yaml definition (network.configtx.org_definition)."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(workdir / "configtx.yaml", yaml.safe_dump({"Organizations": [definition]}, sort_keys=False))
    r = _tool(f"configtxgen -printOrg {definition['Name']}",
              [str(bin_dir / "configtxgen"), "-configPath", str(workdir), "-printOrg", definition["Name"]],
              {"FABRIC_CFG_PATH": str(workdir)})
    return json.loads(r.stdout)


# -- the change (pure) --------------------------------------------------------------------------------
def application_orgs(config: dict[str, Any]) -> list[str]:
    """MSP IDs of the channel's application orgs, sorted."""
    return sorted(config["channel_group"]["groups"][APPLICATION]["groups"])


def with_org(config: dict[str, Any], msp_id: str, group: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with ``group`` as the application org ``msp_id`` (the org's group is named by its
    MSP ID, as network.configtx names the founders')."""
    if msp_id in application_orgs(config):
        raise ChannelConfigError(f"{msp_id} is already an application org of the channel")
    out = copy.deepcopy(config)
    out["channel_group"]["groups"][APPLICATION]["groups"][msp_id] = copy.deepcopy(group)
    return out


def without_org(config: dict[str, Any], msp_id: str) -> dict[str, Any]:
    """A copy of ``config`` without the application org ``msp_id``."""
    if msp_id not in application_orgs(config):
        raise ChannelConfigError(f"{msp_id} is not an application org of the channel")
    out = copy.deepcopy(config)
    del out["channel_group"]["groups"][APPLICATION]["groups"][msp_id]
    return out


def required(rule: str, n: int) -> int:
    """How many of ``n`` sub-policies an ImplicitMeta rule needs (ANY, ALL, MAJORITY: more than half)."""
    return {"ANY": min(1, n), "ALL": n, "MAJORITY": n // 2 + 1}[rule]


def majority(n: int) -> int:
    return required("MAJORITY", n)


def implicit_policies(config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """/Channel/Application's ImplicitMeta policies: name -> (rule, sub-policy)."""
    out = {}
    for name, p in config["channel_group"]["groups"][APPLICATION]["policies"].items():
        if p["policy"]["type"] == IMPLICIT_META:
            out[name] = (p["policy"]["value"]["rule"], p["policy"]["value"]["sub_policy"])
    return out


def describe_delta(before: dict[str, Any], after: dict[str, Any], definition: dict[str, Any] | None = None) -> list[str]:
    """What the change from ``before`` to ``after`` does, one line each: orgs added or removed (with the added
    org's anchor peers and policies from its configtx definition, when given) and what every implicit-meta
    policy of /Channel/Application then requires (MAJORITY of 5 is 3)."""
    old, new = application_orgs(before), application_orgs(after)
    lines = []
    for msp in sorted(set(new) - set(old)):
        lines.append(f"+ /Channel/Application/{msp}")
        group = after["channel_group"]["groups"][APPLICATION]["groups"][msp]
        anchors = group.get("values", {}).get("AnchorPeers", {}).get("value", {}).get("anchor_peers")
        if anchors is None and definition is not None:
            anchors = [{"host": a["Host"], "port": a["Port"]} for a in definition.get("AnchorPeers", [])]
        if anchors:
            lines.append("    anchor peers: " + ", ".join(f"{a['host']}:{a['port']}" for a in anchors))
        if definition is not None:
            lines.append(f"    MSP {definition['ID']}: root and TLS root certificate of its own Fabric CA, NodeOUs")
            for name, p in definition.get("Policies", {}).items():
                lines.append(f"    policy {name}: {p['Rule']}")
    for msp in sorted(set(old) - set(new)):
        lines.append(f"- /Channel/Application/{msp}")
    for name, (rule, sub) in sorted(implicit_policies(after).items()):
        was, now = required(rule, len(old)), required(rule, len(new))
        lines.append(f"  /Channel/Application/{name} = {rule} {sub}: {now} of {len(new)} orgs"
                     + (f" (was {was} of {len(old)})" if (was, len(old)) != (now, len(new)) else ""))
    return lines


# -- the orderer's Raft consenter set (pure) ------------------------------------------------------------
ORDERER = "Orderer"


@dataclass(frozen=True)
class Consenter:
    """One etcdraft consenter as the channel config holds it (certificates as PEM text)."""

    host: str
    port: int
    client_tls_cert: str
    server_tls_cert: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def as_config(self) -> dict[str, Any]:
        # configtxlator writes the etcdraft metadata's bytes fields as base64 of the PEM text.
        return {"host": self.host, "port": self.port,
                "client_tls_cert": base64.b64encode(self.client_tls_cert.encode()).decode(),
                "server_tls_cert": base64.b64encode(self.server_tls_cert.encode()).decode()}


def _consensus(config: dict[str, Any]) -> dict[str, Any]:
    value = config["channel_group"]["groups"][ORDERER]["values"]["ConsensusType"]["value"]
    if value.get("type") != "etcdraft":
        raise ChannelConfigError(f"the channel orders with {value.get('type')!r}, not etcdraft: no Raft consenter set to change")
    return value


def consenters(config: dict[str, Any]) -> list[Consenter]:
    """The channel's Raft consenters (/Channel/Orderer ConsensusType metadata), in config order."""
    return [Consenter(c["host"], int(c["port"]), base64.b64decode(c["client_tls_cert"]).decode(),
                      base64.b64decode(c["server_tls_cert"]).decode())
            for c in _consensus(config)["metadata"]["consenters"]]


def orderer_endpoints(config: dict[str, Any], msp_id: str) -> list[str]:
    """Where the orderer org ``msp_id`` tells peers and clients to send transactions (V3_0: per org)."""
    org = config["channel_group"]["groups"][ORDERER]["groups"][msp_id]
    return list(org.get("values", {}).get("Endpoints", {}).get("value", {}).get("addresses", []))


def _set_endpoints(config: dict[str, Any], msp_id: str, addresses: list[str]) -> None:
    org = config["channel_group"]["groups"][ORDERER]["groups"][msp_id]
    endpoints = org.setdefault("values", {}).setdefault("Endpoints", {"mod_policy": "Admins", "value": {}})
    endpoints["value"]["addresses"] = addresses


def with_consenter(config: dict[str, Any], consenter: Consenter) -> dict[str, Any]:
    """A copy of ``config`` with ``consenter`` added to the Raft consenter set. One consenter per update: Raft
    changes its membership one node at a time. Its endpoint is a separate update (``with_endpoint``): peers send
    transactions to every endpoint at once, and a node switching from follower to consenter answers "channel
    does not exist" for a moment."""
    if any(c.address == consenter.address for c in consenters(config)):
        raise ChannelConfigError(f"{consenter.address} is already a consenter of the channel")
    out = copy.deepcopy(config)
    _consensus(out)["metadata"]["consenters"].append(consenter.as_config())
    return out


def without_consenter(config: dict[str, Any], address: str) -> dict[str, Any]:
    """A copy of ``config`` without the consenter at ``address`` (host:port)."""
    have = consenters(config)
    if not any(c.address == address for c in have):
        raise ChannelConfigError(f"{address} is not a consenter of the channel")
    if len(have) == 1:
        raise ChannelConfigError(f"{address} is the channel's only consenter; Raft cannot remove its last node")
    out = copy.deepcopy(config)
    meta = _consensus(out)["metadata"]
    meta["consenters"] = [c for c, parsed in zip(meta["consenters"], have) if parsed.address != address]
    return out


def with_endpoint(config: dict[str, Any], msp_id: str, address: str) -> dict[str, Any]:
    """A copy of ``config`` with ``address`` among the orderer org ``msp_id``'s endpoints (unchanged if there)."""
    out = copy.deepcopy(config)
    if address not in orderer_endpoints(out, msp_id):
        _set_endpoints(out, msp_id, orderer_endpoints(out, msp_id) + [address])
    return out


def without_endpoint(config: dict[str, Any], msp_id: str, address: str) -> dict[str, Any]:
    """A copy of ``config`` without ``address`` among the orderer org ``msp_id``'s endpoints."""
    out = copy.deepcopy(config)
    _set_endpoints(out, msp_id, [a for a in orderer_endpoints(out, msp_id) if a != address])
    return out


def fault_tolerance(n: int) -> int:
    """How many of ``n`` Raft consenters may fail while the rest still order (n minus a majority of n)."""
    return n - majority(n) if n else 0


def describe_consenter_delta(before: dict[str, Any], after: dict[str, Any], msp_id: str) -> list[str]:
    """What a consenter-set change does, one line each: consenters and endpoints added or removed, and the
    Raft quorum before and after (4 consenters need 3 and tolerate 1 fault)."""
    old = {c.address: c for c in consenters(before)}
    new = {c.address: c for c in consenters(after)}
    lines = []
    for addr in [a for a in new if a not in old]:
        cert = new[addr].server_tls_cert
        tls = (f"TLS certificate {x509.load_pem_x509_certificate(cert.encode()).subject.rfc4514_string()}" if cert
               else "TLS certificate from the orderer org's CA, enrolled when it is added")
        lines.append(f"+ /Channel/Orderer ConsensusType etcdraft consenter {addr} ({tls})")
    for addr in [a for a in old if a not in new]:
        lines.append(f"- /Channel/Orderer ConsensusType etcdraft consenter {addr}")
    was, now = orderer_endpoints(before, msp_id), orderer_endpoints(after, msp_id)
    lines += [f"+ /Channel/Orderer/{msp_id} Endpoints {a}" for a in now if a not in was]
    lines += [f"- /Channel/Orderer/{msp_id} Endpoints {a}" for a in was if a not in now]
    n, m = len(old), len(new)
    lines.append(f"  Raft quorum: {majority(m)} of {m} consenters, tolerating {fault_tolerance(m)} failed "
                 f"(was {majority(n)} of {n}, tolerating {fault_tolerance(n)})")
    return lines


# -- the update: compute, sign, submit -----------------------------------------------------------------
def compute_update(bin_dir: Path, channel: str, before: dict[str, Any], after: dict[str, Any], workdir: Path) -> Path | None:
    """The unsigned config-update envelope taking ``before`` to ``after`` (``workdir/update_envelope.pb``);
    None when they do not differ."""
    workdir.mkdir(parents=True, exist_ok=True)
    original = encode(bin_dir, before, "common.Config", workdir / "original.pb")
    updated = encode(bin_dir, after, "common.Config", workdir / "updated.pb")
    update = workdir / "update.pb"
    r = subprocess.run([str(bin_dir / "configtxlator"), "compute_update", "--channel_id", channel,
                        "--original", str(original), "--updated", str(updated), "--output", str(update)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        if "no differences detected" in r.stderr + r.stdout:
            return None
        raise ChannelConfigError(f"configtxlator compute_update: {(r.stderr or r.stdout).strip().splitlines()[-1]}")
    envelope = {"payload": {"header": {"channel_header": {"channel_id": channel, "type": CONFIG_UPDATE}},
                            "data": {"config_update": decode(bin_dir, update, "common.ConfigUpdate")}}}
    return encode(bin_dir, envelope, "common.Envelope", workdir / "update_envelope.pb")


def signers(bin_dir: Path, envelope: Path) -> list[str]:
    """The MSP IDs whose admins have signed ``envelope``, in signing order (read from the envelope itself)."""
    data = decode(bin_dir, envelope, "common.Envelope")["payload"]["data"]
    return [s["signature_header"]["creator"]["mspid"] for s in data.get("signatures", [])]


def sign(bin_dir: Path, envelope: Path, admin: Admin) -> None:
    """Add ``admin``'s signature to ``envelope`` (in place), made with that org's own admin identity."""
    _tool(f"sign the config update as {admin.org}'s admin",
          [str(bin_dir / "peer"), "channel", "signconfigtx", "-f", str(envelope)], admin.env)


def submit(bin_dir: Path, channel: str, envelope: Path, admin: Admin) -> None:
    """Send ``envelope`` to the orderer; ``peer channel update`` adds ``admin``'s own signature first."""
    _tool(f"submit the config update of {channel} as {admin.org}'s admin",
          [str(bin_dir / "peer"), "channel", "update", "-f", str(envelope), "-c", channel, *admin.orderer_args], admin.env)


def sign_and_submit(bin_dir: Path, channel: str, envelope: Path, admins: list[Admin]) -> list[str]:
    """Sign ``envelope`` with every admin in turn, each its org's own identity, and submit it as the last one
    (``peer channel update`` adds that signature); returns the MSP IDs that signed, in signing order, as the
    envelope itself carries them. StaleConfig when the channel moved on since the config was fetched."""
    for admin in admins[:-1]:
        sign(bin_dir, envelope, admin)
    signed = signers(bin_dir, envelope) + [admins[-1].msp_id]
    submit(bin_dir, channel, envelope, admins[-1])
    return signed


# -- checks before anything changes ----------------------------------------------------------------------
def check_admin(msp_dir: Path, ca_cert: Path, now: dt.datetime | None = None) -> str | None:
    """Why the admin identity in ``msp_dir`` cannot sign a config update for its org (None: it can).

    Checked as the orderer will: the certificate is in its validity period, issued by the org's CA (the
    root in the channel's MSP), and carries the ``admin`` NodeOU (the org's Admins policy is its admin role).
    """
    certs = sorted((msp_dir / "signcerts").glob("*.pem")) if (msp_dir / "signcerts").is_dir() else []
    if not certs:
        return f"no admin certificate in {msp_dir / 'signcerts'}"
    try:
        cert = x509.load_pem_x509_certificate(certs[0].read_bytes())
        root = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        return f"unreadable certificate ({exc})"
    now = now or dt.datetime.now(dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        return f"its admin certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if now < cert.not_valid_before_utc:
        return f"its admin certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if cert.issuer != root.subject or not _signed_by(cert, root):
        return f"its admin certificate is not issued by the org's CA ({root.subject.rfc4514_string()})"
    ous = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if "admin" not in ous:
        return f"its certificate is not an admin's (OU {', '.join(map(str, ous)) or 'none'})"
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True
