"""What-if simulation for a machine twin: change the spindle speed for some hours, see risk and footprint.

Model (deterministic expectation, product by product, starting from the twin's current estimates):

- products arrive with the twin's observed type mix; cutting time per product = AI4I tool-wear minutes of its
  type (2/3/5 min for L/M/H) ÷ speed factor (slower spindle, longer cut), so products per hour scale with it;
- torque stays at its estimate (same cut, same load); rotational speed = estimate × factor;
  power P = torque · ω, energy per product = P · cutting time;
- tool wear grows by the AI4I increment per product (Taylor's tool-life gain at lower speed is ignored:
  conservative); the tool is replaced (wear → 0) when it reaches ``replace_tool_at`` (default 200 min, the
  start of the TWF band; None = never);
- per-product failure probability from the same model the twin uses (fallback rules, or the federated model);
  P(≥1 failure) = 1 − Π(1 − p), expected failures = Σ p;
- energy → CO2, products → water and waste, with the twin's sustainability factors.

The result is compared with the same horizon at factor 1.0 (the baseline).
"""

from __future__ import annotations

import math
from typing import Any

from twins.model import ai4i
from twins.model.sustainability import metrics
from twins.model.twin import MachineTwin


def _run(twin: MachineTwin, f: dict[str, float], speed_factor: float, hours: float, replace_tool_at: float | None) -> dict[str, Any]:
    mix = twin.type_mix()
    cut_min = sum(w * ai4i.WEAR_PER_PRODUCT[t] for t, w in mix.items()) / speed_factor  # expected minutes / product
    n = int(math.floor(hours * 60.0 / cut_min))
    rpm = f["rpm"] * speed_factor
    tq = f["torque_nm"]
    p_w = ai4i.power_w(tq, rpm)
    wear = f["wear_min"]
    wear_step = sum(w * ai4i.WEAR_PER_PRODUCT[t] for t, w in mix.items())
    surv, expected, tool_changes = 1.0, 0.0, 0
    for _ in range(n):
        if twin.model is not None:
            feats = dict(f, rpm=rpm, wear_min=wear, power_w=p_w, strain_min_nm=wear * tq)
            p = float(twin.model.predict(feats, mix))
        else:
            p = ai4i.fallback_failure_probability(f["air_k"], f["process_k"], rpm, tq, wear, mix).probability
        surv *= 1.0 - p
        expected += p
        wear += wear_step
        if replace_tool_at is not None and wear >= replace_tool_at:
            wear, tool_changes = 0.0, tool_changes + 1
    energy_kwh = p_w * n * cut_min * 60.0 / 3.6e6
    products = {t: n * w for t, w in mix.items()}
    m = metrics(energy_kwh, products, twin.cfg)  # type: ignore[arg-type]
    return {
        "speed_factor": speed_factor, "hours": hours, "rpm": rpm, "power_w": p_w, "products": n,
        "failure_risk": 1.0 - surv, "expected_failures": expected, "tool_changes": tool_changes,
        "energy_kwh": m["energy_kwh"], "co2_kg": m["co2_kg"], "water_l": m["water_l"], "waste_kg": m["waste_kg"],
    }


def whatif_speed(twin: MachineTwin, speed_factor: float = 0.9, hours: float = 8.0, replace_tool_at: float | None = 200.0) -> dict[str, Any]:
    if not 0.1 <= speed_factor <= 2.0:
        raise ValueError(f"speed factor {speed_factor} outside 0.1–2.0")
    if hours <= 0:
        raise ValueError("hours must be positive")
    f = twin.features()
    if f is None:
        raise ValueError(f"twin {twin.asset} has no estimates yet (needs air/process temperature, speed, torque, wear)")
    scenario = _run(twin, f, speed_factor, hours, replace_tool_at)
    baseline = _run(twin, f, 1.0, hours, replace_tool_at)
    model = twin.model_label()
    return {
        "asset": twin.asset, "model": model, "scenario": scenario, "baseline": baseline,
        "delta": {k: scenario[k] - baseline[k] for k in ("failure_risk", "expected_failures", "energy_kwh", "co2_kg", "water_l", "waste_kg", "products")},
    }
