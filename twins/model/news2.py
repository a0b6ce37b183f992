"""A NEWS2-like early-warning score for bedside-monitor twins.

Royal College of Physicians, National Early Warning Score 2 (2017), computed from what a bedside monitor
of the PhysioNet 2019 data carries. Two of the seven NEWS2 parameters are NOT in the data and are assumed
normal — so this is labelled ``"NEWS2-like (partial)"`` and can only under-estimate a real NEWS2:

- consciousness (ACVPU): assumed Alert (0 points)
- supplemental oxygen: assumed room air (0 points); SpO2 is scored on scale 1

Bands (values rounded as a chart would: rates and pressures to integers, temperature to 0.1 °C):

| parameter | 3 | 2 | 1 | 0 | 1 | 2 | 3 |
|---|---|---|---|---|---|---|---|
| respiration /min | ≤8 | | 9–11 | 12–20 | | 21–24 | ≥25 |
| SpO2 % (scale 1) | ≤91 | 92–93 | 94–95 | ≥96 | | | |
| systolic BP mmHg | ≤90 | 91–100 | 101–110 | 111–219 | | | ≥220 |
| pulse /min | ≤40 | | 41–50 | 51–90 | 91–110 | 111–130 | ≥131 |
| temperature °C | ≤35.0 | | 35.1–36.0 | 36.1–38.0 | 38.1–39.0 | ≥39.1 | |

Risk: total 0–4 "low" (but any single parameter scoring 3 → "low-medium"), 5–6 "medium", ≥7 "high".
A parameter never observed scores 0 and is listed under ``missing``.

Patient twins use it as their risk only until the hospitals' federated sepsis model is in use
(``twins.model.ledger_watch``): their predictions and alerts then come from that model and name its hash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LABEL = "NEWS2-like (partial: consciousness assumed Alert, room air assumed)"
#: The model label of a patient twin (and of its alerts) before the hospitals' federated sepsis model has a committed
#: round: the rules, named as a fallback like the machines' ``fallback:ai4i-rules-v1``, never passed off as a model.
FALLBACK_LABEL = "fallback:news2-like-v1"


def _resp(v: float) -> int:
    v = round(v)
    return 3 if v <= 8 else 1 if v <= 11 else 0 if v <= 20 else 2 if v <= 24 else 3


def _spo2(v: float) -> int:
    v = round(v)
    return 3 if v <= 91 else 2 if v <= 93 else 1 if v <= 95 else 0


def _sbp(v: float) -> int:
    v = round(v)
    return 3 if v <= 90 else 2 if v <= 100 else 1 if v <= 110 else 0 if v <= 219 else 3


def _pulse(v: float) -> int:
    v = round(v)
    return 3 if v <= 40 else 1 if v <= 50 else 0 if v <= 90 else 1 if v <= 110 else 2 if v <= 130 else 3


def _temp(v: float) -> int:
    v = round(v, 1)
    return 3 if v <= 35.0 else 1 if v <= 36.0 else 0 if v <= 38.0 else 1 if v <= 39.0 else 2


SCORERS = {"Resp": _resp, "O2Sat": _spo2, "SBP": _sbp, "HR": _pulse, "Temp": _temp}


@dataclass(frozen=True)
class News2Result:
    score: int
    risk: str
    parts: dict[str, int]
    missing: list[str] = field(default_factory=list)
    label: str = LABEL

    def to_dict(self) -> dict:
        return {"score": self.score, "risk": self.risk, "parts": self.parts, "missing": self.missing, "label": self.label}


def news2(vitals: dict[str, float | None]) -> News2Result:
    """``vitals``: latest observed HR, O2Sat, Temp (°C), SBP, Resp (None/NaN = not observed)."""
    parts, missing = {}, []
    for name, fn in SCORERS.items():
        v = vitals.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing.append(name)
            parts[name] = 0
        else:
            parts[name] = fn(float(v))
    total = sum(parts.values())
    if total >= 7:
        risk = "high"
    elif total >= 5:
        risk = "medium"
    elif any(p == 3 for p in parts.values()):
        risk = "low-medium"
    else:
        risk = "low"
    return News2Result(total, risk, parts, missing)
