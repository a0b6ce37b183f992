"""Scalar Kalman filter (local-level model), one per signal.

Model, per measurement step k:   x_k = x_{k-1} + w_k,  w ~ N(0, q)      (state: the signal's true level)
                                 z_k = x_k + v_k,      v ~ N(0, r)      (measurement noise)

``q`` is the process-noise variance per step, ``r`` the measurement-noise variance. A missing measurement
(NaN not published) simply means no step: the estimate stays and its variance grows at the next update.
The steady-state prior variance solves P⁻² − q·P⁻ − q·r = 0, i.e. P⁻∞ = (q + √(q² + 4qr)) / 2, and the gain
K∞ = P⁻∞ / (P⁻∞ + r) — the unit test checks the filter converges to that.

Parameters per signal (``SIGNAL_PARAMS``; units²; hand-set from the generating process / clinical
variability, not fitted):

| signal | q | r | reasoning |
|---|---|---|---|
| AirTemperature [K] | 0.08 | 0.003 | AR(1) walk, step σ≈0.28 K; 0.1 K quantisation |
| ProcessTemperature [K] | 0.1 | 0.003 | air walk + its own walk |
| RotationalSpeed [rpm] | 1 | 32000 | level ~1540 rpm, per-product spread σ≈179 rpm is "noise" around it |
| Torque [Nm] | 0.01 | 100 | N(40, 10) per product: the filter estimates the mean load |
| Power [W] | 100 | 1.1e6 | τ·ω, spread σ≈1070 W |
| ToolWear [min], Energy [kWh] | 1e6 | 1e-6 | deterministic counters: track exactly |
| HR [bpm] | 4 | 9 | per chart hour |
| O2Sat [%] | 1 | 2 | |
| Temp [°C] | 0.04 | 0.04 | |
| SBP / MAP / DBP [mmHg] | 25 / 16 / 9 | 36 / 25 / 16 | |
| Resp [/min] | 2 | 4 | |
| EtCO2 [mmHg] | 4 | 4 | |
| anything else | 1 | 1 | |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIGNAL_PARAMS: dict[str, tuple[float, float]] = {
    "AirTemperature": (0.08, 0.003),
    "ProcessTemperature": (0.1, 0.003),
    "RotationalSpeed": (1.0, 32000.0),
    "Torque": (0.01, 100.0),
    "Power": (100.0, 1.1e6),
    "ToolWear": (1e6, 1e-6),
    "Energy": (1e6, 1e-6),
    "HR": (4.0, 9.0),
    "O2Sat": (1.0, 2.0),
    "Temp": (0.04, 0.04),
    "SBP": (25.0, 36.0),
    "MAP": (16.0, 25.0),
    "DBP": (9.0, 16.0),
    "Resp": (2.0, 4.0),
    "EtCO2": (4.0, 4.0),
}
DEFAULT_PARAMS = (1.0, 1.0)


@dataclass
class ScalarKalman:
    q: float
    r: float
    x: float = math.nan  # estimate (NaN until the first measurement)
    p: float = math.inf  # estimate variance
    n: int = 0  # measurements absorbed

    @staticmethod
    def for_signal(name: str) -> "ScalarKalman":
        q, r = SIGNAL_PARAMS.get(name, DEFAULT_PARAMS)
        return ScalarKalman(q, r)

    def update(self, z: float) -> float:
        if self.n == 0:
            self.x, self.p = z, self.r  # first measurement initialises the state
        else:
            p_prior = self.p + self.q
            k = p_prior / (p_prior + self.r)
            self.x += k * (z - self.x)
            self.p = (1.0 - k) * p_prior
        self.n += 1
        return self.x

    @property
    def std(self) -> float:
        return math.sqrt(self.p) if math.isfinite(self.p) else math.inf

    def steady_state_gain(self) -> float:
        q, r = self.q, self.r
        p_prior = (q + math.sqrt(q * q + 4 * q * r)) / 2
        return p_prior / (p_prior + r)

    def to_dict(self) -> dict:
        return {"q": self.q, "r": self.r, "x": self.x if self.n else None, "p": self.p if self.n else None, "n": self.n}

    @staticmethod
    def from_dict(d: dict) -> "ScalarKalman":
        k = ScalarKalman(float(d["q"]), float(d["r"]))
        if d.get("n"):
            k.x, k.p, k.n = float(d["x"]), float(d["p"]), int(d["n"])
        return k
