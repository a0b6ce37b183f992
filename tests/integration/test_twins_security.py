"""OPC-UA security as `twinledger twins run` sets it up, over real sockets: SignAndEncrypt with certificates from the
orgs' Fabric CAs; an anonymous client, a self-signed one and one certified by a CA outside the trust list are
refused, and so is a server the client does not trust; readings still flow end to end to the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fabric_net import REPO, FabricNet
from tests.ports import free_port_base
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import load_mapping
from twins.security import (INSECURE_WARNING, POLICY_NAME, ClientSecurity, generate_certificate,
                             issue_app_certificate, trust_folder)

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "orchestrator.cli"]


async def _attempt(mapping_path: Path, security: ClientSecurity | None, seconds: float, *, readings: int = 0,
                   limit: float = 30.0) -> OpcUaBridge:
    """Run a bridge for at least ``seconds`` and until it has met a refusal or (``readings``) got that
    many values, ``limit`` at most: RSA handshakes on a loaded 2-core machine can take seconds."""
    got: list = []
    bridge = OpcUaBridge(load_mapping(mapping_path), got.append, security=security, backoff_initial=0.1, backoff_max=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < limit:
        await asyncio.sleep(0.1)
        done = len(got) > readings if readings else bool(bridge.last_error)
        if done and loop.time() - start >= seconds:
            break
    stop.set()
    await asyncio.wait_for(task, 10)
    bridge.got = got  # type: ignore[attr-defined]
    return bridge


def _json_lines(p: subprocess.Popen, until: str, timeout: float) -> list[dict]:
    """The run's --json lines up to the first with event ``until``."""
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=1.0):
            continue
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"twins run ended early (exit {p.wait()}): {p.stderr.read() if p.stderr else ''}")
        out.append(json.loads(line))
        if out[-1].get("event") == until:
            return out
    raise AssertionError(f"no {until!r} line within {timeout} s: {out}")


def test_twins_run_is_sign_and_encrypt_and_refuses_outsiders(fabric_net: FabricNet, tmp_path: Path) -> None:
    home = fabric_net.client_home(tmp_path / "home")
    port = free_port_base(3)
    outsiders = tmp_path / "outsiders"
    generate_certificate(outsiders / "self.pem", outsiders / "self.key", "urn:twinledger:plant1:bridge", "self-signed")
    # a genuine certificate of the consortium, but from hospital1's CA: hospital1 has no assets in this run
    other = issue_app_certificate(fabric_net.home, "hospital1", "bridge", outsiders / "hospital1")
    hospital1_only = trust_folder(fabric_net.home, ["hospital1"], outsiders / "hospital1-trust")
    p = subprocess.Popen([*CLI, "twins", "run", "--machines", "plant1:1", "--machine-rate", "10", "--port", str(port),
                          "--duration", "40", "--interval", "0.5", "--json", "--home", str(home)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = _json_lines(p, "running", 120)
        assert f"OPC-UA {POLICY_NAME} SignAndEncrypt, certificates from ca-plant1" in lines[0]["opcua"]
        twins = home / "twins"
        pki = twins / "pki"
        for key in pki.glob("*/*/key.pem"):
            assert key.stat().st_mode & 0o777 == 0o600, key
        mapping = twins / "sim" / "mapping.yaml"
        bridge_cert, bridge_key = pki / "plant1" / "bridge" / "cert.pem", pki / "plant1" / "bridge" / "key.pem"

        async def attempts() -> list[OpcUaBridge]:
            return await asyncio.gather(
                _attempt(mapping, None, 2.0),  # anonymous, NoSecurity
                _attempt(mapping, ClientSecurity(outsiders / "self.pem", outsiders / "self.key", [pki / "trust"]), 2.0),
                _attempt(mapping, ClientSecurity(other.cert, other.key, [pki / "trust"]), 2.0),
                # the run's own bridge certificate, but a client trusting only hospital1's CA: it refuses the server
                _attempt(mapping, ClientSecurity(bridge_cert, bridge_key, [hospital1_only]), 2.0),
                # and with the run's trust list it is served
                _attempt(mapping, ClientSecurity(bridge_cert, bridge_key, [pki / "trust"]), 2.0, readings=50),
            )

        anonymous, self_signed, other_ca, untrusted_server, trusted = asyncio.run(attempts())
        for name, b in (("anonymous", anonymous), ("self-signed", self_signed), ("other CA", other_ca),
                        ("untrusted server", untrusted_server)):
            assert b.connects == 0 and b.got == [] and b.last_error, (name, b.last_error)  # type: ignore[attr-defined]
        assert "SecurityPolicy#None" in anonymous.last_error  # no endpoint without security at all
        assert "BadCertificateUntrusted" in self_signed.last_error and "BadCertificateUntrusted" in other_ca.last_error
        assert "BadCertificateUntrusted" in untrusted_server.last_error
        assert trusted.connects == 1 and len(trusted.got) > 50  # type: ignore[attr-defined]
        log = (home / "logs" / "twins-simulators.log").read_text()
        assert "refused the client certificate" in log

        # end to end over the secure channel: the run's bridge anchors readings on the ledger
        deadline = time.monotonic() + 60
        st: dict = {}
        while time.monotonic() < deadline:
            try:
                st = json.loads((twins / "status.json").read_text())
            except (OSError, ValueError):
                st = {}
            if st.get("counters", {}).get("anchored", 0) >= 2:
                break
            time.sleep(0.5)
        assert st["counters"]["anchored"] >= 2 and st["counters"]["readings"] > 0, st.get("counters")
        assert st["bridge"]["connects"] == 1 and st["bridge"]["lost"] == 0
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=90)
    stopped = [json.loads(x) for x in out.splitlines() if x.strip()][-1]
    assert p.returncode == 0 and stopped["event"] == "stopped" and stopped["lost"] == 0, (out, err)
    assert INSECURE_WARNING not in err


def test_no_security_only_behind_the_explicit_flag(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "twins.simulators", "--port", str(free_port_base(1)), "--data-dir", str(tmp_path),
            "--machines", "plant1:1", "--duration", "0.5"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0 and "give --cert, --key and --trust (SignAndEncrypt), or --insecure" in refused.stderr
    warned = subprocess.run([*base, "--insecure"], capture_output=True, text=True, timeout=60, env=env)
    assert warned.returncode == 0 and INSECURE_WARNING in warned.stderr, warned.stderr
