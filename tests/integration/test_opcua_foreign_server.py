"""The bridge against an OPC-UA server not written here: node-opcua (tests/opcua_server/server.js, pinned by its
package-lock.json, installed by scripts/setup.sh), publishing standard scalars (Double, Float, Int32, UInt16, Boolean,
and a Double with Uncertain and Bad values) at 10 Hz with HistoryRead by time range.

The bridge process runs as `twinledger twins run` runs it, anchoring on the real Fabric network of the test run. Across
a SIGKILL of the bridge and a SIGKILL + restart of the server, the bridge's store must end up with exactly the values
the server published (its journal, written before each value is set): 0 lost, 0 duplicated, every value's source time,
type-converted value and status; every batch verifies against the ledger, and `python -m twins.bridge verify` (the
product's verify path) proves one reading.

Security: this test connects with NoSecurity (the bridge's explicit --insecure, which prints a WARNING): the server's
certificate and trust list would have to come from the org's Fabric CA into node-opcua's own PKI folder layout with
CRLs, which is not done yet. SignAndEncrypt is tested against the project's own server (test_twins_security.py).

node-opcua keeps history in memory only; server.js pushes its journal back into node-opcua's historian at start, as a
historian's storage would, so history survives the server's restart.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.twins_state import ledger_config
from tests.fabric_net import FabricNet
from tests.ports import free_port_base
from twins.anchoring import ReadingStore, verify_store_on_ledger
from twins.procs import Proc, bridge_argv

pytestmark = pytest.mark.integration

SERVER_DIR = Path(__file__).resolve().parents[1] / "opcua_server"
SIGNALS = ("Temperature", "Pressure", "Count", "Speed", "Running", "Vibration")
STATUS = {"Good": 0, "UncertainLastUsableValue": 0x40900000, "BadSensorFailure": 0x808C0000}
ASSET = "press1"
WAIT_S = 90.0

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (SERVER_DIR / "node_modules" / "node-opcua").is_dir(),
    reason="node-opcua not installed (scripts/setup.sh runs npm ci in tests/opcua_server)")


def _journal(path: Path) -> dict[str, dict[int, tuple[float | None, int]]]:
    """prop -> source time (µs) -> (value, status) of every value the server published."""
    out: dict[str, dict[int, tuple[float | None, int]]] = {p: {} for p in SIGNALS}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by the SIGKILL: never set, never published
        v = rec["value"]
        out[rec["name"]][rec["ts_ms"] * 1000] = (None if v is None else float(v), STATUS[rec["status"]])
    return out


def _status(home: Path) -> dict:
    try:
        return json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@needs_node
def test_node_opcua_server_counts_match_across_kills_and_a_reading_verifies(fabric_net: FabricNet, tmp_path):
    t_start = time.monotonic()
    config = ledger_config(fabric_net.home, ["plant1"])
    (tmp_path / "ledger.json").write_text(json.dumps(config))
    port = free_port_base(1)
    url = f"opc.tcp://127.0.0.1:{port}/foreign"
    journal = tmp_path / "journal.jsonl"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({
        "server": url, "namespace": "urn:foreign:press",
        "assets": {ASSET: {"org": "plant1", "kind": "generic"}},
        "nodes": {f"ns=1;s=Press1.{p}": {"asset": ASSET, "property": p} for p in SIGNALS},
    }))
    home = tmp_path / "bridge"
    server_argv = ["node", str(SERVER_DIR / "server.js"), "--port", str(port), "--journal", str(journal), "--rate", "10"]
    br_argv = bridge_argv(mapping=mapping, home=home, ledger_config=tmp_path / "ledger.json", interval=0.5,
                          start_from="history", insecure=True)
    procs: list[Proc] = []

    def start(argv, name):
        p = Proc(argv, log=tmp_path / f"{name}.log")
        procs.append(p)
        p.wait_ready(120)
        return p

    try:
        server = start(server_argv, "server1")
        bridge = start(br_argv, "bridge1")
        _wait_for(lambda: _status(home).get("counters", {}).get("anchored", 0) >= 2, WAIT_S, "first anchors")

        bridge.kill()  # SIGKILL the bridge: what it had not sealed is gone from its memory
        time.sleep(1.0)  # the server publishes on
        (home / "status.json").unlink()  # the killed bridge's last status: only the restarted one's counts below
        bridge = start(br_argv, "bridge2")
        # connected and delivering (its first anchors may be the resubmitted ones of the killed bridge)
        _wait_for(lambda: _status(home).get("bridge", {}).get("connects", 0) >= 1
                  and _status(home).get("counters", {}).get("readings", 0) > 0, WAIT_S, "the restarted bridge's readings")

        server.kill()  # SIGKILL the server; restarted on its journal (its history) a second later
        time.sleep(1.0)
        server = start(server_argv, "server2")
        assert server.ready["resumed_at"] > 0
        _wait_for(lambda: _status(home).get("bridge", {}).get("connects", 0) >= 2, WAIT_S, "the bridge's reconnect")
        time.sleep(2.0)

        server.signal(signal.SIGUSR1)  # pause production (still serving): the bridge must then hold everything
        time.sleep(0.3)
        published = _journal(journal)
        n_count = len(published["Count"])
        _wait_for(lambda: _status(home).get("twins", {}).get(ASSET, {}).get("last_seq", {}).get("Count") == n_count,
                  WAIT_S, "the bridge to deliver every published value")
        assert bridge.stop() == 0  # SIGTERM: seals what is pending, drains the anchorer
        bridge_status = _status(home)["bridge"]
    finally:
        for p in procs:
            p.stop(timeout=5)

    store = ReadingStore(home / "readings.sqlite")
    try:
        stored: dict[str, dict[int, tuple[float | None, int]]] = {p: {} for p in SIGNALS}
        seqs: dict[str, list[int]] = {p: [] for p in SIGNALS}
        for r in store.iter_readings(ASSET):
            assert r.source_ts_us not in stored[r.prop], f"{r.prop} at {r.source_ts_us} stored twice"
            stored[r.prop][r.source_ts_us] = (r.value if r.value == r.value else None, r.status)
            seqs[r.prop].append(r.seq)
        total = sum(len(v) for v in published.values())
        for prop in SIGNALS:
            lost = set(published[prop]) - set(stored[prop])
            extra = set(stored[prop]) - set(published[prop])
            assert not lost and not extra, f"{prop}: {len(lost)} lost, {len(extra)} not published"
            assert stored[prop] == published[prop], f"{prop}: values or statuses differ from the server's"
            assert sorted(seqs[prop]) == list(range(1, len(seqs[prop]) + 1)), f"{prop}: the bridge's ordinals"
        # enough stream to cross both kills (10 Hz per variable; fewer on a loaded machine, whose node server lags)
        assert store.count() == total and min(len(v) for v in published.values()) >= 40
        bad = sum(1 for v in published["Vibration"].values() if v[1] >> 30 == 2)
        uncertain = sum(1 for v in published["Vibration"].values() if v[1] >> 30 == 1)
        assert bad and uncertain, "the server published Bad and Uncertain values; they are stored with their status"
        assert bridge_status["lost"] == 0 and bridge_status["replayed"] > 0
        assert store.pending_batches() == [] and store.count("anchors") == store.count("batches")

        import asyncio

        verified, failed = asyncio.run(verify_store_on_ledger(store, config))
        assert failed == {} and verified == store.count("batches")
        seq = max(seqs["Count"]) // 2
    finally:
        store.close()

    # the product's verify path proves one reading against the ledger
    out = subprocess.run([*br_argv[:2], "twins.bridge", "verify", "--home", str(home), "--ledger-config",
                          str(tmp_path / "ledger.json"), ASSET, str(seq), "--prop", "Count"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    proof = json.loads(out.stdout)
    assert len(proof) == 1 and proof[0]["reading"]["seq"] == seq and proof[0]["anchor"]["tx_id"]
    print(f"foreign server: {total} values published, {total} stored once each, 0 lost; "
          f"{verified} batches verified; wall {time.monotonic() - t_start:.1f} s")
