"""How each org's share of a task's data is loaded: one site of one data set, split three ways.

The tasks -- which data set, which org holds which site, the feature names, where the shared data
folder is -- are ``federated.data``; this module reads only the org's own site, in place (nothing is
copied into the repository), and turns it into the task's features and labels per split (``SiteData``).
``load_site`` is the entry point.

Missing values of ``cardiac`` (documented in the data's PROVENANCE.md) are handled as follows:
  * ``?`` is missing; so are ``chol == 0`` (all of Switzerland, 49 VA rows) and ``trestbps == 0`` (1 VA
    row), which the provenance notes identify as "not recorded".
  * ``ca`` and ``thal`` are dropped: missing in 66 % and 53 % of all 920 records (ca in 291/294
    Hungarian, 118/123 Swiss, 198/200 VA rows; thal in 266/294 Hungarian and 166/200 VA rows).
    This is a fixed schema decision taken from the published per-site counts, the same at every site.
  * every other column that can be missing gets a 0/1 missingness indicator, and missing values are
    imputed with the median of the site's own *training* split (never its validation or test rows, never
    another site's data). A column a site never observed (Swiss cholesterol) stays NaN here and becomes
    the standardized mean (0) after scaling, with its indicator set to 1.

Splits, per site: a stratified, seeded test split (maintenance 20 %, cardiac 25 %), then a stratified
validation split of 20 % of the rest (used only for the decision threshold and model selection);
training uses the remaining rows. ``sepsis`` splits by PATIENT (stratified by whether the patient
becomes septic, seeded): every hour of a patient is in one split (test 25 %, validation 20 % of the
rest). The split seed is fixed per run (default 0) so every method is scored on the same test rows.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federated import sepsis
from federated.data import HEART_MAYBE_MISSING, TASKS, DataError, TaskSpec, data_root, resolve_site, task_spec

# The raw heart-disease files: their 14 columns and, per site name, the file.
HEART_COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope",
    "ca", "thal", "num",
)  # fmt: skip
HEART_DROPPED = ("ca", "thal")
HEART_ZERO_IS_MISSING = ("trestbps", "chol")
HEART_SITES = {
    "cleveland": "processed.cleveland.data",
    "hungarian": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}


# -- splits ------------------------------------------------------------------------------------------


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) row indices; each class contributes round(fraction * its count) held-out rows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_held = int(math.floor(fraction * len(idx) + 0.5))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


@dataclass
class SiteData:
    """One org's share of a task: features (imputed, not yet standardized) and 0/1 labels per split."""

    task: str
    org: str
    site: str
    feature_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(len(self.y_train))


def _split_three(x: np.ndarray, y: np.ndarray, spec: TaskSpec, seed: int) -> tuple[np.ndarray, ...]:
    rest, test = stratified_split(y, spec.test_fraction, seed)
    tr_rel, val_rel = stratified_split(y[rest], spec.val_fraction, seed + 1)
    train, val = rest[tr_rel], rest[val_rel]
    return train, val, test


# -- AI4I 2020 ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _read_ai4i(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(types, numeric [n,5], label, udi) of the whole CSV."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Machine failure" not in rows[0]:
        raise DataError(f"{path} does not look like the AI4I 2020 CSV (no 'Machine failure' column)")
    cols = ("Air temperature [K]", "Process temperature [K]", "Rotational speed [rpm]", "Torque [Nm]", "Tool wear [min]")
    types = np.array([r["Type"] for r in rows])
    num = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    y = np.array([int(r["Machine failure"]) for r in rows], dtype=np.int64)
    udi = np.array([int(r["UDI"]) for r in rows], dtype=np.int64)
    return types, num, y, udi


def _ai4i_rows(site: str, types: np.ndarray, udi: np.ndarray) -> np.ndarray:
    kind, _, arg = site.partition(":")
    if kind == "types" and arg:
        wanted = [t for t in arg.replace(",", "+").split("+") if t]
        if not set(wanted) <= {"L", "M", "H"}:
            raise DataError(f"bad AI4I site {site!r}: product types are L, M, H (e.g. types:M+H)")
        return np.isin(types, wanted)
    if kind == "udi" and arg:
        lo, _, hi = arg.partition("-")
        try:
            return (udi >= int(lo)) & (udi <= int(hi))
        except ValueError:
            pass
    raise DataError(f"bad AI4I site {site!r}; use types:L, types:M+H or udi:FROM-TO")


def ai4i_features(types: np.ndarray, num: np.ndarray) -> np.ndarray:
    air, proc, rpm, torque, wear = (num[:, i] for i in range(5))
    onehot = np.stack([(types == t).astype(np.float64) for t in ("L", "M", "H")], axis=1)
    derived = np.stack([proc - air, torque * rpm * 2.0 * np.pi / 60.0, wear * torque], axis=1)
    return np.concatenate([onehot, num, derived], axis=1)


def load_ai4i_site(org: str, site: str, root: Path, seed: int) -> SiteData:
    spec = TASKS["maintenance"]
    path = root / spec.dataset / "ai4i2020.csv"
    if not path.is_file():
        raise DataError(f"{path} not found; is TL_DATA_ROOT the shared data folder?")
    types, num, y, udi = _read_ai4i(str(path))
    rows = _ai4i_rows(site, types, udi)
    if not rows.any():
        raise DataError(f"AI4I site {site!r} selects no rows")
    x = ai4i_features(types[rows], num[rows]).astype(np.float32)
    yy = y[rows]
    train, val, test = _split_three(x, yy, spec, seed)
    return SiteData(
        "maintenance", org, site, spec.feature_names,
        x[train], yy[train], x[val], yy[val], x[test], yy[test],
        notes={"rows": int(rows.sum()), "positives": int(yy.sum())},
    )


# -- UCI heart disease -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def read_heart_site(path: str) -> np.ndarray:
    """The raw 14 columns as float, '?' -> NaN (rows x 14)."""
    out = []
    with open(path, encoding="ascii") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != len(HEART_COLUMNS):
                raise DataError(f"{path}:{lineno}: expected {len(HEART_COLUMNS)} values, found {len(parts)}")
            out.append([math.nan if p.strip() == "?" else float(p) for p in parts])
    return np.array(out, dtype=np.float64)


def heart_raw_features(raw: np.ndarray) -> np.ndarray:
    """Features before imputation: missing values are NaN, indicators already set (rows x 23)."""
    col = {c: raw[:, i].copy() for i, c in enumerate(HEART_COLUMNS)}
    for c in HEART_ZERO_IS_MISSING:
        col[c][col[c] == 0] = math.nan
    cp = col["cp"]
    feats = [col["age"], col["sex"], *((cp == k).astype(np.float64) for k in (1, 2, 3, 4))]
    feats += [col[c] for c in HEART_MAYBE_MISSING]
    feats += [np.isnan(col[c]).astype(np.float64) for c in HEART_MAYBE_MISSING]
    x = np.stack(feats, axis=1)
    # age, sex and cp are never missing in the four files; fail loudly if a copy differs.
    if np.isnan(x[:, :6]).any():
        raise DataError("age, sex or cp is missing in a heart-disease file; the schema assumes they never are")
    return x


def impute_with_train_median(x_train: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Fill NaNs in every array with the per-column median of x_train's observed values.

    Columns x_train never observed stay NaN (the scaler maps them to the mean). Returns the filled
    arrays (x_train first) and the medians used (NaN where none)."""
    with np.errstate(all="ignore"):
        observed = ~np.isnan(x_train)
        med = np.array(
            [np.median(x_train[observed[:, j], j]) if observed[:, j].any() else math.nan for j in range(x_train.shape[1])]
        )
    filled = []
    for arr in (x_train, *others):
        a = arr.copy()
        idx = np.where(np.isnan(a))
        a[idx] = med[idx[1]]
        filled.append(a)
    return filled, med


def load_heart_site(org: str, site: str, root: Path, seed: int) -> SiteData:
    spec = TASKS["cardiac"]
    if site not in HEART_SITES:
        raise DataError(f"unknown heart-disease site {site!r}; sites: {', '.join(HEART_SITES)}")
    path = root / spec.dataset / HEART_SITES[site]
    if not path.is_file():
        raise DataError(f"{path} not found; is TL_DATA_ROOT the shared data folder?")
    raw = read_heart_site(str(path))
    y = (raw[:, HEART_COLUMNS.index("num")] > 0).astype(np.int64)
    x = heart_raw_features(raw)
    train, val, test = _split_three(x, y, spec, seed)
    (x_tr, x_va, x_te), med = impute_with_train_median(x[train], x[val], x[test])
    never = [spec.feature_names[j] for j in range(len(med)) if math.isnan(med[j])]
    return SiteData(
        "cardiac", org, site, spec.feature_names,
        x_tr.astype(np.float32), y[train], x_va.astype(np.float32), y[val], x_te.astype(np.float32), y[test],
        notes={"rows": int(len(y)), "positives": int(y.sum()), "never_observed": never},
    )


# -- PhysioNet 2019 sepsis --------------------------------------------------------------------------


def load_sepsis_site(org: str, site: str, root: Path, seed: int) -> SiteData:
    """One hospital's patients, split by patient. ``notes["index"][split]`` is the split's
    ``sepsis.HourIndex`` (patient, hour, onset of every row), which the ward figures need."""
    spec = TASKS["sepsis"]
    folder = root / spec.dataset
    if not (folder / "MANIFEST.csv").is_file():
        raise DataError(f"{folder}/MANIFEST.csv not found; is TL_DATA_ROOT the shared data folder?")
    try:
        lo, hi = sepsis.parse_site(site)
        patients = sepsis.read_patients(str(folder), lo, hi)
    except (OSError, ValueError) as exc:
        raise DataError(str(exc)) from None
    if not patients:
        raise DataError(f"sepsis site {site!r} selects no patient of {folder.name}")
    septic = np.array([int(p.septic) for p in patients], dtype=np.int64)
    parts = {}
    for name, idx in zip(("train", "val", "test"), _split_three(septic, septic, spec, seed)):
        try:
            parts[name] = sepsis.stack([patients[i] for i in idx])
        except ValueError as exc:
            raise DataError(str(exc)) from None
    hours = sum(len(p[1]) for p in parts.values())
    positive_hours = sum(int(p[1].sum()) for p in parts.values())
    (x_tr, y_tr, _), (x_va, y_va, _), (x_te, y_te, _) = parts["train"], parts["val"], parts["test"]
    return SiteData(
        "sepsis", org, site, spec.feature_names, x_tr, y_tr, x_va, y_va, x_te, y_te,
        notes={"rows": hours, "positives": positive_hours, "patients": len(patients), "septic_patients": int(septic.sum()),
               "index": {name: p[2] for name, p in parts.items()}},
    )  # fmt: skip


# -- entry point -------------------------------------------------------------------------------------


def load_site(task: str, org: str, *, site: str | None = None, root: str | Path | None = None, seed: int = 0) -> SiteData:
    """Load one org's data for a task (only that org's site is read)."""
    spec = task_spec(task)
    site = resolve_site(task, org, site)
    base = data_root(root)
    if spec.name == "maintenance":
        return load_ai4i_site(org, site, base, seed)
    if spec.name == "sepsis":
        return load_sepsis_site(org, site, base, seed)
    return load_heart_site(org, site, base, seed)
