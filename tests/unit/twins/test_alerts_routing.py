"""Twin alerts from snapshots, per-org anchor routing, the store's latest anchors, and restoring one twin."""

from __future__ import annotations

import asyncio

import pytest

from twins.alerts import MACHINE_RISK_ALERT, NEWS2_ALERT_BANDS, twin_alerts
from tests.unit.twins.fakes import MemoryAnchorer
from twins.anchoring import Batcher, ReadingStore
from twins.anchoring.anchorer import OrgRoutedAnchorer
from twins.bridge.mapping import parse_mapping
from twins.model.twin import MachineTwin, PatientTwin
from twins.readings import Reading
from twins.runtime import load_twin

T0 = 1_700_000_000_000_000


def _machine(asset: str, wear: float) -> MachineTwin:
    """A machine twin fed AI4I-range values; tool wear decides how close it is to a tool-wear failure."""
    t = MachineTwin(asset, "plant1")
    for i, (prop, v) in enumerate({"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0,
                                   "Torque": 40.0, "ToolWear": wear}.items(), 1):
        t.update(Reading("plant1", asset, prop, 1, T0 + i, v))
    return t


def _patient(asset: str, vitals: dict[str, float]) -> PatientTwin:
    t = PatientTwin(asset, "hospital1")
    for i, (prop, v) in enumerate(vitals.items(), 1):
        t.update(Reading("hospital1", asset, prop, 1, T0 + i, v))
    return t


def test_alerts_follow_the_models_not_the_asset_names():
    worn, fresh = _machine("plant1.m1", 235.0), _machine("plant1.m2", 10.0)
    sick = _patient("hospital1.bed1", {"HR": 135.0, "Resp": 26.0, "O2Sat": 90.0, "SBP": 95.0, "Temp": 39.5})
    well = _patient("hospital1.bed2", {"HR": 70.0, "Resp": 16.0, "O2Sat": 98.0, "SBP": 125.0, "Temp": 36.8})
    snaps = {t.asset: t.snapshot() for t in (worn, fresh, sick, well)}
    alerts = twin_alerts(snaps)
    by_asset = {a["asset"]: a for a in alerts}
    for asset, s in snaps.items():
        p = (s.get("prediction") or {}).get("probability")
        band = (s.get("risk") or {}).get("risk")
        expected = (p is not None and p >= MACHINE_RISK_ALERT) or band in NEWS2_ALERT_BANDS
        assert (asset in by_asset) == expected, (asset, p, band)
    assert "plant1.m1" in by_asset and "hospital1.bed1" in by_asset, "the worn tool and the deteriorating patient"
    assert by_asset["plant1.m1"]["label"] == snaps["plant1.m1"]["prediction"]["model"]
    assert by_asset["hospital1.bed1"]["value"] == snaps["hospital1.bed1"]["risk"]["score"]


def _records(store: ReadingStore, batches: list[list[Reading]]):
    b = Batcher(store)
    out = []
    for readings in batches:
        for r in readings:
            b.add(r)
        out += [rec for rec, _ in b.seal_all()]
    return out


def test_routing_sends_each_org_to_its_own_identity_and_lists_latest_anchors(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    recs = _records(store, [
        [Reading("plant1", "plant1.m1", "Torque", 1, T0, 40.0), Reading("hospital1", "hospital1.bed1", "HR", 1, T0, 80.0)],
        [Reading("plant1", "plant1.m1", "Torque", 2, T0 + 1000, 41.0)],
    ])
    plant, hospital = MemoryAnchorer(), MemoryAnchorer()
    routed = OrgRoutedAnchorer({"plant1": plant, "hospital1": hospital})
    for i, rec in enumerate(recs):
        store.record_anchor(rec.batch_id, asyncio.run(routed.submit_anchor(rec)), 1000 + i)
    assert set(plant.entries) == {r.batch_id for r in recs if r.org == "plant1"}
    assert set(hospital.entries) == {r.batch_id for r in recs if r.org == "hospital1"}
    for rec in recs:
        assert asyncio.run(routed.get_anchor(rec.batch_id))["record_hash"] == rec.record_hash()
    with pytest.raises(RuntimeError, match="no anchoring identity for org 'plant2'"):
        asyncio.run(routed.get_anchor("plant2:0000000001"))

    latest = store.recent_anchors(2)
    assert [a["batch_id"] for a in latest] == [recs[-1].batch_id, recs[-2].batch_id]
    assert latest[0]["tx_id"] == plant.entries[recs[-1].batch_id]["tx_id"] and latest[0]["merkle_root"] == recs[-1].merkle_root
    store.close()


def test_load_twin_restores_the_sealed_state_with_the_mappings_factors(tmp_path):
    mapping = parse_mapping({
        "sustainability": {"grid_kg_co2_per_kwh": 0.25},
        "assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
        "nodes": {"ns=2;s=plant1.m1.Torque": {"asset": "plant1.m1", "property": "Torque"}},
    })
    store = ReadingStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="no sealed state"):
        load_twin(store, mapping, "plant1.m1")
    with pytest.raises(ValueError, match="not an asset"):
        load_twin(store, mapping, "plant1.m9")
    live = _machine("plant1.m1", 50.0)
    b = Batcher(store, lambda org: {live.asset: live.state_json_and_hash()})
    b.add(Reading("plant1", "plant1.m1", "Torque", 1, T0, 40.0))
    b.seal_all()
    twin = load_twin(store, mapping, "plant1.m1")
    assert twin.state() == live.state() and twin.cfg.grid_kg_co2_per_kwh == 0.25
    store.close()
