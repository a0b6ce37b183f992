"""Loading each org's share of the real data sets: shapes, no leak columns, label rates, missing values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated.data import AI4I_FEATURES, HEART_FEATURES, DataError, data_root, resolve_site, task_spec
from federated.site_data import heart_raw_features, impute_with_train_median, load_site, read_heart_site, stratified_split

try:
    ROOT = data_root()
except DataError:  # pragma: no cover - the shared data folder is part of this machine
    pytest.skip("shared data folder not available", allow_module_level=True)


def _all(site) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([site.x_train, site.x_val, site.x_test]), np.concatenate([site.y_train, site.y_val, site.y_test])


def test_ai4i_plants_split_by_type_without_leak_columns():
    p1 = load_site("maintenance", "plant1")
    p2 = load_site("maintenance", "plant2")
    assert p1.site == "types:L" and p2.site == "types:M+H"
    for site, rows, pos in ((p1, 6000, 235), (p2, 4000, 104)):
        x, y = _all(site)
        assert x.shape == (rows, len(AI4I_FEATURES)) and x.dtype == np.float32
        assert int(y.sum()) == pos  # AI4I: 235 failures among L, 104 among M+H (339 in all)
        assert not np.isnan(x).any()
        assert len(site.y_test) == round(0.2 * rows)
    names = set(AI4I_FEATURES)
    for leak in ("TWF", "HDF", "PWF", "OSF", "RNF", "Machine failure", "UDI", "Product ID"):
        assert leak not in names
    # plant1 holds only type L, plant2 only M and H
    assert set(np.unique(_all(p1)[0][:, 0])) == {1.0}
    assert set(np.unique(_all(p2)[0][:, 0])) == {0.0}
    # derived physics features: temperature difference and power
    x = p1.x_train
    np.testing.assert_allclose(x[:, 8], x[:, 4] - x[:, 3], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(x[:, 9], x[:, 6] * x[:, 5] * 2 * np.pi / 60, rtol=1e-4)


def test_ai4i_other_partitions_and_errors():
    s = load_site("maintenance", "plant3", site="udi:1-1000")
    assert len(_all(s)[1]) == 1000
    with pytest.raises(DataError, match="no site"):
        load_site("maintenance", "plant3")
    with pytest.raises(DataError, match="bad AI4I site"):
        load_site("maintenance", "plant1", site="types:X")
    with pytest.raises(DataError, match="unknown federated task"):
        load_site("weather", "plant1")


def test_stratified_seeded_splits():
    y = np.array([0] * 90 + [1] * 10)
    kept, held = stratified_split(y, 0.2, seed=7)
    assert len(held) == 20 and y[held].sum() == 2 and len(np.intersect1d(kept, held)) == 0
    assert np.array_equal(held, stratified_split(y, 0.2, seed=7)[1])
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=8)[1])
    a, b = load_site("cardiac", "hospital1", seed=0), load_site("cardiac", "hospital1", seed=0)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    # each split keeps the site's label rate
    for site in (a, load_site("maintenance", "plant1")):
        rate = _all(site)[1].mean()
        for part in (site.y_train, site.y_val, site.y_test):
            assert abs(part.mean() - rate) < 0.02


@pytest.mark.parametrize(
    "org,site,rows,positives",
    [("hospital1", "cleveland", 303, 139), ("hospital2", "hungarian", 294, 106),
     ("hospital3", "switzerland", 123, 115), ("hospital4", "va", 200, 149)],
)  # fmt: skip
def test_heart_sites_shapes_and_label_rates(org, site, rows, positives):
    s = load_site("cardiac", org)
    assert s.site == site
    x, y = _all(s)
    assert x.shape == (rows, len(HEART_FEATURES))
    assert int(y.sum()) == positives  # num > 0
    half_up = lambda v: math.floor(v + 0.5)  # noqa: E731 -- per class, half rounds up
    assert len(s.y_test) == half_up(0.25 * positives) + half_up(0.25 * (rows - positives))
    assert "ca" not in HEART_FEATURES and "thal" not in HEART_FEATURES and "num" not in HEART_FEATURES


def test_heart_missing_values_imputed_from_own_training_split_with_indicators():
    raw = read_heart_site(str(ROOT / "heart_disease_uci" / "processed.va.data"))
    x = heart_raw_features(raw)
    chol = HEART_FEATURES.index("chol")
    miss_chol = HEART_FEATURES.index("missing_chol")
    # '?' (7 rows) and chol == 0 (49 rows) are both missing in VA
    assert int(x[:, miss_chol].sum()) == 56
    assert np.isnan(x[:, chol]).sum() == 56

    site = load_site("cardiac", "hospital4")
    # training rows missing chol got the median of the training rows that have it
    tr_missing = site.x_train[:, miss_chol] == 1
    observed = site.x_train[~tr_missing, chol]
    assert tr_missing.any()
    assert np.all(site.x_train[tr_missing, chol] == np.median(observed))
    # validation and test rows are filled with the same (training) median, never their own
    te_missing = site.x_test[:, miss_chol] == 1
    assert np.all(site.x_test[te_missing, chol] == np.median(observed))
    assert not np.isnan(site.x_train).any() and not np.isnan(site.x_test).any()


def test_heart_column_never_observed_at_a_site_stays_nan_for_the_scaler():
    swiss = load_site("cardiac", "hospital3")
    chol = HEART_FEATURES.index("chol")
    assert "chol" in swiss.notes["never_observed"]
    assert np.isnan(swiss.x_train[:, chol]).all()
    assert (swiss.x_train[:, HEART_FEATURES.index("missing_chol")] == 1).all()
    from federated.model import Scaler

    z = Scaler.fit(swiss.x_train).transform(swiss.x_test)
    assert not np.isnan(z).any() and (z[:, chol] == 0).all()


def test_imputation_helper_uses_only_the_first_array():
    tr = np.array([[1.0, math.nan], [3.0, math.nan], [math.nan, math.nan]])
    te = np.array([[math.nan, 5.0]])
    (tr2, te2), med = impute_with_train_median(tr, te)
    assert tr2[2, 0] == 2.0 and te2[0, 0] == 2.0
    assert math.isnan(med[1]) and te2[0, 1] == 5.0


def test_site_map_is_configurable(monkeypatch):
    spec = task_spec("cardiac")
    assert spec.default_orgs == ("hospital1", "hospital2")
    assert resolve_site("cardiac", "hospital2") == "hungarian"
    monkeypatch.setenv("TL_FL_SITES", '{"hospital2": "va"}')
    assert resolve_site("cardiac", "hospital2") == "va"
    assert resolve_site("cardiac", "hospital2", "switzerland") == "switzerland"  # node config wins
    monkeypatch.setenv("TL_FL_SITES", "not json")
    with pytest.raises(DataError, match="TL_FL_SITES"):
        resolve_site("cardiac", "hospital2")
    assert spec.dataset_id("hospital1") == "hospital1.heart_disease_uci" and spec.purpose == "fl:cardiac"
