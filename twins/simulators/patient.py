"""Bedside monitor replaying a real patient of the PhysioNet/CinC 2019 sepsis data (training set B subset).

Data are read in place from ``<shared>/data/physionet_sepsis2019_setB_subset`` (never copied): the tarball
member ``training_setB/pNNNNNN.psv`` is read and its SHA-256 checked against ``MANIFEST.csv``.

Replay: one chart hour per sample, ``rate`` hours per second (time compression: 1.0 → one ICU hour per
second). Published variables: HR, O2Sat, Temp (°C), SBP, MAP, DBP, Resp, EtCO2 and ICULOS (hours since ICU
admission, present on every row).

NaN handling — *skip*: a vital that is NaN in an hour is simply not published for that hour (no value, no
sequence number consumed). Nothing is invented: downstream, the twin's Kalman filter predicts through the
hole and the NEWS2-like score uses the last observed value. At the end of the stay the replay wraps around
to the first hour (``replays`` counts the loops), so a monitor can run indefinitely.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import tarfile
from pathlib import Path
from typing import Any

from asyncua import ua

VITALS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2")
PROPS = VITALS + ("ICULOS",)
# vitals as Double, the hours since ICU admission as a whole number (Int32), as a monitor gateway would publish them
TYPES = {**{v: ua.VariantType.Double for v in VITALS}, "ICULOS": ua.VariantType.Int32}


def default_sepsis_dir() -> Path:
    """$TL_SEPSIS_DIR, else the subset under $TL_DATA_ROOT, else under <repo>/../shared/data (as federated/data.py)."""
    env = os.environ.get("TL_SEPSIS_DIR")
    if env:
        return Path(env)
    root = os.environ.get("TL_DATA_ROOT")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "physionet_sepsis2019_setB_subset"


def read_manifest(data_dir: Path) -> list[dict[str, str]]:
    with open(data_dir / "MANIFEST.csv", newline="") as f:
        return list(csv.DictReader(f))


def pick_patients(data_dir: Path, n: int, min_hours: int = 24) -> list[str]:
    """Alternately a septic and a non-septic patient with ≥ ``min_hours`` of stay, in manifest order."""
    rows = [r for r in read_manifest(data_dir) if int(r["hours"]) >= min_hours]
    septic = [r["file"][:-4] for r in rows if r["sepsis_patient"] == "1"]
    other = [r["file"][:-4] for r in rows if r["sepsis_patient"] != "1"]
    out: list[str] = []
    while len(out) < n and (septic or other):
        src = septic if (len(out) % 2 == 0 and septic) or not other else other
        out.append(src.pop(0))
    return out


def load_patients(data_dir: Path, ids: list[str]) -> dict[str, list[dict[str, float]]]:
    """patient id → hourly rows (floats, NaN for missing). Checks each file against MANIFEST.csv."""
    manifest = {r["file"][:-4]: r for r in read_manifest(data_dir)}
    missing = [i for i in ids if i not in manifest]
    if missing:
        raise ValueError(f"patients not in {data_dir / 'MANIFEST.csv'}: {', '.join(missing)}")
    want = {f"training_setB/{i}.psv": i for i in ids}
    out: dict[str, list[dict[str, float]]] = {}
    tars = sorted(data_dir.glob("*.tar.gz"))
    if not tars:
        raise FileNotFoundError(f"no tarball in {data_dir}")
    with tarfile.open(tars[0], "r:gz") as tar:
        for member in tar:
            pid = want.get(member.name)
            if pid is None:
                continue
            f = tar.extractfile(member)
            assert f is not None
            raw = f.read()
            digest = hashlib.sha256(raw).hexdigest()
            if digest != manifest[pid]["sha256"]:
                raise ValueError(f"{member.name}: sha256 {digest[:16]}… does not match MANIFEST.csv")
            reader = csv.DictReader(io.StringIO(raw.decode()), delimiter="|")
            out[pid] = [{k: float(r[k]) for k in PROPS} for r in reader]
            if len(out) == len(want):
                break
    return out


class PatientSource:
    kind = "patient"
    props = PROPS
    types = TYPES

    def __init__(self, asset: str, org: str, patient_id: str, rows: list[dict[str, float]], rate: float) -> None:
        self.asset, self.org, self.patient_id, self.rows, self.rate = asset, org, patient_id, rows, rate
        self.i = 0  # next row
        self.replays = 0

    def state(self) -> dict[str, Any]:
        return {"i": self.i, "replays": self.replays, "patient": self.patient_id}

    def restore(self, s: dict[str, Any]) -> None:
        if s.get("patient") == self.patient_id:
            self.i, self.replays = int(s["i"]), int(s["replays"])

    def step(self) -> dict[str, float]:
        row = self.rows[self.i]
        self.i += 1
        if self.i >= len(self.rows):
            self.i, self.replays = 0, self.replays + 1
        return {k: v for k, v in row.items() if not math.isnan(v)}
