"""Identities from each org's real Fabric CA, as the session network (``fabric_net``) enrolled them, and
what the chaincode on the real peers reads from them.

Every user has its NodeOU and the `role` (and `org_kind`) attribute the Fabric CA way; keys are private
to their owner; TLS certificates name loopback; the chaincode's WhoAmI, executed by real peers, sees the
MSP ID and the role of the signed proposal's creator and nothing else decides access (a steward may not
register an org). Also: the CLI's one-line errors that need no network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from network.gateway_errors import EndorseError
from network.spec_model import USER_ROLES
from tests.fabric_net import REPO, FabricNet, twinledger

pytestmark = pytest.mark.integration
ROLE_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ou(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)


def test_every_identity_has_its_node_ou_and_role(fabric_net: FabricNet) -> None:
    net = fabric_net
    layout, spec = net.layout, net.spec
    assert set(USER_ROLES) == {"admin", "steward", "operator", "client"}
    for org in spec.member_orgs:
        for role in USER_ROLES:
            cert = _cert(layout.user_msp(org.name, role) / "signcerts" / "cert.pem")
            assert _ou(cert) == ("admin" if role == "admin" else "client")
            attrs = json.loads(cert.extensions.get_extension_for_oid(ROLE_OID).value.value)["attrs"]
            assert attrs["role"] == role and attrs["org_kind"] == org.kind
            key = next((layout.user_msp(org.name, role) / "keystore").iterdir())
            assert key.stat().st_mode & 0o077 == 0, f"{key} must be private to its owner"
        peer_tls = _cert(layout.node_tls(f"peer0.{org.name}") / "server.crt")
        sans = peer_tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert any(str(ip) == "127.0.0.1" for ip in sans.get_values_for_type(x509.IPAddress))
        # Signed by the org's own CA, whose root is in the org MSP the channel configuration uses.
        root = _cert(layout.org_msp(org.name) / "cacerts" / "ca.pem")
        assert peer_tls.issuer == root.subject
        assert _ou(_cert(layout.node_msp(f"peer0.{org.name}") / "signcerts" / "cert.pem")) == "peer"
        assert (layout.org_msp(org.name) / "config.yaml").read_text().count("Enable: true") == 1
    for node in spec.nodes_of(spec.orderer_org.name, "orderer"):
        assert _ou(_cert(layout.node_msp(node.name) / "signcerts" / "cert.pem")) == "orderer"


def test_the_chaincode_on_real_peers_sees_msp_id_and_role(fabric_net: FabricNet) -> None:
    net = fabric_net
    for org in ("hospital2", "plant1"):
        for role in USER_ROLES:
            with net.connect_sync(org, role) as gateway:
                me = json.loads(gateway.network(net.spec.channel).contract(net.chaincode).evaluate("WhoAmI"))
            assert (me["msp_id"], me["role"], me["org_kind"]) == (net.spec.org(org).msp_id, role, net.spec.org(org).kind)
    # Identity decides: a steward may not register its org, whatever it passes as arguments.
    with net.connect_sync("plant1", "steward") as gateway:
        registry = gateway.network(net.spec.channel).contract(net.chaincode)
        with pytest.raises(EndorseError, match="RegisterOrg needs role 'admin' in the caller's certificate, found 'steward'"):
            registry.submit("RegisterOrg", "plant1", "plant")
        # `up` registered every member org, each by its own org's admin (the CA that issued it).
        registered = {o["name"]: o for o in json.loads(registry.evaluate("ListOrgs"))}
    assert set(registered) == {o.name for o in net.spec.member_orgs}
    for org in net.spec.member_orgs:
        record = registered[org.name]
        assert (record["msp_id"], record["kind"]) == (org.msp_id, org.kind)
        assert record["registered_by"].startswith("x509::CN=admin,OU=admin,")
        assert f"::CN=ca.{org.name}," in record["registered_by"]


def test_up_on_an_existing_home_keeps_its_port_base(fabric_net: FabricNet) -> None:
    line = fabric_net.fails("up", "--port-base", str(fabric_net.port_base + 10))
    assert f"already runs on port base {fabric_net.port_base}" in line


def test_cli_errors_are_one_line(tmp_path: Path, fabric_net: FabricNet) -> None:
    r = twinledger("status", home=tmp_path / "none")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "twinledger up" in r.stderr
    bad = tmp_path / "spec.yaml"
    bad.write_text("orgs: [{name: x, kind: lab}]")
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", "--spec", str(bad), "--home", str(tmp_path / "h")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 1 and "kind must be hospital, plant or orderer" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "notours").mkdir()
    r = twinledger("clean", home=tmp_path / "notours")
    assert r.returncode == 1 and "not a TwinLedger home" in r.stderr and (tmp_path / "notours").exists()
    # `clean` removes a home (here a stopped copy of the session's spec, so the session network stays).
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(fabric_net.layout.spec_file, copy / "spec.yaml")
    r = twinledger("clean", home=copy)
    assert r.returncode == 0 and "removed" in r.stdout and not copy.exists()
