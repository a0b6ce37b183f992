"""The three federated tasks on real public data, and how each org's share of the data is loaded.

Data are read in place from the shared data folder (``$TL_DATA_ROOT``, else ``<repo>/../shared/data``);
nothing is copied into the repository. Each org loads only its own site.

``maintenance`` -- AI4I 2020 predictive maintenance (10,000 rows, label ``Machine failure``, 3.39 %).
  Sites are partitions by product quality ``Type``: plant1 = L (6,000 rows, 235 failures), plant2 = M+H
  (4,000 rows, 104 failures). A site spec ``types:L``/``types:M+H`` or ``udi:1-5000`` (a UDI range)
  selects rows, so further plants can be given other partitions.
  Features (11): Type one-hot (L, M, H); air and process temperature [K], rotational speed [rpm],
  torque [Nm], tool wear [min]; and three physical quantities the failure modes are defined on
  (Matzka 2020): process-air temperature difference [K], mechanical power [W] = torque x rpm x 2pi/60,
  and overstrain = tool wear x torque [min Nm]. Excluded: ``UDI`` and ``Product ID`` (identifiers) and
  ``TWF HDF PWF OSF RNF`` (the failure modes that make up the label: they leak it).

``cardiac`` -- UCI Heart Disease, four hospital sites (Cleveland 303, Hungarian 294, Switzerland 123,
  VA Long Beach 200 rows), label ``num > 0``. Default org -> site map: hospital1 = cleveland,
  hospital2 = hungarian, hospital3 = switzerland, hospital4 = va (the default consortium has hospital1
  and hospital2; the other two sites serve orgs added later). Override with the node config key
  ``site`` or ``$TL_FL_SITES`` (JSON, e.g. ``{"hospital3": "va"}``).
  Missing values (documented in the data's PROVENANCE.md) are handled as follows:
  * ``?`` is missing; so are ``chol == 0`` (all of Switzerland, 49 VA rows) and ``trestbps == 0`` (1 VA
    row), which the provenance notes identify as "not recorded".
  * ``ca`` and ``thal`` are dropped: missing in 66 % and 53 % of all 920 records (ca in 291/294
    Hungarian, 118/123 Swiss, 198/200 VA rows; thal in 266/294 Hungarian and 166/200 VA rows).
    This is a fixed schema decision taken from the published per-site counts, the same at every site.
  * every other column that can be missing gets a 0/1 missingness indicator, and missing values are
    imputed with the median of the site's own *training* split (never its validation or test rows, never
    another site's data). A column a site never observed (Swiss cholesterol) stays NaN here and becomes
    the standardized mean (0) after scaling, with its indicator set to 1.
  Features (23): age, sex, chest-pain type one-hot (cp 1..4), trestbps, chol, fbs, restecg, thalach,
  exang, oldpeak, slope, and 8 missingness indicators.

``sepsis`` -- PhysioNet/CinC 2019 early prediction of sepsis, training set B subset (4,000 ICU patients,
  227 septic), one row per patient-hour; label: sepsis onset within the next 6 hours (the Challenge's
  hourly SepsisLabel; onset, horizon and features are defined in ``federated.sepsis``). Features (32):
  the 8 vital signs a bedside twin carries (HR, O2Sat, Temp, SBP, MAP, DBP, Resp, EtCO2), forward-filled
  within the patient, a not-yet-observed indicator each, and their changes over 3 and 6 hours. Sites are
  patient-number ranges (``ids:FROM-TO``): hospital1 = p100001-p102000, hospital2 = p102001-p104000, so
  no patient is at two hospitals. Splits are by PATIENT (stratified by whether the patient becomes septic,
  seeded): every hour of a patient is in one split (test 25 %, validation 20 % of the rest).

Splits, per site: a stratified, seeded test split (maintenance 20 %, cardiac 25 %), then a stratified
validation split of 20 % of the rest (used only for the decision threshold and model selection);
training uses the remaining rows. The split seed is fixed per run (default 0) so every method is
scored on the same test rows.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federated import sepsis

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataError(ValueError):
    """A data set, site or task that cannot be loaded; the message says what to do."""


# -- tasks -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str  # folder under the data root
    org_kind: str  # hospital | plant
    sites: Mapping[str, str]  # org -> default site spec
    default_orgs: tuple[str, ...]  # the default consortium's orgs for this task
    feature_names: tuple[str, ...]
    test_fraction: float
    val_fraction: float = 0.2

    @property
    def purpose(self) -> str:
        """The purpose a data grant must name for this task."""
        return f"fl:{self.name}"

    def dataset_id(self, org: str) -> str:
        """The data-set id an org registers for this task (what grants refer to), e.g. ``plant1.ai4i2020``:
        a valid chaincode ID (letters, digits, '.', '_', '-'), as ``twinledger data register`` needs."""
        return f"{org}.{self.dataset}"


AI4I_FEATURES = (
    "type_L", "type_M", "type_H",
    "air_temp_K", "process_temp_K", "rot_speed_rpm", "torque_Nm", "tool_wear_min",
    "temp_diff_K", "power_W", "overstrain_minNm",
)  # fmt: skip

HEART_COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope",
    "ca", "thal", "num",
)  # fmt: skip
HEART_DROPPED = ("ca", "thal")
HEART_MAYBE_MISSING = ("trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope")
HEART_ZERO_IS_MISSING = ("trestbps", "chol")
HEART_FEATURES = (
    "age", "sex", "cp_1", "cp_2", "cp_3", "cp_4",
    "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope",
    *(f"missing_{c}" for c in HEART_MAYBE_MISSING),
)  # fmt: skip
HEART_SITES = {
    "cleveland": "processed.cleveland.data",
    "hungarian": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}

TASKS: dict[str, TaskSpec] = {
    "maintenance": TaskSpec(
        name="maintenance", dataset="ai4i2020", org_kind="plant",
        sites={"plant1": "types:L", "plant2": "types:M+H"},
        default_orgs=("plant1", "plant2"), feature_names=AI4I_FEATURES, test_fraction=0.2,
    ),
    "cardiac": TaskSpec(
        name="cardiac", dataset="heart_disease_uci", org_kind="hospital",
        sites={"hospital1": "cleveland", "hospital2": "hungarian", "hospital3": "switzerland", "hospital4": "va"},
        default_orgs=("hospital1", "hospital2"), feature_names=HEART_FEATURES, test_fraction=0.25,
    ),
    "sepsis": TaskSpec(
        name="sepsis", dataset=sepsis.DATASET, org_kind="hospital",
        sites={"hospital1": "ids:100001-102000", "hospital2": "ids:102001-104000"},
        default_orgs=("hospital1", "hospital2"), feature_names=sepsis.FEATURES, test_fraction=0.25,
    ),
}  # fmt: skip


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown federated task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def data_root(override: str | Path | None = None) -> Path:
    """The shared data folder: override, then $TL_DATA_ROOT, then <repo>/../shared/data."""
    root = Path(override or os.environ.get("TL_DATA_ROOT") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        raise DataError(f"data folder {root} not found; set TL_DATA_ROOT (or node config data-root) to it")
    return root


def resolve_site(task: str, org: str, override: str | None = None) -> str:
    """The site an org holds for a task: node-config override, then $TL_FL_SITES, then the default map."""
    spec = task_spec(task)
    if override:
        return override
    env = os.environ.get("TL_FL_SITES")
    if env:
        try:
            mapping = json.loads(env)
        except json.JSONDecodeError as exc:
            raise DataError(f"TL_FL_SITES is not JSON ({exc}); example: '{{\"hospital3\": \"va\"}}'") from None
        if org in mapping:
            return str(mapping[org])
    if org not in spec.sites:
        raise DataError(
            f"org {org!r} has no site for task {task!r} (known: {', '.join(sorted(spec.sites))}); "
            f"set node config site='...' or TL_FL_SITES"
        )
    return spec.sites[org]


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
