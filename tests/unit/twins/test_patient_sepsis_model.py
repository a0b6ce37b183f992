"""The patient twins' federated sepsis model: the twin's online features are the training features, the numpy MLP
predicts what the training code predicts, and predictions and alerts name the model (NEWS2-like rules before it).

Patients are real ones of the PhysioNet 2019 subset (``$TL_DATA_ROOT``); models are real ``federated.model`` MLPs with
a scaler fitted on those patients' features, as a governed run commits them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federated import sepsis
from federated.data import data_root
from federated.hashing import canonical_bytes
from federated.model import Scaler, model_arrays, model_from_arrays, new_model, predict_proba
from twins.alerts import SEPSIS_RISK_ALERT, twin_alerts
from twins.model.federated import CommittedRound, ModelFormatError, SepsisMlp, ai4i_mlp, sepsis_mlp
from twins.model.news2 import FALLBACK_LABEL
from twins.model.patient_hours import KEEP, PatientHours
from twins.model.twin import PatientTwin
from twins.readings import Reading

torch.set_num_threads(1)
TASK = "sepsis-v1"


@pytest.fixture(scope="module")
def patients() -> tuple[sepsis.Patient, ...]:
    return sepsis.read_patients(str(data_root() / sepsis.DATASET), 100001, 100080)


def test_the_windowed_features_are_the_training_features_hour_by_hour(patients) -> None:
    hours = 0
    for p in patients:
        full = sepsis.patient_features(p.vitals)
        carry, window = None, []
        for h, row in enumerate(p.vitals):
            window.append(row)
            if len(window) > sepsis.WINDOW_H:
                carry = sepsis.carry_forward(carry, window.pop(0))
            np.testing.assert_array_equal(sepsis.window_features(carry, np.array(window)), full[h])
            hours += 1
    assert hours > 2000


def _readings(asset: str, p: sepsis.Patient, t0: int = 1_000_000, start_hour: int = 1) -> list[list[Reading]]:
    """The monitor's samples of a stay as the simulator publishes them: per hour, the vitals measured and ICULOS,
    all with the hour's timestamp (per-variable sequence numbers, NaN vitals not published)."""
    seq: dict[str, int] = {}
    out = []
    for h, row in enumerate(p.vitals):
        ts = t0 + h * 500_000
        hour = []
        for prop, v in [*zip(sepsis.VITALS, row), ("ICULOS", float(start_hour + h))]:
            if np.isnan(v):
                continue
            seq[prop] = seq.get(prop, 0) + 1
            hour.append(Reading("hospital1", asset, prop, seq[prop], ts, float(v)))
        out.append(hour)
    return out


def test_the_twin_chart_gives_the_training_features_even_with_readings_interleaved(patients) -> None:
    p = max(patients, key=lambda q: len(q.sepsis_label))
    full = sepsis.patient_features(p.vitals)
    samples = _readings("hospital1.bed1", p)
    twin = PatientTwin("hospital1.bed1", "hospital1")
    for h, hour in enumerate(samples):
        for r in hour:
            twin.update(r)
        np.testing.assert_array_equal(twin.chart.features(), full[h])
    assert len(twin.chart.hours) == KEEP
    # the bridge orders per variable only: HR of the next hours may come before the rest of an hour
    twin2 = PatientTwin("hospital1.bed2", "hospital1")
    held: list[Reading] = []
    for hour in samples[:20]:  # each hour's Temp arrives after the next hour's other vitals
        for r in hour:
            if r.prop != "Temp":
                twin2.update(r)
        for r in held:
            twin2.update(r)
        held = [r for r in hour if r.prop == "Temp"]
    for r in held:
        twin2.update(r)
    np.testing.assert_array_equal(twin2.chart.features(), full[19])
    # the chart is part of the anchored state and comes back with it
    restored = PatientTwin("hospital1.bed1", "hospital1")
    restored.load_state(__import__("json").loads(twin.state_json_and_hash()[0]))
    np.testing.assert_array_equal(restored.chart.features(), full[len(samples) - 1])


def test_a_new_stay_starts_an_empty_chart(patients) -> None:
    a, b = patients[0], patients[1]
    twin = PatientTwin("hospital1.bed1", "hospital1")
    first = _readings("x", a)
    for hour in first:
        for r in hour:
            twin.update(r)
    # the replay wraps to the first hour of the next stay: ICULOS goes back to 1
    t0 = first[-1][0].source_ts_us + 500_000
    for h, hour in enumerate(_readings("x", b, t0=t0)[:5]):
        for r in hour:
            twin.update(r)
        np.testing.assert_array_equal(twin.chart.features(), sepsis.patient_features(b.vitals)[h])
    assert twin.chart.stays == 1


def _sepsis_arrays(patients, seed: int = 0) -> dict[str, np.ndarray]:
    x, _, _ = sepsis.stack(patients)
    return {**model_arrays(new_model(len(sepsis.FEATURES), (32, 16), seed)), **Scaler.fit(x).arrays()}


def test_the_numpy_sepsis_mlp_predicts_what_the_training_code_predicts(patients) -> None:
    arr = _sepsis_arrays(patients)
    sha = "d" * 64
    model = sepsis_mlp(canonical_bytes(arr), CommittedRound(TASK, 2, sha))
    assert isinstance(model, SepsisMlp) and model.label == f"federated:{TASK}:round2:{sha[:12]}"
    x, _, _ = sepsis.stack(patients[:10])  # with NaN: vitals not observed yet
    assert np.isnan(x).any()
    expected = predict_proba(model_from_arrays(arr), Scaler.from_arrays(arr).transform(x))
    np.testing.assert_allclose(model.predict_rows(x), expected, rtol=1e-4, atol=1e-6)
    # each kind's loader refuses the other's model: a patient twin never runs the machines' MLP
    with pytest.raises(ModelFormatError, match="the sepsis early-warning model maps 32"):
        sepsis_mlp(canonical_bytes({**model_arrays(new_model(11, (16,), 0)), **Scaler.fit(np.ones((3, 11))).arrays()}),
                   CommittedRound(TASK, 1, sha))
    with pytest.raises(ModelFormatError, match="maps 32 inputs"):
        ai4i_mlp(canonical_bytes(arr), CommittedRound("maintenance-v1", 1, sha))


def test_predictions_and_alerts_name_the_model_and_the_rules_are_a_labelled_fallback(patients) -> None:
    p = next(q for q in patients if q.septic)
    twin = PatientTwin("hospital1.bed1", "hospital1")
    for hour in _readings(twin.asset, p):
        for r in hour:
            twin.update(r)
    snap = twin.snapshot()
    assert snap["prediction"] is None and snap["model"] == FALLBACK_LABEL and snap["risk"]["label"].startswith("NEWS2")
    for a in twin_alerts({twin.asset: snap}):  # before the first round: NEWS2 alerts, labelled as the fallback
        assert a["kind"] == "news2" and a["label"] == FALLBACK_LABEL and a["model_sha256"] is None

    arr = _sepsis_arrays(patients, seed=3)
    sha = "e" * 64
    twin.model = sepsis_mlp(canonical_bytes(arr), CommittedRound(TASK, 4, sha))
    snap = twin.snapshot()
    pred = snap["prediction"]
    assert pred["model"] == f"federated:{TASK}:round4:{sha[:12]}" and pred["model_sha256"] == sha
    assert pred["probability"] == pytest.approx(float(twin.model.predict_rows(sepsis.patient_features(p.vitals)[-1:])[0]))
    assert __import__("json").loads(twin.state_json_and_hash()[0])["model"] == pred["model"]
    alerts = twin_alerts({twin.asset: snap})
    assert all(a["kind"] == "sepsis-risk" for a in alerts)  # the model replaces the rules' alerts
    assert bool(alerts) == (pred["probability"] >= SEPSIS_RISK_ALERT)
    snap["prediction"]["probability"] = 0.9
    (alert,) = twin_alerts({twin.asset: snap})
    assert alert["label"] == pred["model"] and alert["model_sha256"] == sha and alert["value"] == 0.9
    from chaincode.twins import alert_model
    from twins.anchoring.alert_outbox import AlertTracker
    from twins.anchoring.store import ReadingStore

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        rs = ReadingStore(Path(d) / "r.sqlite")
        (rec,) = AlertTracker(rs).observe("hospital1", {twin.asset: snap})
        assert rec.kind == "sepsis-risk" and alert_model(rec.detail) == (pred["model"], sha)
        rs.close()


def test_an_empty_chart_has_no_features() -> None:
    assert PatientHours().features() is None
    assert PatientTwin("b", "hospital1").predict() is None
