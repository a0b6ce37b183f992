"""Running twins pick up the federated model the ledger commits, refuse a model file that does not hash to it, and keep
every reading: on the real Fabric network of the test run (``fabric_net``).

`twinledger twins run` (subprocess: real OPC-UA simulators and bridge, anchoring on the ledger) runs two plant1
machines in a home of its own. Meanwhile the test runs a REAL governed federated run of the plants' maintenance task:
the ServerApp logic (``federated.serverapp.run_governed``) and both plants' ClientApps, training on their AI4I shares,
each org recording its own data use (``data:Check``), every round started and committed on the ledger through the
models contract with the hash of the model it stored. Only Flower's transport is left out: the ClientApps are called
in process (``federated.local_grid.LocalGrid``, a SuperLink round costs ~20 s more on this machine and tests nothing
the twins see). The grid holds round 2's admission until the test lets it go, so the twins see round 1 as the
ledger's last committed round first.

The twins read the models from a store of their own (``--model-store``), which the test fills from the run's store:
a committed model reaches the twins' host by whatever copy, and only the ledger's hash makes it trustworthy. That
is what lets the test put a tampered file there, deterministically, after the commit of round 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from federated.data import data_root
from federated.fabric_ledger import open_ledger
from federated.local_grid import LocalGrid
from federated.serverapp import run_governed
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.cli_fl import write_ledger_configs
from tests.fabric_net import REPO, FabricNet, twinledger
from tests.integration.test_fl_cli import register_federation
from tests.integration.test_twins_cli import kill_leftovers, wait_gone
from tests.ports import free_port_base

pytestmark = pytest.mark.integration
PLANTS = ["plant1", "plant2"]
MACHINES = ("plant1.m1", "plant1.m2")


class GatedGrid(LocalGrid):
    """LocalGrid that holds the admission of round ``gated`` until ``go`` is set (the test decides when round 2 runs)."""

    def __init__(self, *args: Any, gated: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gated = gated
        self.go = threading.Event()
        self.held = threading.Event()

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        messages = list(messages)
        for m in messages:
            cfg = m.content["config"] if "config" in m.content else None
            if cfg is not None and cfg.get("phase") == "admit" and int(cfg.get("server-round", 0)) == self.gated:
                self.held.set()
                assert self.go.wait(300), "the test never let the gated round run"
                break
        return super().push_messages(messages)


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def status(home: Path) -> dict[str, Any]:
    try:
        return json.loads((home / "twins" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def labels(st: dict[str, Any]) -> set[str]:
    return {((st.get("twins") or {}).get(a, {}).get("prediction") or {}).get("model") for a in MACHINES}


def test_running_twins_follow_the_ledgers_model(fabric_net: FabricNet, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    net = fabric_net
    home = net.client_home(tmp_path / "home")
    task = net.unique("maintenance")
    fl_store, twin_store = tmp_path / "fl-store", tmp_path / "twin-store"
    twin_store.mkdir()
    bridge_log = home / "logs" / "twins-bridge.log"
    datasets = register_federation(net)

    # 1. the twins, before the task has any round: they predict with the rules and say so
    port = free_port_base(3)
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    twins = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "twins", "run", "--home", str(home), "--port", str(port),
         "--machines", "plant1:2", "--machine-rate", "20", "--duration", "400", "--model-task", task,
         "--model-store", str(twin_store), "--model-poll", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"})
    fl_thread: threading.Thread | None = None
    grid: GatedGrid | None = None
    try:
        t_start = time.monotonic()
        st = wait_for("the twins' first predictions", lambda: (s := status(home)) and None not in labels(s) and s,
                      90, twins, bridge_log)
        assert labels(st) == {"fallback:ai4i-rules-v1"}, labels(st)
        assert st["models"]["machine"]["state"] == "fallback" and st["models"]["machine"]["task"] == task
        print(f"\ntwins predicting after {time.monotonic() - t_start:.1f} s")

        # 2. a governed federated run of the plants' task, round 2 held back
        server, per_org = write_ledger_configs(net.home, net.spec, PLANTS, ("plant1", "operator"), tmp_path / "ledger")
        grid = GatedGrid({org: {"task": "maintenance", "ledger": per_org[org], "dataset": datasets[org],
                                "data-root": str(data_root()), "threads": 1} for org in PLANTS}, gated=2)
        run_config = {"task": "maintenance", "num-server-rounds": 2, "ledger": server, "store": str(fl_store),
                      "datasets": ",".join(datasets[o] for o in PLANTS), "ledger-task": task, "min-nodes": 2,
                      "poll-interval": 0.05, "wait-for-nodes": 5.0}
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["info"] = run_governed(grid, run_config)[1]
            except BaseException as exc:  # noqa: BLE001 -- reported by the test thread
                outcome["error"] = exc
                grid.held.set()

        t_fl = time.monotonic()
        fl_thread = threading.Thread(target=run, daemon=True)
        fl_thread.start()
        assert grid.held.wait(180) and "error" not in outcome, outcome.get("error")
        ledger = open_ledger(server)
        try:
            (r1,) = [r for r in ledger.list_rounds(task) if r.complete]
        finally:
            ledger.close()
        sha1 = r1.result_sha256
        print(f"round 1 committed after {time.monotonic() - t_fl:.1f} s: {sha1}")
        assert (fl_store / sha1).is_file()

        # 3. the ledger names round 1 but the twins' store has no such file: they keep the rules, and say why
        st = wait_for("the twins to see round 1", lambda: (s := status(home)) and
                      (s["models"]["machine"].get("refused") or {}).get("round") == 1 and s, 30, twins, bridge_log)
        assert st["models"]["machine"]["refused"]["reason"] == "unavailable" and labels(st) == {"fallback:ai4i-rules-v1"}

        # 4. the committed file arrives: the running twins swap to it
        readings_before = st["counters"]["readings"]
        shutil.copyfile(fl_store / sha1, twin_store / sha1)
        label1 = f"federated:{task}:round1:{sha1[:12]}"
        st = wait_for("round 1's model in use", lambda: (s := status(home)) and labels(s) == {label1} and s,
                      30, twins, bridge_log)
        assert st["models"]["machine"]["in_use"]["sha256"] == sha1 and st["models"]["machine"]["refused"] is None
        for a in MACHINES:
            assert st["twins"][a]["prediction"]["model_sha256"] == sha1
        assert st["counters"]["readings"] > readings_before

        # 5. round 2 runs and commits; the twins' copy of its model is altered: refused loudly, round 1 stays
        grid.go.set()
        fl_thread.join(240)
        assert not fl_thread.is_alive() and "error" not in outcome, outcome.get("error")
        info = outcome["info"]
        sha2 = info.final_sha256
        assert sha2 != sha1 and info.global_hashes[-1] == sha2
        good = (fl_store / sha2).read_bytes()
        tampered = bytearray(good)
        tampered[len(tampered) // 2] ^= 0xFF
        (twin_store / sha2).write_bytes(bytes(tampered))
        st = wait_for("round 2 refused", lambda: (s := status(home)) and
                      (s["models"]["machine"].get("refused") or {}).get("reason") == "hash-mismatch" and s,
                      30, twins, bridge_log)
        assert st["models"]["machine"]["refused"]["round"] == 2 and labels(st) == {label1}
        import hashlib

        bad_sha = hashlib.sha256(bytes(tampered)).hexdigest()
        time.sleep(2.0)  # a few more polls of the same round: still one line
        refusals = [line for line in bridge_log.read_text().splitlines() if "REFUSED" in line]
        assert len(refusals) == 1 and sha2 in refusals[0] and bad_sha in refusals[0] and "ERROR" in refusals[0], refusals
        assert labels(status(home)) == {label1}

        # 6. the true bytes: round 2 verifies and is swapped in while the twins run
        (twin_store / sha2).write_bytes(good)
        label2 = f"federated:{task}:round2:{sha2[:12]}"
        st = wait_for("round 2's model in use", lambda: (s := status(home)) and labels(s) == {label2} and s,
                      30, twins, bridge_log)
        assert [s["round"] for s in st["models"]["machine"]["swaps"]] == [1, 2]
        time.sleep(2.0)  # a few more batches anchored under round 2
    finally:
        if grid is not None:
            grid.go.set()
        if twins.poll() is None:
            twins.send_signal(signal.SIGINT)
        try:
            out, err = twins.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            kill_leftovers(home / "twins")
            out, err = twins.communicate()
        assert not wait_gone(home / "twins")
        if fl_thread is not None:
            fl_thread.join(60)

    # 7. nothing was lost across the swaps: every variable's readings are contiguous, all sealed and anchored
    assert twins.returncode == 0, err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["lost"] == 0, stopped
    db = sqlite3.connect(home / "twins" / "readings.sqlite")
    try:
        spans = db.execute("SELECT asset, prop, MIN(seq), MAX(seq), COUNT(*) FROM readings GROUP BY asset, prop").fetchall()
        unanchored = db.execute("SELECT COUNT(*) FROM batches b LEFT JOIN anchors a ON a.batch_id = b.batch_id "
                                "WHERE a.tx_id IS NULL").fetchone()[0]
        alerts = db.execute("SELECT a.detail_json, n.tx_id, a.opened_at_us FROM alerts a "
                            "JOIN alert_anchors n ON n.alert_key = a.alert_key").fetchall()
    finally:
        db.close()
    assert {s[0] for s in spans} == set(MACHINES) and unanchored == 0
    for asset, prop, lo, hi, n in spans:
        assert n == hi - lo + 1, f"{asset}.{prop}: {n} readings for seq {lo}..{hi}"
    assert sum(s[4] for s in spans) == stopped["values"]

    # `twins status` names the model in use and its ledger round
    shown = twinledger("twins", "status", home=home)
    assert shown.returncode == 0, shown.stderr
    assert f"model of the machine twins: {label2} (task {task} round 2, sha256 {sha2} verified against the ledger" in shown.stdout
    assert "P(fail)" in shown.stdout and "[federated]" in shown.stdout

    # the last anchored twin states name round 2's model, and every alert on the ledger names the model that made it
    import asyncio

    async def read_ledger() -> list[dict[str, Any]]:
        async with net.connect("plant2", "client") as gw:  # any member reads alerts
            c = gw.network(net.spec.channel).contract(CHAINCODE_NAME)
            return [json.loads(await c.evaluate("twins:ReadAlert", tx)) for _, tx, _ in alerts]

    on_ledger = asyncio.run(read_ledger())
    federated_alerts = 0
    for (detail_json, tx, _), rec in zip(alerts, on_ledger):
        detail = json.loads(detail_json)
        assert rec["id"] == tx and rec["model"] == detail["model"], (rec, detail)
        if rec["model"].startswith("federated:"):
            federated_alerts += 1
            assert rec["model_sha256"] in (sha1, sha2) and rec["model"].endswith(rec["model_sha256"][:12])
        else:
            assert rec["model"] == "fallback:ai4i-rules-v1" and rec["model_sha256"] is None
    print(f"alerts on the ledger: {len(alerts)} ({federated_alerts} by a federated model)")
    # worn tools at 20 products/s: the federated model raises alerts of its own (a model taking over a condition that
    # still holds opens a new episode), and a decision on one carries the model's hash
    assert federated_alerts >= 1, on_ledger
    fed = next(r for r in on_ledger if r["model"].startswith("federated:"))
    decided = twinledger("twins", "decide", fed["id"], "--action", "schedule", "--json", home=home)
    assert decided.returncode == 0, decided.stderr
    decision = json.loads(decided.stdout)
    assert (decision["model"], decision["model_sha256"]) == (fed["model"], fed["model_sha256"])
    from twins.anchoring.store import ReadingStore

    rs = ReadingStore(home / "twins" / "readings.sqlite")
    try:
        states = rs.latest_twin_states()
    finally:
        rs.close()
    assert {json.loads(states[a])["model"] for a in MACHINES} == {label2}
