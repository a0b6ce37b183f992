"""Running patient twins pick up the hospitals' federated sepsis model the ledger commits, refuse a model file that
does not hash to it (loudly), and name the model's hash in their predictions and in the alerts on the ledger: on the
real Fabric network of the test run (``fabric_net``).

`twinledger twins run` (subprocess: real OPC-UA bedside monitors replaying PhysioNet 2019 patients, the bridge
anchoring on the ledger) runs two hospital1 monitors in a home of its own; their ledger task is the test's own
(``--patient-model-task``). Meanwhile the test runs a REAL governed
federated round of the hospitals' sepsis task, as tests/integration/test_twins_ledger_model.py does for the plants:
the ServerApp logic and both hospitals' ClientApps training on their PhysioNet shares (patient ranges, never a patient
at both), each hospital recording its own data use, the round started and committed on the ledger with the hash of
the model stored. Flower's transport is left out (``federated.local_grid.LocalGrid``).

The twins read models from a store of their own: the test first puts a tampered copy of the committed model there
(refused, one ERROR line naming both hashes, the twins stay on the labelled NEWS2-like fallback), then the true bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from federated.data import data_root, task_spec
from federated.local_grid import LocalGrid
from federated.serverapp import run_governed
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.cli_fl import write_ledger_configs
from tests.fabric_net import REPO, FabricNet, twinledger
from tests.integration.test_twins_cli import kill_leftovers, wait_gone
from tests.integration.test_twins_ledger_model import status, wait_for
from tests.ports import free_port_base

pytestmark = pytest.mark.integration
HOSPITALS = ["hospital1", "hospital2"]
BEDS = ("hospital1.bed1", "hospital1.bed2")
SPEC = task_spec("sepsis")
FALLBACK = "fallback:news2-like-v1"


def register_sepsis(net: FabricNet) -> dict[str, str]:
    """Each hospital's steward registers its share of the PhysioNet subset under a new ID and grants the other
    hospital its use for fl:sepsis (what `twinledger data register` / `data grant` do)."""
    name = net.unique("sepsis")
    datasets = {org: f"{org}.{name}" for org in HOSPITALS}
    manifest = hashlib.sha256((data_root() / SPEC.dataset / "MANIFEST.csv").read_bytes()).hexdigest()
    for org, other in (("hospital1", "hospital2"), ("hospital2", "hospital1")):
        with net.connect_sync(org, "steward") as gw:
            data = gw.network(net.spec.channel).contract(net.chaincode, "data")
            data.submit("RegisterDataset", datasets[org], "tabular", "{}", manifest, "internal")
            data.submit("Grant", datasets[org], other, SPEC.purpose, "")
    return datasets


def models(st: dict[str, Any]) -> set[str | None]:
    return {((st.get("twins") or {}).get(a) or {}).get("model") for a in BEDS}


def test_patient_twins_predict_with_the_ledgers_sepsis_model(fabric_net: FabricNet, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    net = fabric_net
    home = net.client_home(tmp_path / "home")
    task = net.unique("sepsis")
    fl_store, twin_store = tmp_path / "fl-store", tmp_path / "twin-store"
    twin_store.mkdir()
    bridge_log = home / "logs" / "twins-bridge.log"
    datasets = register_sepsis(net)

    # 1. the twins before the task has a round: NEWS2-like rules, labelled as the fallback
    port = free_port_base(3)
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    env.update(PYTHONUNBUFFERED="1", TL_DATA_ROOT=str(data_root()))
    twins = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "twins", "run", "--home", str(home), "--port", str(port),
         "--monitors", "hospital1:2", "--monitor-rate", "10", "--duration", "400", "--model-store", str(twin_store),
         "--patient-model-task", task, "--model-poll", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        t_start = time.monotonic()
        st = wait_for("the patient twins' first states", lambda: (s := status(home)) and None not in models(s) and s,
                      90, twins, bridge_log)
        assert models(st) == {FALLBACK}, models(st)
        m = st["models"]["patient"]
        assert (m["state"], m["task"], m["fallback"]) == ("fallback", task, FALLBACK)
        assert all(st["twins"][a]["prediction"] is None and st["twins"][a]["risk"]["label"].startswith("NEWS2-like")
                   for a in BEDS)
        print(f"\ntwins up after {time.monotonic() - t_start:.1f} s")

        # 2. one governed federated round of the hospitals' sepsis task, committed on the ledger
        server, per_org = write_ledger_configs(net.home, net.spec, HOSPITALS, ("hospital1", "operator"), tmp_path / "ledger")
        grid = LocalGrid({org: {"task": "sepsis", "ledger": per_org[org], "dataset": datasets[org],
                                "data-root": str(data_root()), "threads": 1} for org in HOSPITALS})
        run_config = {"task": "sepsis", "num-server-rounds": 1, "ledger": server, "store": str(fl_store),
                      "datasets": ",".join(datasets[o] for o in HOSPITALS), "ledger-task": task, "min-nodes": 2,
                      "poll-interval": 0.05, "wait-for-nodes": 5.0}
        t_fl = time.monotonic()
        info = run_governed(grid, run_config)[1]
        sha = info.final_sha256
        assert sha and (fl_store / sha).is_file()
        print(f"sepsis round 1 committed after {time.monotonic() - t_fl:.1f} s: {sha}")

        # 3. a model file that does not hash to the ledger's: refused loudly, the twins keep the labelled fallback
        good = (fl_store / sha).read_bytes()
        tampered = bytearray(good)
        tampered[len(tampered) // 2] ^= 0xFF
        (twin_store / sha).write_bytes(bytes(tampered))
        st = wait_for("the tampered model refused", lambda: (s := status(home)) and
                      (s["models"]["patient"].get("refused") or {}).get("reason") == "hash-mismatch" and s,
                      30, twins, bridge_log)
        assert st["models"]["patient"]["refused"]["round"] == 1 and models(st) == {FALLBACK}
        refusals = [line for line in bridge_log.read_text().splitlines() if "REFUSED" in line]
        bad_sha = hashlib.sha256(bytes(tampered)).hexdigest()
        assert len(refusals) == 1 and sha in refusals[0] and bad_sha in refusals[0] and "ERROR" in refusals[0], refusals

        # 4. the true bytes: verified against the ledger and swapped in while the monitors keep replaying
        readings_before = st["counters"]["readings"]
        (twin_store / sha).write_bytes(good)
        label = f"federated:{task}:round1:{sha[:12]}"
        st = wait_for("the sepsis model in use", lambda: (s := status(home)) and models(s) == {label} and s,
                      30, twins, bridge_log)
        assert st["models"]["patient"]["in_use"]["sha256"] == sha and st["models"]["patient"]["refused"] is None
        for a in BEDS:
            pred = st["twins"][a]["prediction"]
            assert pred["model"] == label and pred["model_sha256"] == sha and 0.0 <= pred["probability"] <= 1.0
        assert st["counters"]["readings"] > readings_before

        # 5. the model's sepsis-risk alerts reach the ledger (bed1 replays a septic patient's stay, looping)
        db_path = home / "twins" / "readings.sqlite"

        def sepsis_alert_anchored() -> bool:
            db = sqlite3.connect(db_path)
            try:
                return db.execute("SELECT COUNT(*) FROM alerts a JOIN alert_anchors n ON n.alert_key = a.alert_key "
                                  "WHERE a.kind = 'sepsis-risk'").fetchone()[0] > 0
            finally:
                db.close()

        wait_for("a sepsis-risk alert anchored", sepsis_alert_anchored, 120, twins, bridge_log)
    finally:
        if twins.poll() is None:
            twins.send_signal(signal.SIGINT)
        try:
            out, err = twins.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            kill_leftovers(home / "twins")
            out, err = twins.communicate()
        assert not wait_gone(home / "twins")

    assert twins.returncode == 0, err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["lost"] == 0, stopped
    db = sqlite3.connect(home / "twins" / "readings.sqlite")
    try:
        alerts = db.execute("SELECT a.kind, a.detail_json, n.tx_id FROM alerts a "
                            "JOIN alert_anchors n ON n.alert_key = a.alert_key").fetchall()
    finally:
        db.close()

    async def read_ledger() -> list[dict[str, Any]]:
        async with net.connect("hospital2", "client") as gw:  # any member reads alerts
            c = gw.network(net.spec.channel).contract(CHAINCODE_NAME)
            return [json.loads(await c.evaluate("twins:ReadAlert", tx)) for _, _, tx in alerts]

    on_ledger = asyncio.run(read_ledger())
    by_model = 0
    for (kind, detail_json, tx), rec in zip(alerts, on_ledger):
        assert rec["id"] == tx and rec["kind"] == kind and rec["model"] == json.loads(detail_json)["model"]
        if kind == "sepsis-risk":
            by_model += 1
            assert (rec["model"], rec["model_sha256"]) == (label, sha), rec
        else:  # before the swap: the rules' alerts, labelled as the fallback, no hash
            assert (kind, rec["model"], rec["model_sha256"]) == ("news2", FALLBACK, None), rec
    print(f"alerts on the ledger: {len(alerts)} ({by_model} sepsis-risk by {label})")
    assert by_model >= 1
    fed = next(r for r in on_ledger if r["kind"] == "sepsis-risk")
    decided = twinledger("twins", "decide", fed["id"], "--action", "monitor", "--json", home=home)
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    assert (decision["model"], decision["model_sha256"]) == (label, sha)
    shown = twinledger("twins", "status", home=home)
    assert shown.returncode == 0, shown.stderr
    assert f"model of the patient twins: {label} (task {task} round 1, sha256 {sha} verified against the ledger" in shown.stdout
