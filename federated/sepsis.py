"""The PhysioNet/CinC 2019 sepsis subset as hospital sites: hourly vitals, onset labels, ward figures.

Data: ``physionet_sepsis2019_setB_subset`` (4,000 patients of training set B, see its PROVENANCE.md), read
straight from its tarball, each member checked against MANIFEST.csv's SHA-256 (never extracted).

Onset and horizon, precisely. Rows are ICU hours h = 0, 1, 2, ... of one patient (row index, one row an
hour). The Challenge's ``SepsisLabel`` is 1 from 6 h before the clinical onset t_sepsis (Sepsis-3) on, so
for a septic patient ``onset = (first hour with SepsisLabel = 1) + CHALLENGE_SHIFT_H`` (6); a patient
who never has SepsisLabel = 1 has no onset. The task predicts onset HORIZON_H = 6 hours ahead: hour h is
positive iff the patient is septic and ``h >= onset - HORIZON_H``. With both 6 h this is exactly the
Challenge's own hourly label (``hour_labels`` recomputes it from the onset, and the loader checks that
it agrees with SepsisLabel on every row).

Features (what a bedside twin can compute from what it carries, ``twins.simulators.patient.VITALS``):
for each vital sign, the value forward-filled within the patient (the last observed value; never
across patients), a 0/1 indicator that the vital has not been observed yet in this stay (the value is
then NaN and the scaler maps it to the mean), and two trends: the change of the forward-filled value
over the last 3 and 6 hours (0 when no value existed that many hours ago: no known change).
Excluded: labs, demographics, ICULOS and HospAdmTime (a bedside monitor twin does not carry them).

Ward figures: an alert is a score at or above a threshold chosen on the validation split so that
ALERT_RATE (5 %) of the hours of non-septic patients alert. A septic patient counts as *alerted at least
1 h before onset* when some hour h with ``onset - EARLIEST_H <= h <= onset - 1`` alerts; EARLIEST_H = 12
is the earliest hour the Challenge's utility function credits a prediction (earlier alerts are, for the
Challenge, false alarms).
"""

from __future__ import annotations

import functools
import hashlib
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASET = "physionet_sepsis2019_setB_subset"
VITALS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2")  # = twins.simulators.patient.VITALS
DELTA_HOURS = (3, 6)
FEATURES = (
    *VITALS,
    *(f"{v}_missing" for v in VITALS),
    *(f"{v}_delta_{k}h" for k in DELTA_HOURS for v in VITALS),
)
CHALLENGE_SHIFT_H = 6  # SepsisLabel turns 1 this many hours before t_sepsis
HORIZON_H = 6  # predict onset this many hours ahead
ALERT_RATE = 0.05  # share of non-septic patient-hours that alert (threshold chosen on validation)
ALERT_LEAD_H = 1  # an alert must come at least this long before onset ...
EARLIEST_H = 12  # ... and not earlier than this (the Challenge utility's earliest credited hour)
N_COLUMNS = 41  # the Challenge's .psv header
LABEL_COLUMN = 40
SITE_RE = re.compile(r"^ids:p?(\d{6})-p?(\d{6})$")


# -- labels ------------------------------------------------------------------------------------------


def onset_hour(sepsis_label: np.ndarray) -> int | None:
    """t_sepsis as an hour index: the first SepsisLabel = 1 plus the Challenge's 6 h shift; None if never."""
    ones = np.flatnonzero(np.asarray(sepsis_label) > 0)
    return int(ones[0]) + CHALLENGE_SHIFT_H if len(ones) else None


def hour_labels(n_hours: int, onset: int | None, horizon: int = HORIZON_H) -> np.ndarray:
    """1 for each hour h >= onset - horizon (0 everywhere for a patient without onset)."""
    h = np.arange(n_hours)
    if onset is None:
        return np.zeros(n_hours, dtype=np.int64)
    return (h >= onset - horizon).astype(np.int64)


# -- features ----------------------------------------------------------------------------------------


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Each column's last observed (non-NaN) value, down the rows of ONE patient; NaN before the first."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.where(~np.isnan(x), np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = x[idx, np.arange(x.shape[1])[None, :]]
    return out


def patient_features(vitals: np.ndarray) -> np.ndarray:
    """hours x len(VITALS) raw vitals (NaN = not measured) of one patient -> hours x len(FEATURES)."""
    vitals = np.asarray(vitals, dtype=np.float64)
    if vitals.ndim != 2 or vitals.shape[1] != len(VITALS):
        raise ValueError(f"vitals must be hours x {len(VITALS)} ({', '.join(VITALS)})")
    filled = forward_fill(vitals)
    missing = np.isnan(filled).astype(np.float64)
    deltas = []
    for k in DELTA_HOURS:
        before = np.full_like(filled, np.nan)
        before[k:] = filled[:-k]
        d = filled - before
        deltas.append(np.where(np.isnan(d), 0.0, d))
    return np.concatenate([filled, missing, *deltas], axis=1)


#: Raw hours a running twin must keep to compute the features of its latest hour (the longest trend + 1).
WINDOW_H = max(DELTA_HOURS) + 1


def window_features(carry: np.ndarray | None, hours: np.ndarray) -> np.ndarray:
    """The features of the LAST of ``hours`` from a bounded window, as a bedside twin computes them online.

    ``hours``: the stay's most recent hours (at most ``WINDOW_H`` needed) x len(VITALS), raw (NaN = not measured);
    ``carry``: the forward-filled values of the stay's hours before them (None or NaN where nothing was observed,
    e.g. at the start of the stay). Equal to ``patient_features(all hours of the stay)[-1]`` (unit-tested on real
    patients): the twins' predictions use exactly the features the federated model was trained on."""
    hours = np.asarray(hours, dtype=np.float64).reshape(-1, len(VITALS))
    if len(hours) == 0:
        raise ValueError("no hour to compute features for")
    if carry is not None and len(hours) < WINDOW_H:
        raise ValueError(f"hours were carried out of the window: keep the last {WINDOW_H} hours in it")
    first = np.full((1, len(VITALS)), np.nan) if carry is None else np.asarray(carry, np.float64).reshape(1, -1)
    if len(hours) > WINDOW_H:
        hours = hours[-WINDOW_H:]  # older hours matter only through the forward fill, which carry must hold
    # the carry row stands before the window; an hour without a row there ("no value k hours ago") has a NaN
    # filled value only when nothing was observed before it, exactly as in patient_features
    return patient_features(np.concatenate([first, hours]))[-1]


def carry_forward(carry: np.ndarray | None, hour: np.ndarray) -> np.ndarray:
    """The carry after one more hour leaves the window: its observed values replace the carried ones."""
    hour = np.asarray(hour, dtype=np.float64).reshape(-1)
    if carry is None:
        return hour.copy()
    return np.where(np.isnan(hour), np.asarray(carry, np.float64).reshape(-1), hour)


# -- reading -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    pid: int  # 100001 for p100001
    vitals: np.ndarray  # hours x len(VITALS), NaN = not measured
    sepsis_label: np.ndarray  # hours, the Challenge's SepsisLabel

    @property
    def onset(self) -> int | None:
        return onset_hour(self.sepsis_label)

    @property
    def septic(self) -> bool:
        return self.onset is not None


def parse_site(site: str) -> tuple[int, int]:
    """``ids:100001-102000`` -> the patient-number range (inclusive)."""
    m = SITE_RE.match(site)
    if not m or int(m.group(1)) > int(m.group(2)):
        raise ValueError(f"bad sepsis site {site!r}; use ids:FROM-TO with 6-digit patient numbers, e.g. ids:100001-102000")
    return int(m.group(1)), int(m.group(2))


@functools.lru_cache(maxsize=4)
def read_patients(folder: str, lo: int, hi: int) -> tuple[Patient, ...]:
    """The patients p{lo}..p{hi} of the tarball in ``folder``, in patient order, each checked against
    MANIFEST.csv. Only the selected members are decoded (a site reads its own patients)."""
    base = Path(folder)
    manifest = {}
    with open(base / "MANIFEST.csv", encoding="ascii") as f:
        header = f.readline().strip().split(",")
        fi, si = header.index("file"), header.index("sha256")
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == len(header):
                manifest[parts[fi]] = parts[si]
    tars = sorted(base.glob("*.tar.gz"))
    if not tars:
        raise FileNotFoundError(f"no tarball in {base}")
    bodies: list[bytes] = []
    pids: list[int] = []
    with tarfile.open(tars[0], "r:gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not re.fullmatch(r"p\d{6}\.psv", name) or not lo <= int(name[1:7]) <= hi:
                continue
            raw = tar.extractfile(member).read()  # type: ignore[union-attr]
            if hashlib.sha256(raw).hexdigest() != manifest.get(name):
                raise ValueError(f"{member.name}: sha256 does not match {base / 'MANIFEST.csv'}")
            head, _, body = raw.partition(b"\n")
            if head.count(b"|") != N_COLUMNS - 1 or not head.endswith(b"SepsisLabel"):
                raise ValueError(f"{member.name}: not the Challenge's 41-column header")
            bodies.append(body)
            pids.append(int(name[1:7]))
    if not pids:
        return ()
    counts = [b.count(b"\n") for b in bodies]
    # One C-level parse of all rows (strtod reads "NaN"): ~10x faster than splitting lines in Python.
    text = b"".join(bodies).replace(b"|", b" ").decode("ascii")
    flat = np.fromstring(text, sep=" ")  # text mode (sep given), not the deprecated binary mode
    if flat.size != sum(counts) * N_COLUMNS:
        raise ValueError(f"{tars[0]}: expected {sum(counts)} rows x {N_COLUMNS} values, parsed {flat.size} values")
    table = flat.reshape(-1, N_COLUMNS)
    out = []
    order = np.argsort(pids, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in order:
        rows = table[starts[i] : starts[i + 1]]
        out.append(Patient(pids[i], np.ascontiguousarray(rows[:, : len(VITALS)]), rows[:, LABEL_COLUMN].astype(np.int64)))
    return tuple(out)


@dataclass(frozen=True)
class HourIndex:
    """Which patient and hour each row of a split is, and that patient's onset (-1: never septic)."""

    patient: np.ndarray
    hour: np.ndarray
    onset: np.ndarray


def stack(patients: Sequence[Patient]) -> tuple[np.ndarray, np.ndarray, HourIndex]:
    """Features, hourly labels and the row index of a list of patients (rows never mix patients)."""
    xs, ys, pid, hour, onset = [], [], [], [], []
    for p in patients:
        n = len(p.sepsis_label)
        o = p.onset
        y = hour_labels(n, o)
        if not np.array_equal(y, (p.sepsis_label > 0).astype(np.int64)):
            # the definition above must be the Challenge's label; a file where it is not breaks the task
            raise ValueError(f"p{p.pid}: SepsisLabel is not 1 exactly from its first 1 on")
        xs.append(patient_features(p.vitals))
        ys.append(y)
        pid.append(np.full(n, p.pid))
        hour.append(np.arange(n))
        onset.append(np.full(n, -1 if o is None else o))
    if not xs:
        z = np.zeros(0, dtype=np.int64)
        return np.zeros((0, len(FEATURES)), np.float32), z, HourIndex(z, z, z)
    cat = np.concatenate
    return cat(xs).astype(np.float32), cat(ys), HourIndex(cat(pid), cat(hour), cat(onset))


# -- ward figures ------------------------------------------------------------------------------------


def alert_threshold(scores: np.ndarray, index: HourIndex, rate: float = ALERT_RATE) -> float:
    """The lowest threshold at which at most ``rate`` of the non-septic patients' hours alert."""
    neg = np.sort(np.asarray(scores, dtype=np.float64)[index.onset < 0])[::-1]
    if len(neg) == 0:
        return 0.5
    k = int(np.floor(rate * len(neg)))
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))  # the k highest non-septic hours alert (fewer on ties)


def ward_figures(scores: np.ndarray, index: HourIndex, threshold: float) -> dict[str, float]:
    """alerted_1h: share of septic patients with an alert in [onset - 12 h, onset - 1 h]; alert_rate: share
    of non-septic patient-hours alerting; lead_h: median hours before onset of those patients' first alert
    in that window; septic_patients: how many septic patients the split holds."""
    s = np.asarray(scores, dtype=np.float64)
    alert = s >= threshold
    neg = index.onset < 0
    septic = np.unique(index.patient[~neg])
    in_window = (~neg) & (index.hour >= index.onset - EARLIEST_H) & (index.hour <= index.onset - ALERT_LEAD_H) & alert
    leads = []
    for pid in septic:
        rows = in_window & (index.patient == pid)
        if rows.any():
            leads.append(float((index.onset[rows] - index.hour[rows]).max()))
    return {
        "alerted_1h": len(leads) / len(septic) if len(septic) else float("nan"),
        "alert_rate": float(alert[neg].mean()) if neg.any() else float("nan"),
        "lead_h": float(np.median(leads)) if leads else float("nan"),
        "septic_patients": float(len(septic)),
    }
