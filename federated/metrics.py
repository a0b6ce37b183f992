"""Binary-classification metrics in numpy (no scikit-learn here): AUROC, F1, recall at a precision floor.

Scores are "higher means more likely positive". Ties are handled exactly: AUROC uses average ranks
(the Mann-Whitney statistic), and threshold sweeps only cut between distinct score values.
"""

from __future__ import annotations

import math

import numpy as np


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, s = _check(y, s)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn)."""
    y = np.asarray(y).astype(bool).ravel()
    p = np.asarray(pred).astype(bool).ravel()
    return int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum()), int((~y & ~p).sum())


def precision_recall_f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of 0/1 predictions (0.0 where undefined, as is customary)."""
    tp, fp, fn, _ = confusion(y, pred)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """F1 of predicting positive when score >= threshold."""
    y, s = _check(y, s)
    return precision_recall_f1(y, s >= threshold)[2]


def _sweep(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score t (descending): thresholds t, tp and fp of predicting s >= t."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    # keep the last index of each run of equal scores: a threshold cannot split ties
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    return s_sorted[last], tp[last], fp[last]


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The score threshold maximising F1 (ties -> the highest such threshold); 0.5 if y has no positive."""
    y, s = _check(y, s)
    n_pos = int(y.sum())
    if n_pos == 0 or len(y) == 0:
        return 0.5
    thr, tp, fp = _sweep(y, s)
    f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
    return float(thr[int(np.argmax(f1))])


def recall_at_precision(y: np.ndarray, s: np.ndarray, min_precision: float = 0.6) -> float:
    """Highest recall over thresholds whose precision is >= min_precision (0.0 if none; NaN if no positive)."""
    y, s = _check(y, s)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    _, tp, fp = _sweep(y, s)
    precision = tp / (tp + fp)
    ok = precision >= min_precision - 1e-12
    return float((tp[ok] / n_pos).max()) if ok.any() else 0.0


def summarize(y: np.ndarray, s: np.ndarray, threshold: float, min_precision: float = 0.6) -> dict[str, float]:
    """The figures a site reports: AUROC, F1/precision/recall at the threshold, recall at the precision floor."""
    y, s = _check(y, s)
    precision, recall, f1 = precision_recall_f1(y, s >= threshold)
    return {
        "auroc": roc_auc(y, s),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "recall_at_p": recall_at_precision(y, s, min_precision),
        "threshold": float(threshold),
        "n": float(len(y)),
        "positives": float(y.sum()),
    }
