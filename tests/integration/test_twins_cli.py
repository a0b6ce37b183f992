"""`twinledger twins run | status | whatif` and `twinledger verify reading` as a user runs them: the CLI as a
subprocess, which starts the real OPC-UA simulators and the bridge as its own processes (real sockets on
127.0.0.1), anchoring on the real Fabric network of the test run (``fabric_net``).

Each twins state lives in a home of its own (``FabricNet.client_home``: the network's spec and identities, no
nodes). One short `twins run --duration` fills a home that the read-only commands then inspect; tampering works on
a copy, so the tests do not depend on their order. A second run, in another home, is stopped with SIGINT to check
that every process it started is gone afterwards. What the ledger holds is checked in test_twins_ledger.py.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from network.spec import dump_spec, load_spec
from orchestrator.bringup import CHAINCODE_NAME
from tests.fabric_net import FabricNet
from tests.ports import free_port_base
from twins.model.sustainability import SustainabilityConfig

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "orchestrator.cli"]
MACHINES, MONITORS = ["plant1:2"], ["hospital1:1"]
ASSETS = {"plant1.m1", "plant1.m2", "hospital1.bed1"}  # what MACHINES and MONITORS name
DURATION = 5


def tl(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout)


def procs_using(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (the simulators and the bridge of that home)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(path) in cmd and state != "Z":
            out.append(int(d.name))
    return out


def wait_gone(path: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := procs_using(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_leftovers(path: Path) -> None:
    """Test clean-up after a failure: only processes of this test's own home."""
    for pid in procs_using(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_args(port: int, *extra: str) -> list[str]:
    args = ["twins", "run", "--port", str(port), "--machine-rate", "10", "--monitor-rate", "2"]
    for m in MACHINES:
        args += ["--machines", m]
    for m in MONITORS:
        args += ["--monitors", m]
    return args + list(extra)


@pytest.fixture(scope="module")
def ran(fabric_net: FabricNet, tmp_path_factory):
    """One `twins run --duration 5` that ends by itself."""
    home = fabric_net.client_home(tmp_path_factory.mktemp("twins-cli") / "home")
    t0 = time.monotonic()
    try:
        p = tl(*run_args(free_port_base(3), "--duration", str(DURATION)), home=home, timeout=90)
    finally:
        kill_leftovers(home)
    return home, p, time.monotonic() - t0


def store(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "twins" / "readings.sqlite")


def ledger_label(fabric_net: FabricNet) -> str:
    return f"ledger channel {fabric_net.spec.channel} (chaincode {CHAINCODE_NAME})"


def test_run_ends_by_itself_with_live_output(ran, fabric_net):
    home, p, elapsed = ran
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert f"anchoring every 1 s to the {ledger_label(fabric_net)}" in lines[0]
    live = [line for line in lines if re.match(r"\[\s*\d+s\]", line)]
    assert len(live) >= DURATION - 1, p.stdout
    rates = [float(re.search(r"(\d+) values/s", line).group(1)) for line in live]
    assert max(rates) > 0
    assert any(re.search(r"anchored [1-9]", line) for line in live)
    assert elapsed < DURATION + 60  # start-up included; generous: the cores are shared with other networks
    # the final line's totals are the store's: every value sealed and anchored
    m = re.search(r"stopped on the end of --duration after [\d.]+ s: (\d+) values, (\d+) batches sealed, (\d+) anchored, (\d+) lost", lines[-1])
    assert m, lines[-1]
    values, sealed, anchored, lost = map(int, m.groups())
    db = store(home)
    assert values == db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] > 0
    assert sealed == anchored == db.execute("SELECT COUNT(*) FROM anchors").fetchone()[0]
    db.close()
    assert lost == 0
    assert procs_using(home) == [], "no simulator or bridge left"


def test_status_json_after_the_run(ran, fabric_net):
    home, _, _ = ran
    p = tl("twins", "status", "--json", home=home)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["running"] is False and s["anchor"]["kind"] == "ledger" and s["anchor"]["label"] == ledger_label(fabric_net)
    assert set(s["assets"]) == ASSETS
    co2_factor = SustainabilityConfig().grid_kg_co2_per_kwh
    for name in ("plant1.m1", "plant1.m2"):
        a = s["assets"][name]
        assert a["updates"] > 0 and a["signals"]["RotationalSpeed"] > 0 and a["signals"]["Torque"] > 0
        assert 0.0 <= a["risk"]["failure_probability"] <= 1.0
        assert a["risk"]["model_kind"] in ("fallback", "federated") and a["risk"]["model"].startswith(a["risk"]["model_kind"])
        assert a["energy_kwh"] > 0 and a["co2_kg"] == pytest.approx(a["energy_kwh"] * co2_factor)
    bed = s["assets"]["hospital1.bed1"]
    assert bed["signals"] and bed["risk"]["model"].startswith("NEWS2-like") and bed["risk"]["news2"] >= 0
    plant = s["plants"]["plant1"]
    assert plant["energy_kwh"] == pytest.approx(s["assets"]["plant1.m1"]["energy_kwh"] + s["assets"]["plant1.m2"]["energy_kwh"])
    assert s["store"]["pending"] == 0 and s["store"]["anchored"] == s["store"]["batches"] > 0
    # the last anchors are the ledger's: the transaction that anchored each batch, as the ledger records it
    on_ledger = ledger_batches(fabric_net, [a["batch_id"] for a in s["last_anchors"]])
    assert s["last_anchors"] and all(on_ledger[a["batch_id"]]["tx_id"] == a["tx_id"] for a in s["last_anchors"])
    assert isinstance(s["alerts"], list)
    text = tl("twins", "status", home=home)
    assert text.returncode == 0 and all(a in text.stdout for a in ASSETS)
    assert f"anchors: {ledger_label(fabric_net)}" in text.stdout.splitlines()[0]
    assert all(f"tx {a['tx_id']}" in text.stdout for a in s["last_anchors"])


def ledger_batches(fabric_net: FabricNet, batch_ids: list[str]) -> dict[str, dict]:
    """twins:ReadSensorBatch of each id, as another org's client (any member may read anchors)."""
    with fabric_net.connect_sync("hospital2", "client") as gw:
        contract = gw.network(fabric_net.spec.channel).contract(CHAINCODE_NAME)
        return {b: json.loads(contract.evaluate("twins:ReadSensorBatch", b)) for b in batch_ids}


def test_whatif_compares_with_the_baseline(ran):
    home, _, _ = ran
    p = tl("twins", "whatif", "plant1.m1", "--speed", "-10%", "--hours", "8", home=home)
    assert p.returncode == 0, p.stderr
    assert "baseline" in p.stdout and "scenario" in p.stdout
    assert all(k in p.stdout for k in ("failure risk", "energy kWh", "CO2 kg"))
    runs = {}
    for speed in ("-10%", "0.9"):
        q = tl("twins", "whatif", "plant1.m1", "--speed", speed, "--hours", "8", "--json", home=home)
        assert q.returncode == 0, q.stderr
        runs[speed] = json.loads(q.stdout)
    r = runs["-10%"]
    assert r["scenario"]["speed_factor"] == pytest.approx(0.9) and r["baseline"]["speed_factor"] == 1.0
    assert r["scenario"]["rpm"] == pytest.approx(0.9 * r["baseline"]["rpm"])
    for k in ("failure_risk", "energy_kwh", "co2_kg"):
        assert r["delta"][k] == pytest.approx(r["scenario"][k] - r["baseline"][k])
    assert runs["0.9"]["scenario"] == r["scenario"], "a percentage and the same factor are the same scenario"
    rpm_target = round(r["baseline"]["rpm"] * 0.95)
    q = tl("twins", "whatif", "plant1.m1", "--speed", f"{rpm_target}rpm", "--json", home=home)
    assert q.returncode == 0 and json.loads(q.stdout)["scenario"]["rpm"] == pytest.approx(rpm_target)
    bad = tl("twins", "whatif", "hospital1.bed1", home=home)
    assert bad.returncode == 1 and "machine" in bad.stderr and "Traceback" not in bad.stderr


def _last_torque(home: Path) -> tuple[int, float, str]:
    db = store(home)
    seq, value, batch = db.execute("SELECT seq, value, batch_id FROM readings WHERE asset='plant1.m1' AND prop='Torque' "
                                   "ORDER BY seq DESC LIMIT 1").fetchone()
    db.close()
    return seq, value, batch


def test_verify_reading_of_a_real_reading(ran, fabric_net):
    home, _, _ = ran
    seq, value, batch = _last_torque(home)  # sealed at the stop: the newest batch
    p = tl("verify", "reading", "plant1.m1", str(seq), "--prop", "Torque", "--json", home=home)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] is True and out["anchor"] == ledger_label(fabric_net)
    (v,) = out["readings"]
    assert v["reading"]["value"] == value and v["batch_id"] == batch and v["proof"]
    assert v["anchor"]["tx_id"] == ledger_batches(fabric_net, [batch])[batch]["tx_id"]
    text = tl("verify", "reading", "plant1.m1", str(seq), "--prop", "Torque", home=home)
    assert text.returncode == 0 and "OK" in text.stdout and v["anchor"]["tx_id"] in text.stdout
    assert v["merkle_root"] in text.stdout and all(h in text.stdout for h in v["proof"])
    every = tl("verify", "reading", "hospital1.bed1", "1", home=home)  # every property of the first chart row
    assert every.returncode == 0, every.stderr


def test_verify_reading_fails_loudly_after_tampering(ran, tmp_path):
    src, _, _ = ran
    home = tmp_path / "home"
    shutil.copytree(src, home, symlinks=True, ignore=shutil.ignore_patterns("logs"))  # same network links
    seq, _, _ = _last_torque(home)
    db = store(home)
    # as the pipeline's tamper test: the store refuses UPDATEs, an attacker drops the trigger first
    db.execute("DROP TRIGGER readings_no_update")
    db.execute("UPDATE readings SET value = value * 1.01 WHERE asset='plant1.m1' AND prop='Torque' AND seq=?", (seq,))
    db.commit()
    db.close()
    p = tl("verify", "reading", "plant1.m1", str(seq), "--prop", "Torque", home=home)
    assert p.returncode == 1
    assert "VERIFICATION FAILED" in p.stderr and f"plant1.m1/Torque#{seq}" in p.stderr and "altered" in p.stderr
    assert "Traceback" not in p.stderr
    assert tl("verify", "reading", "plant1.m1", str(seq - 1), "--prop", "Torque", home=home).returncode == 0
    # (a store whose batch record differs from the ledger's: test_twins_ledger.py)


def test_run_without_a_network_fails_with_one_line(tmp_path):
    home = tmp_path / "home"
    p = tl(*run_args(free_port_base(3), "--duration", "2"), home=home, timeout=30)
    assert p.returncode == 1 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line == (f"twinledger: cannot anchor on the ledger: there is no network in {home}; "
                    "start the network with `twinledger up`")
    assert not (home / "twins" / "run.json").exists() and procs_using(home) == []

    # a network home whose peers are not running: the reason names them
    home.mkdir(parents=True, exist_ok=True)
    (home / "spec.yaml").write_text(dump_spec(load_spec(None, port_base=free_port_base(200))))
    p = tl(*run_args(free_port_base(3), "--duration", "2"), home=home, timeout=30)
    assert p.returncode == 1
    (line,) = p.stderr.strip().splitlines()
    assert "peers are not up" in line and "peer0.plant1" in line and line.endswith("start the network with `twinledger up`")
    assert not (home / "twins" / "run.json").exists() and procs_using(home) == []
    # there is no other anchor than the ledger
    p = tl(*run_args(free_port_base(3), "--anchor", "file"), home=home, timeout=30)
    assert p.returncode == 2 and "unrecognized arguments: --anchor file" in p.stderr


def test_sigint_stops_every_process(fabric_net, tmp_path):
    home = fabric_net.client_home(tmp_path / "home")
    # --json: the same live figures, one object per line (the text form is checked by the first test)
    cli = subprocess.Popen([*CLI, *run_args(free_port_base(3), "--json"), "--home", str(home)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in cli.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 45
        seen = []
        while not any(x.get("event") == "live" and x["anchored"] > 0 for x in seen):
            assert time.monotonic() < deadline, f"no anchored batch in the live output: {seen} {cli.stderr}"
            try:
                seen.append(json.loads(lines.get(timeout=1)))
            except queue.Empty:
                assert cli.poll() is None, cli.stderr.read()  # type: ignore[union-attr]
        pids = json.loads((home / "twins" / "run.json").read_text())["pids"]
        assert set(pids) == {"simulators", "bridge"}
        assert set(pids.values()) <= set(procs_using(home))
        during = json.loads(tl("twins", "status", "--json", home=home).stdout)
        assert during["running"] is True and during["pids"] == pids

        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=40) == 0
        time.sleep(0.2)  # the reader thread drains the pipe
        rest = []
        while not lines.empty():
            rest.append(json.loads(lines.get()))
        assert all(x["anchor"] == ledger_label(fabric_net) for x in seen + rest)
        assert rest and rest[-1]["event"] == "stopped" and rest[-1]["reason"] == "Ctrl-C", rest
        assert rest[-1]["exit_codes"] == {"bridge": 0, "simulators": 0} and rest[-1]["anchored"] == rest[-1]["sealed"]
        assert wait_gone(home) == [], "every process the run started has ended"
        for pid in pids.values():
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        after = json.loads(tl("twins", "status", "--json", home=home).stdout)
        assert after["running"] is False and after["store"]["pending"] == 0 and after["store"]["readings"] > 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        kill_leftovers(home)
