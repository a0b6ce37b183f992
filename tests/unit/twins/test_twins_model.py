import hashlib

import pytest

from twins.model.sustainability import SustainabilityConfig, plant_totals
from twins.model.twin import MachineTwin, PatientTwin
from twins.model.whatif import whatif_speed
from twins.readings import Reading
from twins.simulators.machine import MachineSource


def _fed(twin, n=300, seed=3):
    m = MachineSource(twin.asset, twin.org, seed, 1)
    energies = []
    for i in range(1, n + 1):
        for prop, v in m.step().items():
            twin.update(Reading(twin.org, twin.asset, prop, i, i * 1000, v))
        energies.append(m.energy_kwh)
    return energies


def test_machine_twin_features_prediction_and_sustainability():
    cfg = SustainabilityConfig(grid_kg_co2_per_kwh=0.5, water_l_per_product={"L": 1, "M": 1, "H": 1}, waste_kg_per_product={"L": 0, "M": 0, "H": 0})
    t = MachineTwin("plant1.m1", "plant1", cfg)
    m = _fed(t)
    f = t.features()
    assert 295 < f["air_k"] < 305 and 35 < f["torque_nm"] < 45 and f["temp_diff_k"] == pytest.approx(10, abs=1.5)
    p = t.predict()
    assert p["model"] == "fallback:ai4i-rules-v1" and 0 < p["probability"] < 1
    s = t.sustainability()
    assert s["products"] == 300 and s["water_l"] == 300
    assert s["energy_kwh"] == pytest.approx(m[-1] - m[0], rel=1e-9) and s["energy_kwh"] > 0
    assert s["co2_kg"] == pytest.approx(0.5 * s["energy_kwh"])
    totals = plant_totals([s, s])
    assert totals["products"] == 600
    # state round-trips and hashes deterministically
    sj, h = t.state_json_and_hash()
    t2 = MachineTwin("plant1.m1", "plant1", cfg)
    import json

    t2.load_state(json.loads(sj))
    assert t2.state_json_and_hash() == (sj, h) and h == hashlib.sha256(sj.encode()).hexdigest()


def test_whatif_speed_reduction_saves_energy_and_moves_risk():
    t = MachineTwin("plant1.m1", "plant1")
    _fed(t, 100)
    res = whatif_speed(t, 0.9, 8)
    sc, base = res["scenario"], res["baseline"]
    assert sc["products"] < base["products"]
    assert sc["energy_kwh"] < base["energy_kwh"] and sc["co2_kg"] < base["co2_kg"]
    assert sc["rpm"] == pytest.approx(0.9 * base["rpm"])
    assert 0 <= sc["failure_risk"] <= 1 and res["model"].startswith("fallback")
    # a strong slow-down brings the spindle under 1380 rpm: heat-dissipation risk rises
    slow = whatif_speed(t, 0.7, 8)
    assert slow["scenario"]["failure_risk"] > base["failure_risk"]
    with pytest.raises(ValueError):
        whatif_speed(MachineTwin("x", "p"), 0.9, 8)


def test_patient_twin_risk_and_features():
    t = PatientTwin("hospital1.bed1", "hospital1")
    vit = {"HR": 125, "O2Sat": 92, "Temp": 38.6, "SBP": 95, "DBP": 55, "Resp": 26}
    for i, (k, v) in enumerate(vit.items(), 1):
        t.update(Reading("hospital1", t.asset, k, 1, i, float(v)))
    r = t.risk()
    assert r["score"] == 2 + 2 + 1 + 2 + 3 and r["risk"] == "high" and "NEWS2-like" in r["label"]
    assert t.features()["pulse_pressure"] == pytest.approx(40)


def test_a_machine_twin_names_the_model_it_predicts_with():
    class M:
        label, sha256 = "federated:maintenance-v1:round2:" + "ab" * 6, "ab" * 32

        def predict(self, features, type_mix=None):
            return 0.42

    t = MachineTwin("plant1.m1", "plant1")
    _fed(t, 20)
    assert t.predict()["model"] == "fallback:ai4i-rules-v1" and t.state()["model"] == "fallback:ai4i-rules-v1"
    t.model = M()
    assert t.predict() == {"probability": 0.42, "model": M.label, "model_sha256": M.sha256}
    assert t.state()["model"] == M.label
