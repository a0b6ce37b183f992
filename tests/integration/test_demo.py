"""`twinledger demo` end to end, as a newcomer runs it, on a network whose peers answer.

Real: the CAs and identities (`twinledger up`), every `twinledger` command the demo runs, the OPC-UA
simulators and bridge, Flower's SuperLink and SuperNodes with PyTorch training, the dashboard server,
the Gateway client and the chaincode. TEST DOUBLE: the peers (``python -m tests.fabric_double``, the
real chaincode behind a TLS gateway on every peer port) until the Fabric binaries can be built here.
The demo sees peers answering /healthz and uses the running network, as it would a real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from peers.binaries import fabric_available
from tests.fabric_double.process import REPO, DoubleProcess, down_home, prepare_home, twinledger
from tests.ports import free_port_base

pytestmark = pytest.mark.integration


def _get_json(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


def test_demo_governs_trains_anchors_alerts_and_serves_the_dashboard(tmp_path: Path) -> None:
    if fabric_available() is None:
        pytest.skip("the Fabric binaries are installed: real peers own the peer ports, not the double")
    home = tmp_path / "net"
    prepare_home(home)
    try:
        double = DoubleProcess(home)
        try:
            port = free_port_base(1, lo=40000, hi=50000)
            env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
            demo = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "demo", "--home", str(home), "--rounds", "1",
                 "--duration", "15", "--dashboard-port", str(port), "--alert-wait", "90"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
            # While the dashboard serves, the page's API shows what the demo did.
            state = home / "demo.json"
            deadline = time.monotonic() + 480
            while not state.exists() and demo.poll() is None and time.monotonic() < deadline:
                time.sleep(1)
            assert state.exists(), f"no dashboard before the demo ended (exit {demo.poll()})"
            url = json.loads(state.read_text())["dashboard"]
            governance = _get_json(url + "api/governance")
            twins = _get_json(url + "api/twins")
            output, _ = demo.communicate(timeout=180)
            assert demo.returncode == 0, output

            summary = json.loads(state.read_text())
            assert summary["ledger"] == "Fabric"
            for task in ("maintenance-v1", "cardiac-v1"):
                assert summary["federated"][task]["exit"] == 0 and summary["federated"][task]["verified"] >= 3, summary
            assert summary["anchors"] > 0 and summary["alerts"] >= 1, summary
            # each step narrated with the command it ran
            for line in ("$ twinledger data register plant1.ai4i2020", "$ twinledger data grant hospital2.heart_disease_uci",
                         "$ twinledger fl run cardiac-v1", "$ twinledger twins run", "model hashes verified", "shutting down"):
                assert line in output, output
            assert "plant2.ai4i2020" in json.dumps(governance) and twins, (governance, twins)

            # The demo's grants are on the ledger, and each org's training use was checked and recorded.
            audit = json.loads(twinledger("data", "audit", "plant2.ai4i2020", "--as", "plant1", "--json", home=home).stdout)
            entries = audit["entries"]
            assert [e["owner"] for e in entries if e["action"] == "registered"] == ["plant2"], entries
            assert [(e["grantee"], e["purpose"]) for e in entries if e["action"] == "granted"] == [("plant1", "fl:maintenance")]
            # plant1's own client checked plant2's data set before training on the task (a recorded use)
            assert any(e["action"] == "access" and e.get("org") == "plant1" and e.get("allowed") for e in entries), entries

            # A second demo on the same ledger registers and grants nothing new (idempotent steps).
            again = twinledger("demo", "--rounds", "1", "--duration", "0", "--dashboard-port", str(port),
                               "--alert-wait", "5", home=home, timeout=600)
            assert again.returncode == 0, again.stdout + again.stderr
            assert "$ twinledger data register" not in again.stdout and "$ twinledger data grant" not in again.stdout
            assert "already registered" in again.stdout
        finally:
            assert double.stop() == 0
    finally:
        down_home(home)
