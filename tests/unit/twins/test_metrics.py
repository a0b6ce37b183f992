"""twins.metrics in process: the bridge's figures follow the runtime (delivered, sealed, anchored, resubmitted
after a restart, latencies), scrape-time collection never lowers a counter, the simulators' history keeps its row
count, and `twins run` derives its metrics ports from the OPC-UA port."""

from __future__ import annotations

import asyncio
import time

import pytest
from asyncua import ua

from orchestrator.cli import build_parser
from orchestrator.cli_twins_run import metrics_ports
from tests.unit.orchestrator.test_dashboard_metrics import parse
from tests.unit.twins.fakes import MemoryAnchorer
from twins.bridge.mapping import parse_mapping
from twins.metrics import ScrapeRegistry, set_total
from twins.readings import Reading, us_to_dt
from twins.runtime import TwinRuntime
from twins.simulators.history import SeqHistoryStore

MAPPING = parse_mapping({
    "assets": {"a.x": {"org": "orga", "kind": "generic"}, "b.y": {"org": "orgb", "kind": "generic"},
               "b.z": {"org": "orgb", "kind": "generic"}},
    "nodes": {"ns=2;s=a.x.T": {"asset": "a.x", "property": "T"}, "ns=2;s=b.y.T": {"asset": "b.y", "property": "T"},
              "ns=2;s=b.z.T": {"asset": "b.z", "property": "T"}},
})


def values(rt: TwinRuntime) -> dict[tuple[str, tuple], float]:
    _, samples = parse(rt.metrics.registry.exposition())
    return {(name, tuple(sorted(labels.items()))): v for name, labels, v in samples}


def org(name: str, o: str) -> tuple[str, tuple]:
    return name, (("org", o),)


def feed(rt: TwinRuntime, asset: str, o: str, seqs: range, age_s: float = 0.02) -> None:
    ts = time.time_ns() // 1000 - int(age_s * 1e6)
    for s in seqs:
        rt.on_reading(Reading(o, asset, "T", s, ts + s, 20.0 + s))


def test_bridge_metrics_follow_the_runtime_and_a_restart(tmp_path) -> None:
    anchorer = MemoryAnchorer()
    rt = TwinRuntime(MAPPING, tmp_path / "r.sqlite", anchorer, interval=0.05, report_every=0)
    v = values(rt)  # every org is there from the start, at 0
    assert v[org("twinledger_bridge_readings_delivered_total", "orgb")] == 0
    assert v[("twinledger_bridge_twins", (("kind", "generic"), ("org", "orgb")))] == 2
    assert v[("twinledger_bridge_anchor_submit_seconds_count", (("org", "orga"),))] == 0

    feed(rt, "a.x", "orga", range(1, 4))
    feed(rt, "b.y", "orgb", range(1, 6))
    v = values(rt)
    assert v[org("twinledger_bridge_readings_delivered_total", "orga")] == 3
    assert v[org("twinledger_bridge_readings_delivered_total", "orgb")] == 5
    assert v[("twinledger_bridge_readings_unsealed", ())] == 8
    assert v[("twinledger_bridge_sensor_to_twin_seconds_count", ())] == 8
    # fed 20 ms after their source time: none is under 5 ms, all are under 1 s
    assert v[("twinledger_bridge_sensor_to_twin_seconds_bucket", (("le", "0.005"),))] == 0
    assert v[("twinledger_bridge_sensor_to_twin_seconds_bucket", (("le", "1"),))] == 8

    # sealed without a submitter (as if the process died before anchoring): sealed, not anchored
    rt.anchor_once()
    v = values(rt)
    assert v[("twinledger_bridge_readings_unsealed", ())] == 0
    assert v[org("twinledger_bridge_readings_sealed_total", "orgb")] == 5
    assert v[org("twinledger_bridge_batches_sealed_total", "orga")] == 1
    assert v[org("twinledger_bridge_batches_anchored_total", "orga")] == 0
    rt.close()

    # the next start resubmits it (counted as anchored, with its submit time), then anchors new batches
    async def run() -> TwinRuntime:
        rt = TwinRuntime(MAPPING, tmp_path / "r.sqlite", anchorer, interval=0.05, report_every=0)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run_anchoring(stop))
        await asyncio.sleep(0.02)
        feed(rt, "b.z", "orgb", range(1, 3))
        await asyncio.sleep(0.2)
        stop.set()
        await task
        rt.close()
        return rt

    rt = asyncio.run(run())
    v = values(rt)
    assert v[org("twinledger_bridge_readings_delivered_total", "orgb")] == 2  # this run's
    assert v[org("twinledger_bridge_batches_sealed_total", "orgb")] == 1
    assert v[org("twinledger_bridge_batches_anchored_total", "orgb")] == 2  # the resubmitted one and the new one
    assert v[org("twinledger_bridge_batches_anchored_total", "orga")] == 1
    assert v[org("twinledger_bridge_last_anchored_batch", "orgb")] == 2
    assert v[org("twinledger_bridge_last_anchored_batch", "orga")] == 1
    assert v[org("twinledger_bridge_batches_pending", "orgb")] == 0
    assert v[("twinledger_bridge_anchor_submit_seconds_count", (("org", "orgb"),))] == 2
    assert len(anchorer.entries) == 3


def test_scrape_time_collection_never_lowers_a_counter() -> None:
    reg = ScrapeRegistry()
    c = reg.counter("jobs_total", "jobs").labels()
    kept = {"n": 5}
    calls = []
    reg.before_scrape(lambda: (calls.append(1), set_total(c, kept["n"])))
    assert ("jobs_total", {}, 5.0) in parse(reg.exposition())[1]
    kept["n"] = 3  # a total kept elsewhere that went back (e.g. a restarted owner): the counter stays
    assert ("jobs_total", {}, 5.0) in parse(reg.exposition())[1]
    kept["n"] = 9
    assert ("jobs_total", {}, 9.0) in parse(reg.exposition())[1]
    assert len(calls) == 3  # once per rendering


def test_simulator_history_keeps_its_row_count_and_counts_reads(tmp_path) -> None:
    h = SeqHistoryStore(tmp_path / "h.sqlite", retention_s=10.0)
    now = time.time_ns() // 1000
    h.append([("m.T", 1, now - 60_000_000, 1.0, now), ("m.T", 2, now - 50_000_000, 2.0, now)], {})
    assert h.rows is None and h.count_rows() == 2  # counted once on demand ...
    h._last_prune = time.monotonic() - 61  # ... then kept current by append and by the minute's pruning
    h.append([("m.T", 3, now, 3.0, now)], {})
    assert h.rows == 1 == h.count_rows()  # 3 rows, less seq 1 and 2 (past retention); seq 3 is the newest
    values_, _ = asyncio.run(h.read_node_history(ua.NodeId("m.T", 2), us_to_dt(now - 1), us_to_dt(now + 1), 0))
    assert [dv.Value.Value for dv in values_] == [3.0] and h.reads == 1  # a Double scalar (the default type)
    asyncio.run(h.stop())


@pytest.mark.parametrize("argv, ports", [
    ([], (4841, 4842)), (["--port", "5000"], (5001, 5002)), (["--metrics-port", "9100"], (9100, 9101)),
    (["--metrics-port", "0"], (0, 0)),
])
def test_twins_run_metrics_ports(argv: list[str], ports: tuple[int, int]) -> None:
    args = build_parser().parse_args(["twins", "run", *argv])
    assert metrics_ports(args.port, args.metrics_port) == ports
