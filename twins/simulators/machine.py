"""Plant machine following the AI4I 2020 generating process, one product (= one sample) at a time.

Per product (``twins.model.ai4i`` holds the constants and rules):

- type L/M/H with probability 0.5/0.3/0.2;
- air temperature: 300 K + an AR(1) walk of stationary σ = 2 K (φ = 0.99 per product) — Matzka's "random walk
  normalised to σ 2 K around 300 K", kept bounded for endless runs;
- process temperature: air + 10 K + an AR(1) walk of σ = 1 K;
- torque ~ N(40, 10) Nm, floored at 3.8 Nm (the data's minimum);
- rotational speed from the 2860 W nominal power plus N(0, 71.1) rpm noise (calibration in ``ai4i``);
- tool wear += 5/3/2 min for H/M/L; a new tool draws its limit ~ U[200, 240] min; at that wear the tool is
  replaced, failing (TWF) with probability ½; after a TWF or a replacement wear restarts at 0;
- HDF, PWF, OSF by the AI4I rules, RNF with probability 0.1 %; MachineFailure = any mode;
- power P = torque · ω (W); energy counter += P × cutting time, with cutting time = the product's tool-wear
  minutes (kWh).

Seeded: product n of machine m draws from its own stream ``Random(f"{seed}:{asset}:{n}")``, so a restarted
simulator continues deterministically from its persisted state.
"""

from __future__ import annotations

import math
import random
from typing import Any

from asyncua import ua

from twins.model import ai4i

PROPS = (
    "ProductType", "AirTemperature", "ProcessTemperature", "RotationalSpeed", "Torque", "ToolWear",
    "Power", "Energy", "MachineFailure", "TWF", "HDF", "PWF", "OSF", "RNF",
)
PHI = 0.99
# Each signal's OPC-UA scalar type, as a PLC would declare it: measurements Double (speed a Float, as many drives
# report it), the product type an Int32 code (0 L, 1 M, 2 H), tool wear whole minutes in a UInt16, the failure
# flags Booleans.
_D, _F = ua.VariantType.Double, ua.VariantType.Float
TYPES = {"ProductType": ua.VariantType.Int32, "AirTemperature": _D, "ProcessTemperature": _D, "RotationalSpeed": _F,
         "Torque": _D, "ToolWear": ua.VariantType.UInt16, "Power": _D, "Energy": _D,
         **{flag: ua.VariantType.Boolean for flag in ("MachineFailure", "TWF", "HDF", "PWF", "OSF", "RNF")}}


class MachineSource:
    kind = "machine"
    props = PROPS
    types = TYPES

    def __init__(self, asset: str, org: str, seed: int, rate: float) -> None:
        self.asset, self.org, self.seed, self.rate = asset, org, seed, rate
        self.n = 0  # products made
        self.d_air = 0.0
        self.d_proc = 0.0
        self.wear = 0.0
        self.energy_kwh = 0.0
        self.rng = random.Random(f"{seed}:{asset}:0")
        self.wear_limit = self.rng.uniform(ai4i.TWF_WEAR_MIN, ai4i.TWF_WEAR_MAX)

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "d_air": self.d_air, "d_proc": self.d_proc, "wear": self.wear,
                "energy_kwh": self.energy_kwh, "wear_limit": self.wear_limit}

    def restore(self, s: dict[str, Any]) -> None:
        self.n = int(s["n"])
        self.d_air, self.d_proc = float(s["d_air"]), float(s["d_proc"])
        self.wear, self.energy_kwh, self.wear_limit = float(s["wear"]), float(s["energy_kwh"]), float(s["wear_limit"])

    def step(self) -> dict[str, float]:
        self.n += 1
        rng = self.rng = random.Random(f"{self.seed}:{self.asset}:{self.n}")  # product n's own stream
        u = rng.random()
        t = "L" if u < 0.5 else "M" if u < 0.8 else "H"
        k = math.sqrt(1 - PHI * PHI)
        self.d_air = PHI * self.d_air + k * 2.0 * rng.gauss(0, 1)
        self.d_proc = PHI * self.d_proc + k * 1.0 * rng.gauss(0, 1)
        air = 300.0 + self.d_air
        proc = air + 10.0 + self.d_proc
        torque = max(3.8, rng.gauss(40.0, 10.0))
        rpm = max(600.0, ai4i.nominal_rpm(torque) + rng.gauss(0.0, ai4i.SPEED_NOISE))
        cut = ai4i.WEAR_PER_PRODUCT[t]
        self.wear += cut
        flags = ai4i.rule_flags(t, air, proc, rpm, torque, self.wear)
        twf = False
        wear_out = self.wear
        if self.wear >= self.wear_limit:
            twf = rng.random() < 0.5
            self.wear = 0.0
            self.wear_limit = rng.uniform(ai4i.TWF_WEAR_MIN, ai4i.TWF_WEAR_MAX)
        rnf = rng.random() < ai4i.RNF_P
        p = ai4i.power_w(torque, rpm)
        self.energy_kwh += p * cut * 60.0 / 3.6e6
        fail = twf or rnf or any(flags.values())
        return {
            "ProductType": ai4i.TYPE_CODE[t], "AirTemperature": round(air, 2), "ProcessTemperature": round(proc, 2),
            "RotationalSpeed": round(rpm, 1), "Torque": round(torque, 2), "ToolWear": wear_out, "Power": round(p, 1),
            "Energy": self.energy_kwh, "MachineFailure": float(fail), "TWF": float(twf), "HDF": float(flags["HDF"]),
            "PWF": float(flags["PWF"]), "OSF": float(flags["OSF"]), "RNF": float(rnf),
        }
