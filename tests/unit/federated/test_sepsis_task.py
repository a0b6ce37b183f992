"""The sepsis task: onset labels at the 6 h horizon, features from the twins' vitals, missing values,
patient-disjoint hospitals and splits, the ward figures, and the task's loading through load_site."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated import sepsis
from federated.data import TASKS, DataError, data_root
from federated.site_data import load_site
from twins.simulators.patient import VITALS as TWIN_VITALS

NAN = math.nan


def _patient(n_hours: int, first_label: int | None) -> sepsis.Patient:
    label = np.zeros(n_hours, dtype=np.int64)
    if first_label is not None:
        label[first_label:] = 1
    return sepsis.Patient(100000, np.full((n_hours, len(sepsis.VITALS)), 80.0), label)


def test_onset_and_labels_at_the_horizon_on_a_hand_made_patient():
    # SepsisLabel first 1 at hour 10 -> the Challenge's t_sepsis is hour 16; 6 h ahead -> hours >= 10 positive
    p = _patient(20, 10)
    assert p.onset == 16 and p.septic
    assert sepsis.hour_labels(20, 16).tolist() == [0] * 10 + [1] * 10
    assert sepsis.hour_labels(20, 16, horizon=3).tolist() == [0] * 13 + [1] * 7
    # the loader's rows: the labels are the Challenge's, the index carries hour and onset
    x, y, index = sepsis.stack([p, _patient(5, None)])
    assert y.tolist() == [0] * 10 + [1] * 10 + [0] * 5
    assert index.hour.tolist() == list(range(20)) + list(range(5))
    assert index.onset.tolist() == [16] * 20 + [-1] * 5
    assert x.shape == (25, len(sepsis.FEATURES))
    # a never-septic patient has no onset and no positive hour
    assert sepsis.onset_hour(np.zeros(8)) is None and sepsis.hour_labels(8, None).sum() == 0
    # labels that are not 1 from their first 1 on are not the Challenge's: refused
    bad = sepsis.Patient(1, np.zeros((4, len(sepsis.VITALS))), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="SepsisLabel"):
        sepsis.stack([bad])


def test_the_features_are_the_twins_vitals_and_their_trends():
    assert sepsis.VITALS == TWIN_VITALS
    assert TASKS["sepsis"].feature_names == sepsis.FEATURES
    raw = {f.split("_")[0] for f in sepsis.FEATURES}
    assert raw == set(TWIN_VITALS)  # nothing but vitals: no labs, demographics or ICULOS
    assert len(sepsis.FEATURES) == 4 * len(TWIN_VITALS)


def test_missing_values_forward_filled_within_a_patient_then_indicated():
    v = np.full((8, len(sepsis.VITALS)), NAN)
    hr = [NAN, 90.0, NAN, NAN, 100.0, NAN, NAN, NAN]
    v[:, 0] = hr
    v[:, 1] = 97.0  # O2Sat always measured
    f = sepsis.patient_features(v)
    col = {name: f[:, i] for i, name in enumerate(sepsis.FEATURES)}
    np.testing.assert_array_equal(col["HR"], [NAN, 90, 90, 90, 100, 100, 100, 100])
    assert col["HR_missing"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    # the 3 h change of the forward-filled value; 0 where no value existed 3 h before
    assert col["HR_delta_3h"].tolist() == [0, 0, 0, 0, 10, 10, 10, 0]
    assert col["HR_delta_6h"].tolist() == [0, 0, 0, 0, 0, 0, 0, 10]
    assert col["Temp_missing"].tolist() == [1] * 8 and np.isnan(col["Temp"]).all()
    assert col["O2Sat_missing"].sum() == 0 and (col["O2Sat_delta_3h"] == 0).all()
    # never across patients: the second patient's first hours are not filled from the first one
    other = np.full((3, len(sepsis.VITALS)), NAN)
    x, _, _ = sepsis.stack([sepsis.Patient(1, v, np.zeros(8, np.int64)), sepsis.Patient(2, other, np.zeros(3, np.int64))])
    assert np.isnan(x[8:, 0]).all() and (x[8:, len(sepsis.VITALS)] == 1).all()


def test_ward_figures_count_alerts_between_12_h_and_1_h_before_onset():
    # patient 1 septic (onset hour 20), patient 2 never; threshold 0.5
    hours = np.r_[np.arange(24), np.arange(10)]
    index = sepsis.HourIndex(np.r_[np.full(24, 1), np.full(10, 2)], hours, np.r_[np.full(24, 20), np.full(10, -1)])
    scores = np.zeros(34)
    scores[24] = 0.9  # one of ten non-septic hours alerts
    scores[19 + 1 - 1] = 0.9  # hour 19 = 1 h before onset: counts, lead 1 h
    w = sepsis.ward_figures(scores, index, 0.5)
    assert (w["alerted_1h"], w["alert_rate"], w["lead_h"], w["septic_patients"]) == (1.0, 0.1, 1.0, 1.0)
    late, early = np.zeros(34), np.zeros(34)
    late[20] = 0.9  # at onset: too late
    early[7] = 0.9  # 13 h before onset: earlier than the Challenge credits
    assert sepsis.ward_figures(late, index, 0.5)["alerted_1h"] == 0.0
    assert sepsis.ward_figures(early, index, 0.5)["alerted_1h"] == 0.0
    # the threshold: at most 5 % of the non-septic hours alert
    rng = np.random.default_rng(0)
    s = rng.random(34)
    thr = sepsis.alert_threshold(s, sepsis.HourIndex(np.zeros(34), np.arange(34), np.full(34, -1)), rate=0.1)
    assert (s >= thr).sum() == 3  # floor(0.1 * 34)


try:
    ROOT = data_root()
except DataError:  # pragma: no cover - the shared data folder is part of this machine
    ROOT = None
needs_data = pytest.mark.skipif(ROOT is None, reason="shared data folder not available")


@needs_data
def test_hospitals_hold_disjoint_patients_and_splits_are_by_patient():
    sites = {org: load_site("sepsis", org, seed=3) for org in ("hospital1", "hospital2")}
    seen: dict[int, str] = {}
    for org, d in sites.items():
        assert d.x_train.shape[1] == len(sepsis.FEATURES) and d.x_train.dtype == np.float32
        index = d.notes["index"]
        by_split = {name: set(index[name].patient.tolist()) for name in ("train", "val", "test")}
        assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
        assert not (by_split["val"] & by_split["test"])
        for pid in set().union(*by_split.values()):
            assert pid not in seen, f"p{pid} at {seen.get(pid)} and {org}"
            seen[pid] = org
        assert len(index["test"].patient) == len(d.y_test)
        assert d.notes["patients"] == 2000 and sum(len(v) for v in by_split.values()) == 2000
        # the Challenge's labels: positives only at septic patients, and the hour index matches
        assert (d.y_test[index["test"].onset < 0] == 0).all()
    assert len(seen) == 4000
    assert sites["hospital1"].notes["septic_patients"] + sites["hospital2"].notes["septic_patients"] == 227
    # deterministic by seed (the same patients in the same order)
    again = load_site("sepsis", "hospital2", seed=3)
    assert np.array_equal(again.notes["index"]["test"].patient, sites["hospital2"].notes["index"]["test"].patient)
    assert np.array_equal(again.x_train, sites["hospital2"].x_train, equal_nan=True)
    with pytest.raises(DataError, match="ids:FROM-TO"):
        load_site("sepsis", "hospital3", site="p1-p2")


def test_twinledger_fl_accepts_the_sepsis_task_and_keeps_cardiac_the_hospitals_default():
    from orchestrator.cli_fl import resolve_task

    assert resolve_task("sepsis-v1", None) == ("sepsis", "sepsis-v1")
    assert resolve_task("sepsis-v1", "hospital") == ("sepsis", "sepsis-v1")
    assert resolve_task(None, "hospital") == ("cardiac", "cardiac-v1")
    assert TASKS["sepsis"].purpose == "fl:sepsis" and TASKS["sepsis"].org_kind == "hospital"
    assert TASKS["sepsis"].dataset_id("hospital1") == "hospital1.physionet_sepsis2019_setB_subset"
