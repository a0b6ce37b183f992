"""Bridge ↔ simulator with Basic256Sha256 SignAndEncrypt over a real socket; untrusted clients are refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.ports import free_port_base
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import load_mapping
from twins.procs import Proc, simulator_argv
from twins.security import ClientSecurity, generate_certificate

pytestmark = pytest.mark.integration


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "pki"
    generate_certificate(d / "server.pem", d / "server.key", "urn:twinledger:simulators:server", "twins-sim")
    generate_certificate(d / "bridge.pem", d / "bridge.key", "urn:twinledger:bridge", "twins-bridge")
    generate_certificate(d / "rogue.pem", d / "rogue.key", "urn:twinledger:bridge", "rogue")
    return d


@pytest.fixture
def secure_sim(tmp_path, certs):
    port = free_port_base(1)
    argv = simulator_argv(port=port, data_dir=tmp_path / "sim", machines=["plant1:1"], machine_rate=20,
                          mapping_out=tmp_path / "sim" / "mapping.yaml", cert=certs / "server.pem", key=certs / "server.key",
                          trust=[certs / "bridge.pem"])
    p = Proc(argv, log=tmp_path / "sim.log")
    try:
        p.wait_ready(30)
        yield tmp_path / "sim" / "mapping.yaml"
    finally:
        p.stop()


async def _run_bridge(mapping_path, security, seconds):
    got = []
    bridge = OpcUaBridge(load_mapping(mapping_path), got.append, security=security, backoff_max=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 10)
    return bridge, got


def test_sign_and_encrypt_with_pinned_server_and_trusted_client(secure_sim, certs):
    sec = ClientSecurity(certs / "bridge.pem", certs / "bridge.key", certs / "server.pem")
    bridge, got = asyncio.run(_run_bridge(secure_sim, sec, 2.5))
    assert bridge.connects == 1 and len(got) > 100
    torque = [r.seq for r in got if r.prop == "Torque"]
    assert torque == list(range(torque[0], torque[0] + len(torque)))


def test_untrusted_client_and_plaintext_are_refused(secure_sim, certs):
    rogue = ClientSecurity(certs / "rogue.pem", certs / "rogue.key", certs / "server.pem")
    bridge, got = asyncio.run(_run_bridge(secure_sim, rogue, 1.5))
    assert bridge.connects == 0 and got == []
    plain, got = asyncio.run(_run_bridge(secure_sim, None, 1.0))
    assert plain.connects == 0 and got == [] and plain.last_error
