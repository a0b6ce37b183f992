"""`twinledger twins run` anchoring on the ledger: the CLI as a subprocess starts the real OPC-UA simulators and the
bridge (real sockets on 127.0.0.1), and each org's batches, alerts and reports go through the Fabric Gateway to
the real chaincode on the real Fabric network of the test run (``fabric_net``: orderers, peers, CAs, chaincode
servers), as that org's operator.

The module's twins state lives in a home of its own (``FabricNet.client_home``: the network's spec and identities,
no nodes), so other tests' twins states on the same network never touch it. The ledger keeps ONE chain of batches
per org: a twins state that has never anchored for an org continues that org's chain after its last batch
(``twins.anchoring_loop``), so this module's first batch numbers depend on what ran before on the network, and the tests
say "contiguous from the first", not "from 1". Chaincode events are read from the block height the module started
at. One `twins run` serves the module; tampering works on a copy of the home, the kill/restart test runs on the same
home after the read-only tests, and the test of a second home joining the chains runs last (after it, this home's
chains on the ledger have moved on, so this home could not anchor again: that is the point of one chain per org).

The machine rate is high enough that tools wear out within the first run: with the simulators' fixed seed,
plant1's machines reach the last minutes of a tool's life (P(failure) >= twins.alerts.MACHINE_RISK_ALERT) a few
hundred products in, i.e. ~10-20 s at 30 products/s. Nothing is injected: the twins see it in the readings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bringup import CHAINCODE_NAME
from tests.fabric_net import REPO, FabricNet, twinledger
from tests.integration.test_twins_cli import kill_leftovers, procs_using, wait_gone
from tests.ports import free_port_base
from twins.alerts import MACHINE_RISK_ALERT
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.model.twin import MachineTwin
from twins.readings import Reading

pytestmark = pytest.mark.integration

MACHINES, MONITORS = ("plant1:2",), ("hospital1:1",)
ASSETS = {"plant1.m1", "plant1.m2", "hospital1.bed1"}
MACHINE_RATE = 30  # products per second per machine (x14 values)
FIRST_RUN_S = 20


@dataclass
class Net:
    fabric: FabricNet
    home: Path
    first_run: subprocess.CompletedProcess
    start_block: int  # the channel's height before the module's first run: its events come from here on

    def cli(self, *args: str, home: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return twinledger(*args, home=home or self.home, timeout=timeout)

    def store(self, home: Path | None = None) -> ReadingStore:
        return ReadingStore((home or self.home) / "twins" / "readings.sqlite")

    def ledger(self, coro_fn: Any, org: str = "hospital2", user: str = "admin") -> Any:
        """Run ``coro_fn(contract, network)`` with a gateway to ``org``'s peer as ``user`` (by default another org
        than the anchoring ones: any member may read the anchors)."""
        channel = self.fabric.spec.channel

        async def go() -> Any:
            async with self.fabric.connect(org, user) as gw:
                return await coro_fn(gw.network(channel).contract(CHAINCODE_NAME), gw.network(channel))
        return asyncio.run(go())


def run_args(port: int, *extra: str) -> list[str]:
    args = ["twins", "run", "--port", str(port), "--machine-rate", str(MACHINE_RATE), "--monitor-rate", "2"]
    for m in MACHINES:
        args += ["--machines", m]
    for m in MONITORS:
        args += ["--monitors", m]
    return args + list(extra)


def channel_height(fabric: FabricNet) -> int:
    """The channel's block height, as `twinledger status` reads it from the peers' metrics."""
    return max(n["height"] or 0 for n in fabric.ok("status")["nodes"] if n["type"] == "peer")


@pytest.fixture(scope="module")
def net(fabric_net: FabricNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    home = fabric_net.client_home(tmp_path_factory.mktemp("twins-ledger") / "home")
    start_block = channel_height(fabric_net)
    try:
        first = twinledger(*run_args(free_port_base(3), "--duration", str(FIRST_RUN_S)), home=home, timeout=150)
        yield Net(fabric_net, home, first, start_block)
    finally:
        kill_leftovers(home / "twins")


async def _read(contract: Any, function: str, *args: str) -> dict[str, Any]:
    return json.loads(await contract.evaluate(function, *args))


async def _events(network: Any, name: str, start_block: int) -> list[dict[str, Any]]:
    """Every ``name`` chaincode event on the channel from ``start_block`` (replayed until the stream goes quiet)."""
    out = []
    stream = network.chaincode_events(CHAINCODE_NAME, start_block=start_block)
    try:
        while True:
            try:
                ev = await asyncio.wait_for(stream.__anext__(), timeout=2.0)
            except (asyncio.TimeoutError, StopAsyncIteration):
                return out
            if ev.event_name == name:
                out.append(dict(json.loads(ev.payload), tx_id=ev.transaction_id))
    finally:
        stream.close()


def _ledger_batches(net: Net, batch_ids: list[str]) -> dict[str, dict[str, Any]]:
    async def go(contract: Any, _network: Any) -> dict[str, dict[str, Any]]:
        return {b: await _read(contract, "twins:ReadSensorBatch", b) for b in batch_ids}
    return net.ledger(go)


def _ledger_record_hash(net: Net, batch_id: str) -> str | None:
    """The record hash the ledger holds for batch_id, None when it holds no such batch."""
    async def go(contract: Any, _network: Any) -> str | None:
        try:
            return (await _read(contract, "twins:ReadSensorBatch", batch_id))["record_hash"]
        except Exception as exc:  # the gateway's EvaluateError with the contract's NotFound
            assert "not found" in str(exc), exc
            return None
    return net.ledger(go)


def _query(home: Path, sql: str, *params: Any) -> list[tuple]:
    db = sqlite3.connect(home / "twins" / "readings.sqlite")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _store_batches(home: Path) -> list[tuple[str, str, str, str | None]]:
    """(batch_id, record_json, record_hash, anchor tx id) of every sealed batch, in org and batch order."""
    return _query(home, "SELECT b.batch_id, b.record_json, b.record_hash, a.tx_id FROM batches b LEFT JOIN anchors a "
                        "ON a.batch_id = b.batch_id ORDER BY b.org, b.batch_no")


def test_run_anchors_every_batch_on_the_ledger(net: Net) -> None:
    r = net.first_run
    assert r.returncode == 0, r.stderr
    assert f"to the ledger channel {net.fabric.spec.channel} (chaincode {CHAINCODE_NAME})" in r.stdout
    assert " 0 lost" in r.stdout
    batches = _store_batches(net.home)
    assert all(b[3] for b in batches), "no batch left waiting for its anchor"
    assert {b[0].split(":")[0] for b in batches} == {"plant1", "hospital1"}
    on_ledger = _ledger_batches(net, [b[0] for b in batches])
    for batch_id, record_json, record_hash, tx_id in batches:
        anchored = on_ledger[batch_id]
        # the ledger holds exactly the store's record (same canonical bytes, same hash), anchored by that org's
        # operator in the transaction the store remembers
        assert BatchRecord.from_dict(anchored["record"]).canonical() == record_json.encode()
        assert anchored["record_hash"] == record_hash == hashlib.sha256(record_json.encode()).hexdigest()
        assert anchored["tx_id"] == tx_id
        org = batch_id.split(":")[0]
        assert anchored["anchored_by"].startswith("x509::CN=operator,") and f"CN=ca.{org}," in anchored["anchored_by"]
    # the per-org chain, as the ledger holds it: contiguous, each record naming the previous one's hash, and the
    # store's first batch joined the org's chain on the ledger right after its last batch (or started it)
    for org in ("plant1", "hospital1"):
        chain = [on_ledger[b[0]]["record"] for b in batches if b[0].startswith(org + ":")]
        first = chain[0]["batch_no"]
        assert [c["batch_no"] for c in chain] == list(range(first, first + len(chain)))
        assert chain[0]["prev_record_hash"] == (_ledger_record_hash(net, f"{org}:{first - 1:010d}") if first > 1 else "")
        assert _ledger_record_hash(net, f"{org}:{first + len(chain):010d}") is None, "the store's last is the head"
        for prev, cur in zip(chain, chain[1:]):
            assert cur["prev_record_hash"] == on_ledger[prev["batch_id"]]["record_hash"]
        # a machine's 14 values of one product share a sequence number: one range per asset keeps records small
        assert all(len(json.dumps(c, separators=(",", ":"))) < 8000 for c in chain)
    assert any(k == "plant1.m1" for c in on_ledger.values() for k in c["record"]["seq_ranges"])


def test_verify_reading_against_the_ledger(net: Net) -> None:
    ok = net.cli("verify", "reading", "plant1.m1", "20", "--prop", "Torque", "--json")
    assert ok.returncode == 0, ok.stderr
    v = json.loads(ok.stdout)
    assert v["ok"] and v["anchor"].startswith(f"ledger channel {net.fabric.spec.channel}")
    anchor = v["readings"][0]["anchor"]
    on_ledger = _ledger_batches(net, [anchor["batch_id"]])[anchor["batch_id"]]
    assert anchor["tx_id"] == on_ledger["tx_id"] and anchor["record_hash"] == on_ledger["record_hash"]
    assert v["readings"][0]["merkle_root"] == on_ledger["record"]["merkle_root"]
    every = net.cli("verify", "reading", "hospital1.bed1", "1")
    assert every.returncode == 0 and "OK:" in every.stdout and f"on the ledger channel {net.fabric.spec.channel}" in every.stdout


def test_verify_fails_loudly_when_store_and_ledger_disagree(net: Net, tmp_path: Path) -> None:
    # a copy of the home (its links to the network's spec and identities too), so it reads the same ledger
    home = tmp_path / "copy"
    shutil.copytree(net.home, home, symlinks=True, ignore=shutil.ignore_patterns("logs"))
    db = sqlite3.connect(home / "twins" / "readings.sqlite")
    try:
        seq, batch_id = db.execute("SELECT seq, batch_id FROM readings WHERE asset='plant1.m2' AND prop='Torque' "
                                   "ORDER BY seq LIMIT 1 OFFSET 30").fetchone()
        # the store refuses UPDATEs; whoever tampers drops the trigger first
        db.execute("DROP TRIGGER readings_no_update")
        db.execute("UPDATE readings SET value = value + 0.01 WHERE asset='plant1.m2' AND prop='Torque' AND seq=?", (seq,))
        db.commit()
    finally:
        db.close()
    bad = net.cli("verify", "reading", "plant1.m2", str(seq), "--prop", "Torque", home=home)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "VERIFICATION FAILED against the ledger" in bad.stderr and "altered" in bad.stderr

    # the other side: a store whose batch record is consistent in itself (record hash recomputed) but is not the
    # record on the ledger — only the ledger's copy can tell
    db = sqlite3.connect(home / "twins" / "readings.sqlite")
    try:
        (record_json,) = db.execute("SELECT record_json FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
        forged = BatchRecord.from_dict(dict(json.loads(record_json), sealed_at_us=json.loads(record_json)["sealed_at_us"] + 1))
        db.execute("DROP TRIGGER batches_no_update")
        db.execute("UPDATE batches SET record_json=?, record_hash=? WHERE batch_id=?",
                   (forged.canonical().decode(), forged.record_hash(), batch_id))
        db.commit()
        other = db.execute("SELECT seq FROM readings WHERE batch_id=? AND asset='plant1.m2' AND prop='Torque' AND seq<>? "
                           "LIMIT 1", (batch_id, seq)).fetchone()[0]
    finally:
        db.close()
    forged_run = net.cli("verify", "reading", "plant1.m2", str(other), "--prop", "Torque", "--json", home=home)
    assert forged_run.returncode == 1
    answer = json.loads(forged_run.stdout)
    assert answer["ok"] is False and f"anchored record of {batch_id} differs from the local one" in answer["error"]
    # the original home is untouched and still verifies
    assert net.cli("verify", "reading", "plant1.m2", str(other), "--prop", "Torque").returncode == 0


def _conditions_seen(home: Path, asset: str) -> int:
    """Replay the stored readings of one machine through a fresh twin, product by product: at how many products
    the failure-risk condition held (what one alert per reading would have raised)."""
    twin, held, current = MachineTwin(asset, "plant1"), 0, None
    rows = _query(home, "SELECT org, asset, prop, seq, source_ts_us, value FROM readings WHERE asset=? "
                        "ORDER BY seq, prop", asset)
    for org, a, prop, seq, ts, value in rows:
        if current is not None and seq != current:
            p = twin.predict()
            held += bool(p and p["probability"] >= MACHINE_RISK_ALERT)
        twin.update(Reading(org, a, prop, int(seq), int(ts), float(value)))
        current = seq
    return held


def test_worn_tool_raises_one_ledger_alert_per_episode(net: Net) -> None:
    episodes = [e for e in store_alerts(net, pending_too=True) if e["kind"] == "failure-risk"]
    held = {a: _conditions_seen(net.home, a) for a in ("plant1.m1", "plant1.m2")}
    assert episodes, f"no failure-risk alert in {FIRST_RUN_S} s at {MACHINE_RATE} products/s (conditions held: {held})"
    assert all(e["tx_id"] for e in episodes), "every alert episode is on the ledger"

    async def go(contract: Any, network: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        alerts = [await _read(contract, "twins:ReadAlert", e["tx_id"]) for e in episodes]
        return alerts, await _events(network, "AlertRaised", net.start_block)
    alerts, raised = net.ledger(go)
    raised = [ev for ev in raised if ev["asset"] in ASSETS]
    for e, a in zip(episodes, alerts):
        assert (a["id"], a["org"], a["asset"], a["kind"]) == (e["tx_id"], "plant1", e["asset"], "failure-risk")
        assert a["score"] >= MACHINE_RISK_ALERT and "CN=operator," in a["raised_by"]
        # the alert names the anchored reading it was first seen at, and that reading verifies against the
        # ledger; a condition first met in the twin's state at a sealing (no single reading) names the batch
        # holding that state's hash instead (twins.anchoring.alert_outbox._evidence)
        if "reading" not in a["detail"]:
            assert a["detail"].get("batch_id") and a["detail"].get("twin_state_hash"), a["detail"]
            continue
        reading = a["detail"]["reading"]
        proof = net.cli("verify", "reading", e["asset"], str(reading["seq"]), "--prop", reading["prop"], "--json")
        assert proof.returncode == 0, proof.stderr
        assert json.loads(proof.stdout)["readings"][0]["batch_id"] == a["detail"]["batch_id"]
    # one alert per episode, not one per reading: the condition held at more products than there are alerts
    per_asset = {asset: sum(1 for e in episodes if e["asset"] == asset) for asset in held}
    assert all(per_asset[a] <= held[a] for a in held) and sum(held.values()) > len(episodes), (held, per_asset)
    assert sorted(ev["tx_id"] for ev in raised) == sorted(e["tx_id"] for e in store_alerts(net))

    status = json.loads(net.cli("twins", "status", "--json").stdout)
    assert {e["tx_id"] for e in episodes} <= {a["tx_id"] for a in status["ledger_alerts"]}
    text = net.cli("twins", "status").stdout
    assert "alerts recorded on the ledger" in text and episodes[0]["tx_id"] in text


def store_alerts(net: Net, pending_too: bool = False) -> list[dict[str, Any]]:
    """The bridge's alert episodes (twins.anchoring.alert_outbox), by default those on the ledger."""
    store = net.store()
    try:
        return [e for e in store.alerts() if e["tx_id"] or pending_too]
    finally:
        store.close()


def test_decide_and_acknowledge_an_alert(net: Net) -> None:
    alert = next(e for e in store_alerts(net) if e["kind"] == "failure-risk")
    asset = alert["asset"]
    other = net.cli("twins", "decide", asset, "--action", "schedule", "--as", "plant2")
    assert other.returncode == 1 and "access denied" in other.stderr  # only an operator of the alert's org
    decided = net.cli("twins", "decide", asset, "--action", "schedule", "--json")
    assert decided.returncode == 0, decided.stderr
    d = json.loads(decided.stdout)
    assert d["alert"] == alert["tx_id"] and d["decision"] == "schedule" and d["status"] == "pending"
    again = net.cli("twins", "decide", alert["tx_id"], "--action", "dismiss")
    assert again.returncode == 1 and "already decided" in again.stderr
    acked = net.cli("twins", "ack", d["id"], "--json")
    assert acked.returncode == 0, acked.stderr
    assert json.loads(acked.stdout)["status"] == "acknowledged"

    async def go(contract: Any, _network: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return await _read(contract, "twins:ReadAlert", alert["tx_id"]), await _read(contract, "twins:ReadDecision", d["id"])
    on_alert, on_decision = net.ledger(go)
    assert on_alert["status"] == "decided" and on_alert["decision_id"] == d["id"]
    assert on_decision["status"] == "acknowledged" and "CN=operator," in on_decision["acked_by"]


def test_sustainability_report_of_a_completed_day(net: Net) -> None:
    """The bridge reports completed UTC days only (one report per org and day, for ever). No day completes in a
    test, so the reporter runs here in process with tomorrow's date over the run's real store, on the real
    network, as plant1's operator — the code path the bridge runs every --report-every intervals."""
    from twins.anchoring.anchorer import connect_ledger
    from twins.anchoring.sustainability_report import day_of, due_reports
    from twins.bridge.mapping import load_mapping

    td = net.home / "twins"
    config = json.loads((td / "ledger.json").read_text())
    mapping = load_mapping(td / "sim" / "mapping.yaml")
    tomorrow_us = time.time_ns() // 1000 + 86_400_000_000

    async def report() -> tuple[list[Any], list[str], list[str]]:
        anchorer, gateways = connect_ledger(config)
        store = ReadingStore(td / "readings.sqlite")
        try:
            due = due_reports(store, mapping, tomorrow_us)
            first = [await anchorer.report_sustainability(r) for r in due]
            again = [await anchorer.report_sustainability(r) for r in due]  # resubmitted after a crash
            return due, first, again
        finally:
            store.close()
            for g in gateways:
                await g.close()
    due, first, again = asyncio.run(report())
    # plant1's machines sealed batches today (UTC), and hospital1 has no machines to report on
    assert {r.org for r in due} == {"plant1"} and due[-1].period == day_of(time.time_ns() // 1000)
    assert first == again  # the same report again is the first one, not a second
    metrics = due[0].metrics
    assert metrics["products"] > 0 and metrics["energy_kwh"] > 0 and metrics["last_batch_no"] >= metrics["first_batch_no"]

    async def go(contract: Any, _network: Any) -> dict[str, Any]:
        return await _read(contract, "twins:ReadSustainability", "plant1", due[0].period)
    stored = net.ledger(go, org="plant2", user="client")
    assert stored["metrics"] == metrics and stored["tx_id"] == first[0] and "CN=operator," in stored["reported_by"]


def _wait_anchored(home: Path, more_than: int, since: float, timeout: float = 60) -> dict[str, Any]:
    """The bridge's status once this run (status written after ``since``) has anchored more than ``more_than``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = json.loads((home / "twins" / "status.json").read_text())
            if st["time"] >= since and st.get("running") and st["counters"]["anchored"] > more_than:
                return st
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"no more than {more_than} anchored batches after {timeout} s")


def test_killed_bridge_and_killed_cli_resume_without_duplicates(net: Net) -> None:
    home, twins = net.home, net.home / "twins"
    port = free_port_base(3)
    argv = [sys.executable, "-m", "orchestrator.cli", *run_args(port), "--home", str(home)]
    before = store_alerts(net)

    # 1. the bridge is SIGKILLed mid-run: the CLI notices, stops the simulators and says which process died
    cli = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_anchored(home, 2, since=time.time())
        os.kill(json.loads((twins / "run.json").read_text())["pids"]["bridge"], signal.SIGKILL)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 1 and "the twins bridge stopped unexpectedly" in err, (out, err)
        assert wait_gone(twins) == []

        # 2. the CLI itself is SIGKILLed: its children get SIGTERM from the kernel (PR_SET_PDEATHSIG), the bridge
        #    seals and anchors what it holds, and nothing keeps running
        cli = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_anchored(home, 2, since=time.time())
        children = set(json.loads((twins / "run.json").read_text())["pids"].values())
        assert children <= set(procs_using(twins))
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        assert wait_gone(twins, 30) == [], "the simulators and the bridge die with the CLI"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        kill_leftovers(twins)

    # 3. a normal run resumes after the last sealed reading and anchors what was left pending
    again = net.cli(*run_args(port, "--duration", "5"))
    assert again.returncode == 0, again.stderr
    batches = _store_batches(home)
    assert all(b[3] for b in batches), "the batches sealed but not anchored at the kill were anchored at the restart"
    gaps = _query(home, "SELECT asset, prop, COUNT(*), MIN(seq), MAX(seq) FROM readings GROUP BY asset, prop")
    after = store_alerts(net)
    # every variable's readings are contiguous from its first sequence number: nothing lost, nothing twice
    assert all(n == hi - lo + 1 for _a, _p, n, lo, hi in gaps), gaps

    async def go(contract: Any, network: Any) -> tuple[dict[str, dict[str, Any]], list, list]:
        ledger = {b[0]: await _read(contract, "twins:ReadSensorBatch", b[0]) for b in batches}
        return (ledger, await _events(network, "SensorBatchAnchored", net.start_block),
                await _events(network, "AlertRaised", net.start_block))
    ledger, anchored_events, alert_events = net.ledger(go)
    alert_events = [ev for ev in alert_events if ev["asset"] in ASSETS]
    # each batch anchored exactly once (one anchoring event per batch id of this module's orgs since it started),
    # equal to the store's record
    assert sorted(e["batch_id"] for e in anchored_events if e["org"] in ("plant1", "hospital1")) == \
        sorted(b[0] for b in batches)
    for batch_id, record_json, record_hash, tx_id in batches:
        assert ledger[batch_id]["record_hash"] == record_hash and ledger[batch_id]["tx_id"] == tx_id
    for org in ("plant1", "hospital1"):
        chain = [ledger[b[0]] for b in batches if b[0].startswith(org + ":")]
        first = chain[0]["record"]["batch_no"]
        assert [c["record"]["batch_no"] for c in chain] == list(range(first, first + len(chain)))
        assert all(cur["record"]["prev_record_hash"] == prev["record_hash"] for prev, cur in zip(chain, chain[1:]))
    # alerts: exactly the store's episodes, each once; the episodes open before the restarts were not raised again
    assert sorted(e["tx_id"] for e in alert_events) == sorted(e["tx_id"] for e in after)
    assert {e["key"] for e in before} <= {e["key"] for e in after}
    keys = [(e["asset"], e["kind"], e["episode"]) for e in after]
    assert len(keys) == len(set(keys))


def test_a_second_twins_home_continues_the_orgs_chains(net: Net, tmp_path: Path) -> None:
    """Another twins state on the same network (another home, e.g. another test) anchoring for the same orgs: the
    ledger keeps one chain per org, so the new store's first batch of each org comes right after the org's last
    batch on the ledger and names its record hash; both stores' readings keep verifying against the ledger, and
    the first store, whose chains have moved on without it, is refused rather than forking them."""
    last_first = [b for b in _store_batches(net.home) if b[0].startswith("plant1:")][-1]
    other = net.fabric.client_home(tmp_path / "other")
    run = net.cli("twins", "run", "--port", str(free_port_base(3)), "--machines", "plant1:1", "--machine-rate", "10",
                  "--duration", "4", home=other)
    assert run.returncode == 0, run.stderr
    second = _store_batches(other)
    assert second and all(b[3] for b in second) and {b[0].split(":")[0] for b in second} == {"plant1"}
    first_no = int(last_first[0].split(":")[1])
    assert json.loads(second[0][1])["batch_no"] == first_no + 1
    assert json.loads(second[0][1])["prev_record_hash"] == last_first[2] == _ledger_record_hash(net, last_first[0])
    assert net.cli("verify", "reading", "plant1.m1", "3", home=other).returncode == 0
    assert net.cli("verify", "reading", "plant1.m1", "3").returncode == 0

    # the first home again: its next plant1 batch would fork the chain, so the bridge stops and says why
    again = net.cli(*run_args(free_port_base(3), "--duration", "15"))
    assert again.returncode == 1, again.stdout
    (line,) = again.stderr.strip().splitlines()
    assert "the twins bridge stopped unexpectedly" in line and "not the one that anchored the org's chain" in line, line
    assert wait_gone(net.home / "twins") == []
