"""Real fabric-ca-server processes under the real supervisor, driven through the `twinledger` CLI.

Up from nothing -> every org's CA healthy -> every identity enrolled with its NodeOU and `role`
attribute -> kill -9 a CA, the supervisor restarts it -> down -> up resumes without re-enrolling -> clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from network.layout import Layout
from network.spec import load_spec
from peers.binaries import fabric_available
from tests.ports import free_port_base

pytestmark = pytest.mark.integration
ROLE_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")


def tl(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home)],
                       capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"twinledger {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def status(home: Path) -> dict[str, dict]:
    return {n["name"]: n for n in json.loads(tl("status", "--json", home=home).stdout)["nodes"]}


@pytest.fixture
def home(tmp_path):
    yield tmp_path / "net"
    tl("down", home=tmp_path / "net", check=False)


def _up(home: Path, port_base: int) -> subprocess.CompletedProcess:
    r = tl("up", "--port-base", str(port_base), home=home, check=False)
    if fabric_available() is None:
        assert r.returncode == 0, r.stderr
    else:
        # Without the Fabric node binaries, up must say so in one line and leave the CAs running.
        assert r.returncode == 1
        assert "peers and orderers cannot start" in r.stderr and "Traceback" not in r.stderr
    return r


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_identities_restart_and_resume(home):
    base = free_port_base(200)
    t0 = time.monotonic()
    first = _up(home, base)
    first_up_s = time.monotonic() - t0
    spec, layout = load_spec(home / "spec.yaml"), Layout(home)
    assert spec.port_base == base

    nodes = status(home)
    cas = [n for n in nodes.values() if n["type"] == "ca"]
    assert len(cas) == 5 and all(n["healthy"] for n in cas), nodes

    # Identities: NodeOU in the subject, role attribute the Fabric CA way, TLS SANs for loopback.
    for org in spec.member_orgs:
        for role in ("admin", "steward", "operator", "client"):
            cert = _cert(layout.user_msp(org.name, role) / "signcerts" / "cert.pem")
            ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
            assert ou == ("admin" if role == "admin" else "client")
            attrs = json.loads(cert.extensions.get_extension_for_oid(ROLE_OID).value.value)["attrs"]
            assert attrs["role"] == role and attrs["org_kind"] == org.kind
            key = next((layout.user_msp(org.name, role) / "keystore").iterdir())
            assert key.stat().st_mode & 0o077 == 0, f"{key} must be private to its owner"
        peer_tls = _cert(layout.node_tls(f"peer0.{org.name}") / "server.crt")
        sans = peer_tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert any(str(ip) == "127.0.0.1" for ip in sans.get_values_for_type(x509.IPAddress))
        # Signed by the org's own CA, whose root is in the org MSP used by the channel config.
        root = _cert(layout.org_msp(org.name) / "cacerts" / "ca.pem")
        assert peer_tls.issuer == root.subject
        assert (layout.org_msp(org.name) / "config.yaml").read_text().count("Enable: true") == 1
    for i in range(3):
        ou = _cert(layout.node_msp(f"orderer{i}.orderer") / "signcerts" / "cert.pem").subject.get_attributes_for_oid(
            NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        assert ou == "orderer"

    # kill -9 a CA: the supervisor restarts it and it serves again.
    victim = nodes["ca.plant1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        n = status(home)["ca.plant1"]
        if n["healthy"] and n["pid"] != victim:
            break
        time.sleep(0.3)
    n = status(home)["ca.plant1"]
    assert n["healthy"] and n["pid"] != victim and n["restarts"] == 1

    # down stops everything; up resumes the same identities without enrolling again.
    steward_before = (layout.user_msp("hospital1", "steward") / "signcerts" / "cert.pem").read_bytes()
    pids = [n["pid"] for n in status(home).values() if n["pid"]]
    assert "stopped every process" in tl("down", home=home).stdout
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(n["healthy"] for n in status(home).values())
    again = _up(home, base)
    assert again.stdout.count("already enrolled") == 5, again.stdout
    assert (layout.user_msp("hospital1", "steward") / "signcerts" / "cert.pem").read_bytes() == steward_before
    assert first_up_s < 60, f"CA stage of up took {first_up_s:.1f} s"

    # A different port base for an existing home is refused with one clear line.
    r = tl("up", "--port-base", str(base + 10), home=home, check=False)
    assert r.returncode == 1 and "already runs on port base" in r.stderr and "Traceback" not in r.stderr

    assert "removed" in tl("clean", home=home).stdout
    assert not home.exists()


def test_cli_errors_are_one_line(tmp_path):
    r = tl("status", home=tmp_path / "none", check=False)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "twinledger up" in r.stderr
    bad = tmp_path / "spec.yaml"
    bad.write_text("orgs: [{name: x, kind: lab}]")
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", "--spec", str(bad), "--home", str(tmp_path / "h")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "kind must be hospital, plant or orderer" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "notours").mkdir()
    r = tl("clean", home=tmp_path / "notours", check=False)
    assert r.returncode == 1 and "not a TwinLedger home" in r.stderr and (tmp_path / "notours").exists()
