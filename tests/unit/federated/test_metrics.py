"""numpy metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated.metrics import (
    best_f1_threshold,
    confusion,
    f1_at,
    precision_recall_f1,
    recall_at_precision,
    roc_auc,
    summarize,
)


def test_auroc_by_hand():
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3 of 4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    # pos {0.9, 0.5}, neg {0.5, 0.2}: 0.9 beats both (2), 0.5 ties 0.5 (0.5) and beats 0.2 (1) -> 3.5/4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.2]) == pytest.approx(0.875)
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_auroc_matches_the_pairwise_definition_on_random_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_precision_recall_f1_by_hand():
    y = [1, 1, 1, 0, 0, 0]
    pred = [1, 1, 0, 1, 0, 0]  # tp 2, fp 1, fn 1, tn 2
    assert confusion(y, pred) == (2, 1, 1, 2)
    p, r, f1 = precision_recall_f1(y, pred)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3))
    assert f1 == pytest.approx(2 / 3)
    assert precision_recall_f1([0, 0], [0, 0]) == (0.0, 0.0, 0.0)
    assert f1_at([1, 0, 1], [0.9, 0.8, 0.1], 0.5) == pytest.approx(0.5)  # tp1 fp1 fn1


def test_recall_at_precision_by_hand():
    y = [1, 1, 0, 1, 0, 0, 1]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    # cut after 0.9: p1 r1/4; 0.8: p1 r2/4; 0.7: p2/3; 0.6: p3/4 r3/4; 0.5: p3/5=0.6 r3/4; 0.4: 3/6; 0.3: 4/7
    assert recall_at_precision(y, s, 0.6) == pytest.approx(0.75)
    assert recall_at_precision(y, s, 0.75) == pytest.approx(0.75)
    assert recall_at_precision(y, s, 0.8) == pytest.approx(0.5)
    assert recall_at_precision(y, s, 0.5) == pytest.approx(1.0)  # 4/7 >= 0.5 at the last cut
    assert recall_at_precision(y, s, 4 / 7) == pytest.approx(1.0)
    # ties are not split: both 0.5 rows are predicted together (p 1/2)
    assert recall_at_precision([1, 0], [0.5, 0.5], 0.6) == 0.0
    assert math.isnan(recall_at_precision([0, 0], [0.1, 0.2]))


def test_best_f1_threshold_and_summary():
    y = [1, 1, 0, 1, 0, 0, 1]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    # F1 at each cut: .4 .667 .571 .75 .667 .6 .727 -> best at 0.6
    assert best_f1_threshold(y, s) == pytest.approx(0.6)
    out = summarize(y, s, 0.6, 0.6)
    assert out["f1"] == pytest.approx(0.75)
    assert out["recall_at_p"] == pytest.approx(0.75)
    assert out["n"] == 7 and out["positives"] == 4
    with pytest.raises(ValueError):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        roc_auc([0, 1, 1], [0.1, 0.2])
