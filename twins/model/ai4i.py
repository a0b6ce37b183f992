"""The AI4I 2020 generating process and failure rules (S. Matzka, AI4I 2020; UCI dataset 601).

Shared by the plant-machine simulator (which *generates* data with these rules) and by the machine twin's
fallback failure model (which *predicts* with a smoothed version of the same rules).

Failure modes (a product fails when any is true):

- TWF tool wear failure: the tool is replaced or fails at a wear drawn uniformly in [200, 240] min
  (here: at that wear, it fails with probability 1/2, otherwise it is replaced without failure)
- HDF heat dissipation: process − air temperature < 8.6 K and rotational speed < 1380 rpm
- PWF power: P = torque · ω outside [3500, 9000] W
- OSF overstrain: tool wear · torque > 11 000 / 12 000 / 13 000 min·Nm for product type L / M / H
- RNF random: 0.1 % of products, whatever the process parameters
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TYPES = ("L", "M", "H")
TYPE_SHARE = {"L": 0.5, "M": 0.3, "H": 0.2}
TYPE_CODE = {"L": 0.0, "M": 1.0, "H": 2.0}
CODE_TYPE = {0: "L", 1: "M", 2: "H"}
WEAR_PER_PRODUCT = {"L": 2.0, "M": 3.0, "H": 5.0}  # min of tool wear (= cutting minutes) per product
OSF_LIMIT = {"L": 11000.0, "M": 12000.0, "H": 13000.0}  # min·Nm
HDF_DT_K = 8.6
HDF_RPM = 1380.0
PWF_LOW_W = 3500.0
PWF_HIGH_W = 9000.0
TWF_WEAR_MIN, TWF_WEAR_MAX = 200.0, 240.0
RNF_P = 0.001

# Rotational speed "calculated from a power of 2860 W, overlaid with normal noise". Taken literally
# (ω = 2860 W / torque) it gives ~680 rpm at 40 Nm, far below the published data (mean 1539 rpm), so the
# nominal speed is calibrated on the real ai4i2020.csv by least squares on that same regressor:
#   rpm = SPEED_A + SPEED_B · (2860 W / torque) · 60 / 2π + N(0, SPEED_NOISE)
# (fit on the 10 000 rows: A = 1075.7, B = 0.6274, residual σ = 71.1 rpm.)
NOMINAL_POWER_W = 2860.0
SPEED_A, SPEED_B, SPEED_NOISE = 1075.69, 0.62740, 71.1


def omega(rpm: float) -> float:
    return rpm * 2.0 * math.pi / 60.0


def power_w(torque_nm: float, rpm: float) -> float:
    return torque_nm * omega(rpm)


def nominal_rpm(torque_nm: float) -> float:
    return SPEED_A + SPEED_B * (NOMINAL_POWER_W / max(torque_nm, 1e-3)) * 60.0 / (2.0 * math.pi)


def rule_flags(ptype: str, air_k: float, process_k: float, rpm: float, torque_nm: float, wear_min: float) -> dict[str, bool]:
    """The deterministic rules (HDF, PWF, OSF). TWF and RNF need the tool's drawn limit / chance."""
    p = power_w(torque_nm, rpm)
    return {
        "HDF": (process_k - air_k) < HDF_DT_K and rpm < HDF_RPM,
        "PWF": p < PWF_LOW_W or p > PWF_HIGH_W,
        "OSF": wear_min * torque_nm > OSF_LIMIT[ptype],
    }


def _sig(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# Softness of each rule: the width over which the fallback probability goes from ~27 % to ~73 %.
SOFT_DT_K = 0.3
SOFT_RPM = 15.0
SOFT_POWER_W = 150.0
SOFT_STRAIN = 250.0


#: The label of every prediction of the rules model: machine twins use it only until a committed federated
#: round's model is loaded (``twins.model.federated``), and say so.
FALLBACK_LABEL = "fallback:ai4i-rules-v1"


@dataclass(frozen=True)
class FallbackPrediction:
    probability: float  # P(the next product fails)
    modes: dict[str, float]  # per-mode probabilities
    model: str = FALLBACK_LABEL


def fallback_failure_probability(
    air_k: float, process_k: float, rpm: float, torque_nm: float, wear_min: float,
    type_mix: dict[str, float] | None = None,
) -> FallbackPrediction:
    """Physics-rule model: each AI4I rule turned into a logistic of its margin, combined as independent risks.

    p_HDF = σ((8.6 − ΔT)/0.3) · σ((1380 − rpm)/15)
    p_PWF = σ((3500 − P)/150) + σ((P − 9000)/150)
    p_OSF = Σ_type mix(type) · σ((wear·torque − limit(type))/250)
    p_TWF = ½ · P(tool limit ~ U[200, 240] is reached by the next product's wear) given it was not reached yet
    p_RNF = 0.001
    P(failure) = 1 − Π(1 − p_mode)

    Labelled "fallback" until a federated model whose hash matches the ledger is loaded
    (``twins.model.federated``).
    """
    mix = type_mix or TYPE_SHARE
    dt = process_k - air_k
    p = power_w(torque_nm, rpm)
    p_hdf = _sig((HDF_DT_K - dt) / SOFT_DT_K) * _sig((HDF_RPM - rpm) / SOFT_RPM)
    p_pwf = min(1.0, _sig((PWF_LOW_W - p) / SOFT_POWER_W) + _sig((p - PWF_HIGH_W) / SOFT_POWER_W))
    p_osf = sum(w * _sig((wear_min * torque_nm - OSF_LIMIT[t]) / SOFT_STRAIN) for t, w in mix.items())
    p_twf = 0.0
    for t, w in mix.items():
        nxt = wear_min + WEAR_PER_PRODUCT[t]
        lo = max(wear_min, TWF_WEAR_MIN)
        hi = min(nxt, TWF_WEAR_MAX)
        remaining = TWF_WEAR_MAX - max(wear_min, TWF_WEAR_MIN)
        if hi > lo and remaining > 0:
            p_twf += w * 0.5 * (hi - lo) / remaining
        elif wear_min >= TWF_WEAR_MAX:
            p_twf += w * 0.5
    modes = {"TWF": p_twf, "HDF": p_hdf, "PWF": p_pwf, "OSF": p_osf, "RNF": RNF_P}
    surv = 1.0
    for v in modes.values():
        surv *= 1.0 - min(max(v, 0.0), 1.0)
    return FallbackPrediction(1.0 - surv, modes)
