"""What the twins put on the ledger, in process: batch records that fit the contract's argument cap, alert episodes
raised once (and once only across restarts), sustainability reports of completed days, and the runtime that ties
them to sealing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from chaincode.arguments import MAX_ARGUMENT_BYTES as CONTRACT_MAX_ARGUMENTS, limit_arguments
from chaincode.twins import MAX_RECORD_BYTES as CONTRACT_MAX_RECORD, check_batch_record
from twins.alerts import MACHINE_RISK_ALERT
from tests.unit.twins.fakes import MemoryAnchorer
from twins.anchoring import Batcher, ReadingStore, verify_reading
from twins.anchoring.alert_outbox import AlertRecord, AlertTracker
from twins.anchoring.anchorer import AnchorConflict, FabricAnchorer
from twins.anchoring.record import MAX_ARGUMENT_BYTES, MAX_RECORD_BYTES, compact_ranges
from twins.anchoring.sustainability_report import SustainabilityReport, day_of, due_reports
from twins.bridge.mapping import parse_mapping
from twins.model.twin import MachineTwin
from twins.readings import Reading
from twins.runtime import TwinRuntime

DAY_US = 86_400_000_000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def test_limits_are_the_contracts() -> None:
    assert (MAX_RECORD_BYTES, MAX_ARGUMENT_BYTES) == (CONTRACT_MAX_RECORD, CONTRACT_MAX_ARGUMENTS)


def test_compact_ranges_folds_an_asset_only_when_its_variables_agree() -> None:
    assert compact_ranges({"m1/Torque": [3, 9], "m1/ToolWear": [3, 9], "bed1/HR": [1, 4], "bed1/Temp": [2, 2]}) == {
        "bed1/HR": [1, 4], "bed1/Temp": [2, 2], "m1": [3, 9]}


def _machine_readings(org: str, n_assets: int, products: range, props: int = 14) -> list[Reading]:
    return [Reading(org, f"{org}.m{a}", f"P{p:02d}", seq, T0 + seq * 1000 + p, float(seq * p))
            for seq in products for a in range(1, n_assets + 1) for p in range(props)]


def test_an_interval_too_big_for_one_record_becomes_chained_batches_that_each_fit(tmp_path) -> None:
    store = ReadingStore(tmp_path / "r.sqlite")
    # 120 machines: their state hashes alone are ~10 KB, more than one record may hold
    states = {f"plant1.m{a}": ("{}", hashlib.sha256(str(a).encode()).hexdigest()) for a in range(1, 121)}
    b = Batcher(store, lambda org: states)
    readings = _machine_readings("plant1", 120, range(1, 4))
    for r in readings:
        b.add(r)
    sealed = b.seal_all()
    assert len(sealed) > 1
    prev = ""
    for i, (rec, part) in enumerate(sealed, 1):
        assert rec.batch_no == i and rec.prev_record_hash == prev
        prev = rec.record_hash()
        # what the real contract checks: the argument cap and the record's shape
        limit_arguments([rec.batch_id, rec.canonical().decode()])
        check_batch_record(rec.batch_id, json.loads(rec.canonical()))
        assert set(rec.twin_state_hashes) == {r.asset for r in part}
    key = lambda r: (r.asset, r.prop, r.seq)  # noqa: E731
    assert sorted((r for _, part in sealed for r in part), key=key) == sorted(readings, key=key)
    anchorer = MemoryAnchorer()
    for rec, _ in sealed:
        store.record_anchor(rec.batch_id, asyncio.run(anchorer.submit_anchor(rec)), 1)
    for asset in ("plant1.m1", "plant1.m120"):
        assert len(asyncio.run(verify_reading(store, anchorer, asset, 2))) == 14
    store.close()


def test_a_single_asset_that_cannot_fit_is_an_error_not_a_refused_anchor(tmp_path) -> None:
    store = ReadingStore(tmp_path / "r.sqlite")
    b = Batcher(store)
    # 300 variables with different ranges: no folding, far over the cap
    for p in range(300):
        b.add(Reading("plant1", "plant1.big", f"Var{p:03d}", p + 1, T0 + p, 1.0))
    with pytest.raises(ValueError, match="plant1.big in one interval do not fit one ledger record"):
        b.seal_all()
    store.close()


# --- alert episodes ---------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _worn(asset: str, wear: float) -> dict[str, Any]:
    t = MachineTwin(asset, "plant1")
    for i, (prop, v) in enumerate({"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0,
                                   "Torque": 40.0, "ToolWear": wear}.items(), 1):
        t.update(Reading("plant1", asset, prop, 1, T0 + i, v))
    return t.snapshot()


def test_one_alert_per_episode_with_hysteresis_and_across_restarts(tmp_path) -> None:
    store, clock = ReadingStore(tmp_path / "r.sqlite"), Clock()
    worn, fresh = _worn("plant1.m1", 236.0), _worn("plant1.m1", 10.0)
    assert worn["prediction"]["probability"] >= MACHINE_RISK_ALERT > fresh["prediction"]["probability"]
    tracker = AlertTracker(store, clear_after_s=30, clock=clock)
    opened = tracker.observe("plant1", {"plant1.m1": worn})
    assert [(a.key, a.kind, a.episode) for a in opened] == [("plant1.m1/failure-risk/1", "failure-risk", 1)]
    assert float(opened[0].score) == pytest.approx(worn["prediction"]["probability"], abs=1e-6)
    for _ in range(5):  # the condition persists: no new alert
        clock.t += 1
        assert tracker.observe("plant1", {"plant1.m1": worn}) == []
    clock.t += 1
    assert tracker.observe("plant1", {"plant1.m1": fresh}) == []  # cleared for less than 30 s ...
    clock.t += 10
    assert tracker.observe("plant1", {"plant1.m1": worn}) == []  # ... and back: the same episode
    # a restart while it holds: the open episode comes back from the store, nothing new to raise
    tracker = AlertTracker(store, clear_after_s=30, clock=clock)
    assert tracker.observe("plant1", {"plant1.m1": worn}) == []
    assert [a.key for a in tracker.pending()] == ["plant1.m1/failure-risk/1"]  # never reached the ledger
    clock.t += 1
    tracker.observe("plant1", {"plant1.m1": fresh})
    clock.t += 31
    tracker.observe("plant1", {"plant1.m1": fresh})  # cleared for 31 s: the episode ends
    assert store.alerts(open_only=True) == []
    clock.t += 1
    second = tracker.observe("plant1", {"plant1.m1": worn})
    assert [a.key for a in second] == ["plant1.m1/failure-risk/2"]
    store.close()


def test_a_condition_seen_between_sealings_names_its_anchored_reading(tmp_path) -> None:
    store = ReadingStore(tmp_path / "r.sqlite")
    b = Batcher(store)
    for seq in (41, 42, 43):
        b.add(Reading("plant1", "plant1.m1", "ToolWear", seq, T0 + seq, 230.0 + seq % 10))
    (rec, _), = b.seal_all()
    seen = {("plant1.m1", "failure-risk"): {"asset": "plant1.m1", "org": "plant1", "kind": "failure-risk",
                                            "value": 0.31, "level": "elevated", "label": "m", "detail": "P 0.31",
                                            "reading": {"prop": "ToolWear", "seq": 42}}}
    # at sealing the tool was already replaced (fresh snapshot): the alert still opens, from the reading
    (alert,) = AlertTracker(store).observe("plant1", {"plant1.m1": _worn("plant1.m1", 5.0)}, [rec], seen)
    assert alert.detail["reading"] == {"prop": "ToolWear", "seq": 42} and alert.detail["batch_id"] == rec.batch_id
    assert alert.score == "0.310000"
    store.close()


@dataclass
class FakeLedger:
    """Fabric's rules that matter to raise_alert: the tx id is SHA-256(nonce || creator); a known tx id is refused
    at endorsement ("duplicate transaction found"); RaiseAlert stores the alert under its tx id."""

    creator: bytes = b"operator@plant1"
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)  # ordered, not yet committed
    submits: int = 0

    def contract(self) -> Any:
        ledger = self

        class Tx:
            def __init__(self, tx_id: str, args: tuple) -> None:
                self.tx_id, self.args, self.result = tx_id, args, b""

            async def submit(self) -> Any:
                ledger.submits += 1
                asset, kind, score, detail = self.args
                ledger.alerts[self.tx_id] = {"id": self.tx_id, "asset": asset, "kind": kind, "score": float(score)}

                class Commit:
                    async def status(self_inner) -> Any:
                        return type("S", (), {"successful": True})()
                return Commit()

        class Proposal:
            def __init__(self, fn: str, args: tuple, nonce: bytes) -> None:
                self.fn, self.args = fn, args
                self.transaction_id = hashlib.sha256(nonce + ledger.creator).hexdigest()

            async def endorse(self) -> Tx:
                if self.transaction_id in ledger.alerts or self.transaction_id in ledger.in_flight:
                    raise RuntimeError(f"duplicate transaction found [{self.transaction_id}]")
                return Tx(self.transaction_id, self.args)

        class Contract:
            def new_proposal(self, fn: str, *args: Any, nonce: bytes | None = None) -> Proposal:
                return Proposal(fn, args, nonce or b"random")

            async def evaluate(self, fn: str, *args: str) -> bytes:
                assert fn == "twins:ReadAlert"
                if args[0] not in ledger.alerts:
                    raise RuntimeError(f"chaincode response 500, alert {args[0]!r} not found")
                return json.dumps(ledger.alerts[args[0]]).encode()

        return Contract()


def _alert(nonce: bytes = b"n" * 24) -> AlertRecord:
    return AlertRecord("plant1.m1/failure-risk/1", "plant1", "plant1.m1", "failure-risk", 1, "0.250000",
                       {"level": "elevated"}, nonce)


def test_fabric_alert_resubmitted_after_a_crash_is_not_raised_twice() -> None:
    ledger = FakeLedger()
    anchorer = FabricAnchorer(ledger.contract())
    tx = asyncio.run(anchorer.raise_alert(_alert()))
    assert tx == hashlib.sha256(b"n" * 24 + ledger.creator).hexdigest() and ledger.submits == 1
    # the bridge died after the commit, before writing the tx id: the same nonce finds it on the ledger
    assert asyncio.run(anchorer.raise_alert(_alert())) == tx and ledger.submits == 1
    assert len(ledger.alerts) == 1


def test_fabric_alert_still_being_ordered_is_awaited_not_resubmitted() -> None:
    ledger = FakeLedger()
    alert = _alert(b"m" * 24)
    tx = hashlib.sha256(alert.nonce + ledger.creator).hexdigest()
    ledger.in_flight.add(tx)  # endorsed and ordered by the previous run, committing now

    async def go() -> str:
        async def commit_later() -> None:
            await asyncio.sleep(0.6)
            ledger.in_flight.discard(tx)
            ledger.alerts[tx] = {"id": tx}
        task = asyncio.create_task(commit_later())
        try:
            return await FabricAnchorer(ledger.contract()).raise_alert(alert)
        finally:
            await task
    assert asyncio.run(go()) == tx and ledger.submits == 0


def test_the_fake_anchorer_records_alerts_and_reports_once() -> None:
    report = SustainabilityReport("plant1", "2026-01-01", {"energy_kwh": 1.5, "products": 10})
    anchorer = MemoryAnchorer()
    first = asyncio.run(anchorer.raise_alert(_alert()))
    assert asyncio.run(anchorer.raise_alert(_alert())) == first
    rep = asyncio.run(anchorer.report_sustainability(report))
    assert asyncio.run(anchorer.report_sustainability(report)) == rep
    with pytest.raises(AnchorConflict, match="already reported 2026-01-01 with other figures"):
        asyncio.run(anchorer.report_sustainability(SustainabilityReport("plant1", "2026-01-01", {"energy_kwh": 2.0})))
    assert list(anchorer.alerts) == [_alert().key] and list(anchorer.reports) == [report.key]


# --- sustainability reports ------------------------------------------------------------------------------
MAPPING = parse_mapping({
    "sustainability": {"grid_kg_co2_per_kwh": 0.5},
    "assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}, "hospital1.bed1": {"org": "hospital1", "kind": "patient"}},
    "nodes": {"ns=2;s=plant1.m1.Energy": {"asset": "plant1.m1", "property": "Energy"},
              "ns=2;s=hospital1.bed1.HR": {"asset": "hospital1.bed1", "property": "HR"}},
})


def _seal_day(store: ReadingStore, twin: MachineTwin, start_seq: int, at_us: int, energies: list[float]) -> None:
    b = Batcher(store, lambda org: {twin.asset: twin.state_json_and_hash()} if org == "plant1" else {})
    for i, e in enumerate(energies):
        seq = start_seq + i
        for r in (Reading("plant1", twin.asset, "ProductType", seq, at_us + i, 0.0),
                  Reading("plant1", twin.asset, "Energy", seq, at_us + i, e)):
            twin.update(r)
            b.add(r)
        b.seal_all(now_us=at_us + i + 1)


def test_reports_cover_completed_days_from_sealed_states_only(tmp_path) -> None:
    store = ReadingStore(tmp_path / "r.sqlite")
    twin = MachineTwin("plant1.m1", "plant1")
    _seal_day(store, twin, 1, T0 + 3_600_000_000, [10.0, 12.0, 15.0])  # day 1: +5 kWh after the first reading
    _seal_day(store, twin, 4, T0 + DAY_US + 60_000_000, [16.0, 20.0])  # day 2: +5 kWh, 2 products
    assert due_reports(store, MAPPING, T0 + DAY_US + 120_000_000) != []
    day1, = due_reports(store, MAPPING, T0 + DAY_US + 120_000_000)  # day 2 is still running: not due
    assert (day1.org, day1.period) == ("plant1", day_of(T0))
    assert day1.metrics["energy_kwh"] == pytest.approx(5.0) and day1.metrics["products"] == 3
    assert day1.metrics["co2_kg"] == pytest.approx(2.5)  # the mapping's grid factor
    assert (day1.metrics["first_batch_no"], day1.metrics["last_batch_no"]) == (1, 3)
    store.record_report("plant1", day1.period, day1.metrics_json(), "tx1", 1)
    day2, = due_reports(store, MAPPING, T0 + 2 * DAY_US + 1)
    assert day2.period == day_of(T0 + DAY_US) and day2.metrics["energy_kwh"] == pytest.approx(5.0)
    assert day2.metrics["products"] == 2 and (day2.metrics["first_batch_no"], day2.metrics["last_batch_no"]) == (4, 5)
    # the contract's own rules for the metrics: names and non-negative numbers
    from chaincode.fields import check_metrics
    check_metrics("metrics", json.loads(day2.metrics_json()), non_negative=True)
    store.close()


# --- the runtime -----------------------------------------------------------------------------------------
def _product(asset: str, seq: int, wear: float) -> list[Reading]:
    vals = {"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0, "Torque": 40.0,
            "ToolWear": wear}
    return [Reading("plant1", asset, p, seq, T0 + seq * 1000 + i, v) for i, (p, v) in enumerate(vals.items())]


def test_runtime_raises_a_worn_tool_once_even_if_it_is_replaced_before_sealing(tmp_path) -> None:
    mapping = parse_mapping({"assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
                             "nodes": {"ns=2;s=x": {"asset": "plant1.m1", "property": "ToolWear"}}})
    anchorer = MemoryAnchorer()

    async def run(wears: list[float]) -> TwinRuntime:
        rt = TwinRuntime(mapping, tmp_path / "r.sqlite", anchorer, interval=0.05, report_every=0)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run_anchoring(stop))
        start = max((p[0] for p in rt.positions().values()), default=0) + 1
        for i, w in enumerate(wears):
            for r in _product("plant1.m1", start + i, w):
                rt.on_reading(r)
        await asyncio.sleep(0.2)
        stop.set()
        await task
        rt.close()
        return rt

    # worn for three products, then a new tool, all within one interval: the sealed state is a fresh tool
    rt = asyncio.run(run([150.0, 234.0, 236.0, 238.0, 2.0, 4.0]))
    assert rt.alerts_raised == 1 and len(anchorer.alerts) == 1
    (entry,) = anchorer.alerts.values()
    assert entry["alert"]["detail"]["reading"]["seq"] == 2  # the first product seen worn
    rt = asyncio.run(run([6.0, 8.0]))  # a restart with a fresh tool: nothing new
    assert rt.alerts_raised == 0 and len(anchorer.alerts) == 1
    store = ReadingStore(tmp_path / "r.sqlite")
    (ep,) = store.alerts()
    assert ep["tx_id"] == entry["tx_id"] and store.pending_batches() == []
    store.close()


def test_cli_offers_exactly_the_contracts_decisions() -> None:
    from chaincode.twins import DECISIONS
    from orchestrator.cli_twins_decide import ACTIONS

    assert set(ACTIONS) == DECISIONS
