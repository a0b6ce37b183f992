"""`twinledger twins map` and `twins run --endpoint --mapping` against OPC-UA servers not written here (node-opcua,
tests/opcua_server/server.js), on the real Fabric network of the test run, as a plant would use them:

- two servers publishing standard scalars at 10 Hz: press A keeps history, press B keeps none (``--no-history``);
- `twins map` refuses what it must in one line (security the server does not offer, a file that exists), then
  browses each server into a mapping (units from EngineeringUnits, types, a guessed twin kind); B's asset is renamed
  by editing the file, as its header asks;
- one `twins run` bridges both endpoints (no simulators), until its bridge is killed with SIGKILL; a second
  `twins run` resumes: A's readings come back from its history (0 lost, 0 duplicated), B cannot give them back, so
  every variable of B gets a gap record sealed into the anchored batch, which `verify gaps` reports from the ledger;
  `verify reading` proves one of A's readings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fabric_net import FabricNet
from tests.ports import free_port_base
from twins.anchoring import ReadingStore
from twins.procs import Proc

pytestmark = pytest.mark.integration

SERVER_DIR = Path(__file__).resolve().parents[1] / "opcua_server"
SIGNALS = ("Temperature", "Pressure", "Count", "Speed", "Running", "Vibration")
CLI = [sys.executable, "-m", "orchestrator.cli"]
WAIT_S = 60.0

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (SERVER_DIR / "node_modules" / "node-opcua").is_dir(),
    reason="node-opcua not installed (scripts/setup.sh runs npm ci in tests/opcua_server)")


def tl(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout)


def _journal(path: Path) -> dict[str, set[int]]:
    """prop -> source times (µs) of every value the server published."""
    out: dict[str, set[int]] = {p: set() for p in SIGNALS}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec["name"]].add(rec["ts_ms"] * 1000)
    return out


def _status(home: Path) -> dict:
    try:
        return json.loads((home / "twins" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@needs_node
def test_map_then_run_two_external_endpoints_with_a_kill_and_a_gap_record_on_the_ledger(fabric_net: FabricNet, tmp_path):
    t0 = time.monotonic()
    home = fabric_net.client_home(tmp_path / "home")
    base = free_port_base(3)
    port_a, port_b, port_none = base, base + 1, base + 2
    url_a, url_b = f"opc.tcp://127.0.0.1:{port_a}/foreign", f"opc.tcp://127.0.0.1:{port_b}/foreign"
    servers: list[Proc] = []
    run: subprocess.Popen | None = None
    try:
        for port, journal, extra in ((port_a, "a.jsonl", []), (port_b, "b.jsonl", ["--no-history"])):
            servers.append(Proc(["node", str(SERVER_DIR / "server.js"), "--port", str(port), "--journal",
                                 str(tmp_path / journal), "--rate", "10", *extra], log=tmp_path / f"{journal}.log"))
        for p in servers:  # both start at once
            p.wait_ready(120)

        # --- twins map: one-line refusals, then the mappings ------------------------------------------------------
        refused = tl("twins", "map", "--endpoint", url_a, "--org", "plant1", "--out", str(tmp_path / "x.yaml"), home=home)
        assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].startswith(
            "twinledger: security refused: ") and "None/None" in refused.stderr, refused.stderr
        assert not (tmp_path / "x.yaml").exists()
        unreachable = tl("twins", "map", "--endpoint", f"opc.tcp://127.0.0.1:{port_none}", "--org", "plant1",
                         "--out", str(tmp_path / "x.yaml"), "--insecure-opcua", home=home)
        assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr.splitlines()[-1]
        for url, org, out in ((url_a, "plant1", "a.yaml"), (url_b, "plant2", "b.yaml")):
            m = tl("twins", "map", "--endpoint", url, "--org", org, "--out", str(tmp_path / out), "--insecure-opcua",
                   "--json", home=home)
            assert m.returncode == 0, m.stderr
            assert json.loads(m.stdout) | {"out": None} == {
                "out": None, "endpoint": url, "variables": 6, "assets": 1, "kinds": {"machine": 1, "patient": 0, "generic": 0},
                "namespace": "urn:foreign:press", "secure": False}
        again = tl("twins", "map", "--endpoint", url_a, "--org", "plant1", "--out", str(tmp_path / "a.yaml"),
                   "--insecure-opcua", home=home)
        assert again.returncode == 1 and "exists; give --force" in again.stderr.splitlines()[-1]
        text_a = (tmp_path / "a.yaml").read_text()
        assert text_a.startswith("# TwinLedger bridge mapping") and "EDIT IT" in text_a
        mapping_a = yaml.safe_load(text_a)
        assert mapping_a["assets"] == {"Press1": {"org": "plant1", "kind": "machine"}}
        assert mapping_a["nodes"]["ns=2;s=Press1.Temperature"] == {
            "asset": "Press1", "property": "Temperature", "unit": "°C", "type": "Double"}
        assert {n["property"]: n["type"] for n in mapping_a["nodes"].values()} == {
            "Temperature": "Double", "Pressure": "Float", "Count": "Int32", "Speed": "UInt16", "Running": "Boolean",
            "Vibration": "Double"}
        # the user's edit: press B gets a name of its own (both servers call their press Press1)
        (tmp_path / "b.yaml").write_text((tmp_path / "b.yaml").read_text().replace("asset: Press1", "asset: press-b")
                                         .replace("  Press1: {org", "  press-b: {org"))

        # --- twins run on both endpoints, its bridge killed with SIGKILL -------------------------------------------
        run_args = ["twins", "run", "--endpoint", url_a, "--mapping", str(tmp_path / "a.yaml"), "--endpoint", url_b,
                    "--mapping", str(tmp_path / "b.yaml"), "--insecure-opcua", "--interval", "0.5", "--metrics-port", "0",
                    "--home", str(home)]
        with open(tmp_path / "run1.out", "w") as out:
            run = subprocess.Popen([*CLI, *run_args], stdout=out, stderr=subprocess.STDOUT, text=True)
        _wait_for(lambda: _status(home).get("counters", {}).get("anchored", 0) >= 3
                  and {"Press1", "press-b"} <= set(_status(home).get("twins", {})), WAIT_S, "first anchors of both")
        st = _status(home)["bridge"]
        assert st["connections"] == 2 and st["endpoints"] == sorted([url_a, url_b])
        bridge_pid = json.loads((home / "twins" / "run.json").read_text())["pids"]["bridge"]
        os.kill(bridge_pid, signal.SIGKILL)
        assert run.wait(30) == 1  # twins run says its bridge stopped unexpectedly
        assert "stopped unexpectedly" in (tmp_path / "run1.out").read_text()
        store = ReadingStore(home / "twins" / "readings.sqlite")
        sealed_b = {prop: ts for (asset, prop), (_, ts) in store.last_positions().items() if asset == "press-b"}
        store.close()
        time.sleep(1.5)  # both servers publish on; only A will give these values back

        # --- the restart: A refills from history, B leaves a gap record per variable -------------------------------
        again_run = subprocess.run([*CLI, *run_args, "--duration", "4", "--json"], capture_output=True, text=True,
                                   timeout=120)
        run = None
        assert again_run.returncode == 0, again_run.stdout[-2000:] + again_run.stderr[-2000:]
        stopped = json.loads(again_run.stdout.strip().splitlines()[-1])
        assert stopped["event"] == "stopped" and stopped["gaps_sealed"] == len(SIGNALS) and stopped["anchored"] > 0
    finally:
        if run is not None:
            run.kill()
        for p in servers:
            p.stop(timeout=5)

    journal_a, journal_b = _journal(tmp_path / "a.jsonl"), _journal(tmp_path / "b.jsonl")
    store = ReadingStore(home / "twins" / "readings.sqlite")
    try:
        stored: dict[tuple[str, str], list[int]] = {}
        for asset in ("Press1", "press-b"):
            for r in store.iter_readings(asset):
                stored.setdefault((asset, r.prop), []).append(r.source_ts_us)
        assert store.pending_batches() == [] and store.count("anchors") == store.count("batches")
    finally:
        store.close()
    for prop in SIGNALS:
        a = stored[("Press1", prop)]
        assert len(a) == len(set(a)), f"Press1/{prop}: duplicated"
        # history: every value A published from the first stored to the last stored one is there, 0 lost
        expected = {t for t in journal_a[prop] if min(a) <= t <= max(a)}
        assert set(a) == expected, f"Press1/{prop}: {len(expected - set(a))} lost"
        b = stored[("press-b", prop)]
        assert len(b) == len(set(b)) and set(b) <= journal_b[prop]

    # --- verify gaps: one per variable of B, from its last sealed reading to the first after the restart ----------
    p = tl("verify", "gaps", "--json", home=home, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    gaps = {g["var"]: g for g in report["gaps"]}
    assert report["ok"] and set(gaps) == {f"press-b/{s}" for s in SIGNALS}, report
    for prop in SIGNALS:
        g, b = gaps[f"press-b/{prop}"], sorted(stored[("press-b", prop)])
        assert g["org"] == "plant2" and g["tx_id"] and "keeps no history" in g["reason"]
        assert g["from_ts_us"] == sealed_b[prop] and g["to_ts_us"] in b
        # nothing stored inside the gap, and the server did publish there: the gap is real, and declared
        assert not [t for t in b if g["from_ts_us"] < t < g["to_ts_us"]]
        assert [t for t in journal_b[prop] if g["from_ts_us"] < t < g["to_ts_us"]]

    status = json.loads(tl("twins", "status", "--json", home=home).stdout)
    assert status["bridge"]["gaps_sealed"] == len(SIGNALS) and status["bridge"]["connections"] == 2
    assert set(status["assets"]) == {"Press1", "press-b"} and status["store"]["pending"] == 0

    # a reading of A next to the restart proves against the ledger, with no gap next to it
    seq = len(stored[("Press1", "Count")]) // 2
    proof = tl("verify", "reading", "Press1", str(seq), "--prop", "Count", "--json", home=home, timeout=120)
    assert proof.returncode == 0, proof.stderr
    [r] = json.loads(proof.stdout)["readings"]
    assert r["reading"]["seq"] == seq and r["anchor"]["tx_id"] and r["gaps"] == []
    print(f"external endpoints: {sum(len(v) for v in stored.values())} readings stored, {len(gaps)} gap records "
          f"verified on the ledger; wall {time.monotonic() - t0:.1f} s")
