"""Prometheus metrics of the twins processes (issue 7 item 4): the OPC-UA simulators and the bridge as real
processes over a real socket on 127.0.0.1, anchoring on the real Fabric network of the test run (``fabric_net``:
each org's batches as its operator); both ``/metrics`` endpoints are scraped
and every line is parsed strictly (``tests.unit.orchestrator.test_dashboard_metrics.parse`` plus the family
rules below). Then production is paused (SIGUSR1) so that the figures settle: what the simulators published, what
the bridge delivered and sealed, and what the store holds after the stop must be the same numbers per org; what it
anchored must be what the ledger holds.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from network.metrics import CONTENT_TYPE
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.twins_state import ledger_config
from tests.fabric_net import FabricNet
from tests.integration.test_twins_cli import CLI, kill_leftovers, procs_using, wait_gone
from tests.ports import free_port_base
from tests.unit.orchestrator.test_dashboard_metrics import parse
from twins.metrics import metrics_url
from twins.procs import Proc, bridge_argv, simulator_argv

pytestmark = pytest.mark.integration

MACHINES = ["plant1:2", "plant2:1"]
MONITORS = ["hospital1:1"]
ORGS = ("hospital1", "plant1", "plant2")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[dict[str, str], Samples]:
    """GET and parse strictly: the text format (``parse``), then per family: HELP right before TYPE, counters
    named *_total, finite and >= 0, no sample twice, histogram buckets ascending and cumulative up to +Inf ==
    _count, with a _sum."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE
        text = resp.read().decode()
    types, samples = parse(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            assert lines[i - 1].startswith(f"# HELP {line.split(' ')[2]} "), f"no HELP before {line!r}"
    out: Samples = {}
    for name, labels, value in samples:
        key = (name, tuple(sorted(labels.items())))
        assert key not in out, f"sample given twice: {key}"
        out[key] = value
        if types.get(name) == "counter":
            assert name.endswith("_total") and math.isfinite(value) and value >= 0, (name, value)
    for family in (n for n, k in types.items() if k == "histogram"):
        series: dict[tuple, list[tuple[float, float]]] = {}
        for (name, labels), value in out.items():
            if name == family + "_bucket":
                rest = tuple(kv for kv in labels if kv[0] != "le")
                series.setdefault(rest, []).append((float(dict(labels)["le"].replace("Inf", "inf")), value))
        assert series, f"{family} has no buckets (ours are exposed from the start)"
        for rest, buckets in series.items():
            bounds = [b for b, _ in buckets]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf, (family, bounds)
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{family}{rest}: buckets are not cumulative: {counts}"
            assert out[(family + "_count", rest)] == counts[-1] and (family + "_sum", rest) in out
    return types, out


def by_org(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["org"]: v for (n, labels), v in samples.items() if n == name}


def one(samples: Samples, name: str) -> float:
    return samples[(name, ())]


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def store_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {org: int(n) for org, n in db.execute("SELECT org, COUNT(*) FROM readings GROUP BY org")}
    finally:
        db.close()


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3).close()
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


BRIDGE_FAMILIES = {
    "readings_delivered_total": "counter", "readings_sealed_total": "counter", "readings_unsealed": "gauge",
    "duplicates_dropped_total": "counter", "gaps_total": "counter", "readings_replayed_total": "counter",
    "readings_lost_total": "counter", "connected": "gauge", "reconnects_total": "counter",
    "disconnects_total": "counter", "batches_sealed_total": "counter", "batches_anchored_total": "counter",
    "batches_pending": "gauge", "anchor_errors_total": "counter", "last_anchored_batch": "gauge",
    "anchor_submit_seconds": "histogram", "sensor_to_twin_seconds": "histogram", "alerts_raised_total": "counter",
    "sustainability_reports_total": "counter", "record_errors_total": "counter", "twins": "gauge",
}
SIM_FAMILIES = {
    "values_published_total": "counter", "values_per_second": "gauge", "history_rows": "gauge",
    "history_reads_total": "counter", "overloads_total": "counter", "paused": "gauge",
    "clients_connected": "gauge", "assets": "gauge",
}


def store_batches(path: Path) -> dict[str, list[tuple[str, str | None]]]:
    """org -> [(batch_id, anchor tx id or None)] in batch order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, list[tuple[str, str | None]]] = {}
        for org, bid, tx in db.execute("SELECT b.org, b.batch_id, a.tx_id FROM batches b LEFT JOIN anchors a "
                                       "ON a.batch_id = b.batch_id ORDER BY b.org, b.batch_no"):
            out.setdefault(org, []).append((bid, tx))
        return out
    finally:
        db.close()


def test_simulator_and_bridge_metrics_grow_and_match_the_store(fabric_net: FabricNet, tmp_path):
    config = tmp_path / "ledger.json"  # what `twins run` writes: each org's operator through its peer
    config.write_text(json.dumps(ledger_config(fabric_net.home, list(ORGS))))
    base = free_port_base(3)
    opc, sim_port, bridge_port = base, base + 1, base + 2
    sim_url, bridge_url = metrics_url(sim_port), metrics_url(bridge_port)
    home = tmp_path / "home"
    sim = Proc(simulator_argv(port=opc, data_dir=tmp_path / "sim", machines=MACHINES, monitors=MONITORS,
                              machine_rate=10, monitor_rate=4, mapping_out=tmp_path / "mapping.yaml",
                              metrics_port=sim_port, insecure=True), log=tmp_path / "sim.log")
    bridge = None
    try:
        assert sim.wait_ready(60)["metrics"] == sim_url
        bridge = Proc(bridge_argv(mapping=tmp_path / "mapping.yaml", home=home, ledger_config=config, interval=0.5,
                                  start_from="history", metrics_port=bridge_port, insecure=True),
                      log=tmp_path / "bridge.log")
        assert bridge.wait_ready(60)["metrics"] == bridge_url

        types, _ = scrape(bridge_url)
        assert types == {f"twinledger_bridge_{k}": v for k, v in BRIDGE_FAMILIES.items()}
        types, s = scrape(sim_url)
        assert types == {f"twinledger_simulator_{k}": v for k, v in SIM_FAMILIES.items()}
        assert by_org(s, "twinledger_simulator_assets") == {"hospital1": 1, "plant1": 2, "plant2": 1}

        # a first anchored batch for every org, then two scrapes 1.5 s apart
        wait_for("anchored batches", lambda: all(v > 0 for v in by_org(
            scrape(bridge_url)[1], "twinledger_bridge_batches_anchored_total").values()))
        _, b1 = scrape(bridge_url)
        _, s1 = scrape(sim_url)
        time.sleep(1.5)
        _, b2 = scrape(bridge_url)
        _, s2 = scrape(sim_url)
        for samples_1, samples_2, types_of in ((b1, b2, BRIDGE_FAMILIES), (s1, s2, SIM_FAMILIES)):
            for (name, labels), v in samples_1.items():  # counters and histogram counts never go down
                if name.endswith(("_total", "_bucket", "_count")):
                    assert samples_2[(name, labels)] >= v, (name, labels)
        for org in ORGS:
            for name, samples_1, samples_2 in (("twinledger_simulator_values_published_total", s1, s2),
                                               ("twinledger_bridge_readings_delivered_total", b1, b2),
                                               ("twinledger_bridge_readings_sealed_total", b1, b2),
                                               ("twinledger_bridge_batches_sealed_total", b1, b2),
                                               ("twinledger_bridge_batches_anchored_total", b1, b2)):
                assert by_org(samples_2, name)[org] > by_org(samples_1, name)[org], (name, org)
            assert by_org(s2, "twinledger_simulator_values_per_second")[org] > 0
        assert one(b2, "twinledger_bridge_sensor_to_twin_seconds_count") > one(b1, "twinledger_bridge_sensor_to_twin_seconds_count")
        assert one(s2, "twinledger_simulator_history_rows") > one(s1, "twinledger_simulator_history_rows") > 0
        assert one(s2, "twinledger_simulator_clients_connected") >= 1 and one(s2, "twinledger_simulator_paused") == 0
        assert one(s2, "twinledger_simulator_history_reads_total") > 0  # the bridge started from history
        assert one(b2, "twinledger_bridge_connected") == 1 and one(b2, "twinledger_bridge_readings_lost_total") == 0
        assert one(b2, "twinledger_bridge_reconnects_total") == 0
        assert by_org(b2, "twinledger_bridge_twins") == {"hospital1": 1, "plant1": 2, "plant2": 1}

        # pause production: the simulators' figures stop, and the bridge's settle on exactly the same numbers
        # (the exact relations between figures are checked once nothing moves: a scrape reads them one by one)
        sim.signal(signal.SIGUSR1)

        def paused():
            _, s = scrape(sim_url)
            if one(s, "twinledger_simulator_paused") == 1 and not any(by_org(s, "twinledger_simulator_values_per_second").values()):
                return by_org(s, "twinledger_simulator_values_published_total")
            return None

        published = wait_for("the simulators to pause", paused, timeout=20)
        assert by_org(scrape(sim_url)[1], "twinledger_simulator_values_published_total") == published

        def settled():
            _, b = scrape(bridge_url)
            if (by_org(b, "twinledger_bridge_readings_delivered_total") == published
                    and one(b, "twinledger_bridge_readings_unsealed") == 0
                    and not any(by_org(b, "twinledger_bridge_batches_pending").values())):
                return b
            return None

        b = wait_for("the bridge to deliver, seal and anchor everything published", settled, timeout=30)
        assert by_org(b, "twinledger_bridge_readings_sealed_total") == published
        # a fresh store joins each org's chain on the ledger after its last batch and anchors in order, so the last
        # anchored batch number is the store's first one + the count - 1
        anchored = by_org(b, "twinledger_bridge_batches_anchored_total")
        assert by_org(b, "twinledger_bridge_batches_sealed_total") == anchored
        batches = store_batches(home / "readings.sqlite")
        first_no = {o: int(v[0][0].split(":")[1]) for o, v in batches.items()}
        assert by_org(b, "twinledger_bridge_last_anchored_batch") == {o: first_no[o] + n - 1 for o, n in anchored.items()}
        assert by_org(b, "twinledger_bridge_anchor_submit_seconds_count") == anchored
        assert one(b, "twinledger_bridge_sensor_to_twin_seconds_count") == sum(published.values())
        assert store_counts(home / "readings.sqlite") == {o: int(n) for o, n in published.items()}
        assert one(b, "twinledger_bridge_readings_lost_total") == 0

        assert bridge.stop(timeout=20) == 0
        # after the stop: nothing more arrived, the store holds what was delivered, the ledger what was anchored
        assert store_counts(home / "readings.sqlite") == {o: int(n) for o, n in published.items()}
        batches = store_batches(home / "readings.sqlite")
        assert Counter({o: len(v) for o, v in batches.items()}) == Counter(
            {o: int(n) for o, n in by_org(b, "twinledger_bridge_batches_anchored_total").items()})
        assert all(tx for v in batches.values() for _, tx in v)
        last = {o: v[-1] for o, v in batches.items()}
        with fabric_net.connect_sync("hospital2", "client") as gw:
            contract = gw.network(fabric_net.spec.channel).contract(CHAINCODE_NAME)
            for org, (bid, tx) in last.items():
                assert json.loads(contract.evaluate("twins:ReadSensorBatch", bid))["tx_id"] == tx
                assert int(bid.split(":")[1]) == by_org(b, "twinledger_bridge_last_anchored_batch")[org]
        assert refused(bridge_url), "the bridge's metrics endpoint ends with it"
        assert one(scrape(sim_url)[1], "twinledger_simulator_paused") == 1
    finally:
        if bridge is not None:
            bridge.stop(timeout=20)
        code = sim.stop(timeout=20)
    assert code == 0 and refused(sim_url)


def test_a_taken_metrics_port_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        sim = Proc(simulator_argv(port=free_port_base(1), data_dir=tmp_path / "sim", machines=["plant1:1"],
                                  metrics_port=port, insecure=True), log=tmp_path / "sim.log")
        try:
            with pytest.raises(RuntimeError, match="exited with 1 before it was ready"):
                sim.wait_ready(60)
        finally:
            sim.stop()
    log = (tmp_path / "sim.log").read_text()
    assert f"error: cannot serve the metrics of the simulators on 127.0.0.1:{port}" in log and "--metrics-port" in log
    assert "Traceback" not in log


def test_twins_run_serves_metrics_next_to_the_opcua_port(fabric_net: FabricNet, tmp_path):
    home = fabric_net.client_home(tmp_path / "home")
    port = free_port_base(3)
    argv = [*CLI, "twins", "run", "--json", "--port", str(port), "--machines", "plant1:1",
            "--machine-rate", "10", "--home", str(home)]

    # a taken default metrics port (--port + 2) stops the run before anything starts, naming the way out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 2))
        taken.listen(1)
        p = subprocess.run(argv + ["--duration", "2"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert f"port {port + 2}" in line and "metrics of the bridge" in line and "--metrics-port" in line
    assert procs_using(home) == []

    cli = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = None
        deadline = time.monotonic() + 60
        while running is None:
            assert time.monotonic() < deadline and cli.poll() is None, "no running line"
            event = json.loads(cli.stdout.readline())  # type: ignore[union-attr]
            if event.get("event") == "running":
                running = event
        urls = {"simulators": metrics_url(port + 1), "bridge": metrics_url(port + 2)}
        assert running["metrics"] == urls
        assert json.loads((home / "twins" / "run.json").read_text())["metrics"] == urls
        wait_for("readings in the bridge's metrics", lambda: by_org(
            scrape(urls["bridge"])[1], "twinledger_bridge_readings_delivered_total").get("plant1", 0) > 0)
        assert by_org(scrape(urls["simulators"])[1], "twinledger_simulator_values_published_total")["plant1"] > 0
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 0
        assert wait_gone(home) == []
        assert refused(urls["simulators"]) and refused(urls["bridge"])
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        kill_leftovers(home)
