"""`twinledger twins run` on the OPC-UA org's placement, end to end as a user runs it, without a Fabric network.

The home's spec places plant1 on 127.0.0.2 (a loopback alias: no setup) or, as root, on the address of a network
namespace of its own (tests.netns). Standing in for the network: a real HTTP /healthz on the peer's operations
address (what `twins run` asks before it starts anything) and a self-made operator identity; nothing answers the
peer's gRPC port, so the bridge keeps retrying to read its chain head, which is how these tests see that it dials
the peer's address from the spec. The simulators and the bridge are the real processes, OPC-UA without security
(the certificates come from a Fabric CA: tests/integration cover them)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network.layout import Layout
from network.spec import dump_spec, load_spec, parse_spec
from network.spec_model import Placement
from tests.ports import free_port_base
from tests.unit.orchestrator.test_cli_twins import _Healthz  # the same stand-in /healthz of a peer

ROOT = Path(__file__).resolve().parents[3]


def _operator_identity(layout: Layout, org: str) -> None:
    """A self-signed EC operator identity where `twins run` looks for it (the bridge loads it; no peer checks it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"operator@{org}")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    msp, tls = layout.user_msp(org, "operator"), layout.user_tls(org, "operator")
    for d in (msp / "signcerts", msp / "keystore", tls, layout.ca_cert(org).parent):
        d.mkdir(parents=True, exist_ok=True)
    for path, data in ((msp / "signcerts" / "cert.pem", pem), (msp / "keystore" / "key.pem", key_pem),
                       (layout.ca_cert(org), pem), (tls / "client.crt", pem), (tls / "client.key", key_pem)):
        path.write_bytes(data)


def _home(tmp_path: Path, place: Placement):
    raw = load_spec(None, port_base=free_port_base(200)).to_dict()
    for org in raw["orgs"]:
        if org["name"] == "plant1":
            org.update(host=place.host, **({"netns": place.netns} if place.netns else {}))
    spec = parse_spec(raw)
    (tmp_path / "spec.yaml").write_text(dump_spec(spec))
    _operator_identity(Layout(tmp_path), "plant1")
    return spec.nodes_of("plant1", "peer")[0]


def _twins_run(home: Path, port: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "twins", "run", "--home", str(home), "--machines",
                           "plant1:1", "--insecure-opcua", "--duration", "4", "--port", str(port), "--json"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)


def _check_run(home: Path, place: Placement, peer, port: int, r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stdout + r.stderr
    events = {e.get("event"): e for e in map(json.loads, r.stdout.splitlines())}
    assert f"OPC-UA on opc.tcp://{place.host}:{port}" in events["starting"]["message"]
    assert (f" in network namespace {place.netns} (" in events["starting"]["message"]) == bool(place.netns)
    assert place.netns or "network namespace" not in events["starting"]["message"]
    assert events["running"]["metrics"] == {"simulators": f"http://{place.host}:{port + 1}/metrics",
                                            "bridge": f"http://{place.host}:{port + 2}/metrics"}
    assert events["stopped"]["values"] > 0  # the bridge read the simulators on the org's host
    assert events["stopped"]["exit_codes"] == {"simulators": 0, "bridge": 0}
    run = json.loads((home / "twins" / "run.json").read_text())
    assert (run["host"], run["netns"]) == (place.host, place.netns)
    mapping = (home / "twins" / "sim" / "mapping.yaml").read_text()
    assert f"server: opc.tcp://{place.host}:{port}/twinledger/sim" in mapping
    # the bridge anchors through the org's peer at its address in the spec (nothing answers there: it retries)
    assert f"{place.host}:{peer.ports.listen}" in (home / "logs" / "twins-bridge.log").read_text()


def _wait_answers(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_twins_run_starts_simulators_and_bridge_on_the_opcua_orgs_host(tmp_path):
    place, port = Placement("127.0.0.2"), free_port_base(3)
    peer = _home(tmp_path, place)
    server = http.server.ThreadingHTTPServer((place.host, peer.ports.operations), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = _twins_run(tmp_path, port)
    finally:
        server.shutdown()
        server.server_close()
    _check_run(tmp_path, place, peer, port, r)


@pytest.fixture
def plant_ns():
    from tests.netns import one_org_namespace_or_skip

    with one_org_namespace_or_skip("plant1") as place:
        yield place


def test_twins_run_starts_them_inside_the_opcua_orgs_namespace(tmp_path, plant_ns):
    from tests.netns import pids_in

    place, port = plant_ns, free_port_base(3)
    peer = _home(tmp_path, place)
    # the peer's /healthz inside the namespace, on its host: `twins run` asks it across the namespace's bridge
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "healthz").write_text("OK")
    healthz = subprocess.Popen(["ip", "netns", "exec", place.netns, sys.executable, "-m", "http.server", "--bind",
                                place.host, "--directory", str(tmp_path / "www"), str(peer.ports.operations)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_answers(f"http://{place.host}:{peer.ports.operations}/healthz")
        r = _twins_run(tmp_path, port)
        _check_run(tmp_path, place, peer, port, r)
        assert healthz.pid in pids_in(place.netns)
        # again, with the OPC-UA port taken inside the namespace: refused before anything starts, naming the host
        squat = subprocess.Popen(["ip", "netns", "exec", place.netns, sys.executable, "-c",
                                  f"import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                  f"s.bind(('{place.host}', {port})); "
                                  "s.listen(); print('bound', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        try:
            assert squat.stdout.readline().strip() == "bound"
            again = _twins_run(tmp_path, port)
        finally:
            squat.kill()
            squat.wait(10)
        assert again.returncode != 0
        assert f"port {port} on {place.host} is in use; pick a free one with --port" in again.stderr
    finally:
        healthz.terminate()
        healthz.wait(10)
