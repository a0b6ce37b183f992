"""Which twins need attention now: alert rules over the twins' snapshots (``Twin.snapshot()``).

An alert is a current condition, recomputed from every snapshot (no history, no acknowledgement here; raising
an alert on the ledger is the twins contract's ``RaiseAlert``). Kinds match the contract's alert-kind pattern.

- ``failure-risk`` (machine): P(the next product fails) ≥ ``MACHINE_RISK_ALERT``. AI4I 2020's base failure
  rate is 3.4 % of products; 0.2 is ~6× that, i.e. the twin sees a machine well outside its normal regime
  (an approaching failure mode), not ordinary noise. The label of the model that predicted it goes along
  (``federated:<task>:round<N>:<hash prefix>`` or ``fallback:ai4i-rules-v1``), with the federated model's full
  SHA-256 as ``model_sha256`` (the hash the ledger committed for that round).
- ``news2`` (patient): the NEWS2-like risk band ``low-medium`` (one parameter scored 3), ``medium`` (5–6) or
  ``high`` (≥ 7) — the bands at which NEWS2 asks for an urgent clinical response.
"""

from __future__ import annotations

from typing import Any

MACHINE_RISK_ALERT = 0.2
NEWS2_ALERT_BANDS = {"low-medium": "urgent ward review", "medium": "urgent response", "high": "emergency response"}


def twin_alerts(twins: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts for ``{asset: snapshot}``, most severe first (machines by probability, patients by score)."""
    out: list[dict[str, Any]] = []
    for asset, s in sorted(twins.items()):
        pred = s.get("prediction")
        if pred and pred.get("probability") is not None and pred["probability"] >= MACHINE_RISK_ALERT:
            modes = pred.get("modes") or {}
            top = max(modes, key=modes.get) if modes else None
            out.append({
                "asset": asset, "org": s.get("org"), "kind": "failure-risk", "value": float(pred["probability"]),
                "level": "high" if pred["probability"] >= 0.5 else "elevated", "label": pred.get("model"),
                "model_sha256": pred.get("model_sha256"),
                "detail": f"P(next product fails) {pred['probability']:.2f}" + (f", mostly {top}" if top else ""),
            })
        risk = s.get("risk")
        if risk and risk.get("risk") in NEWS2_ALERT_BANDS:
            out.append({
                "asset": asset, "org": s.get("org"), "kind": "news2", "value": float(risk.get("score", 0)),
                "level": risk["risk"], "label": risk.get("label"),
                "detail": f"NEWS2-like {risk.get('score')} ({risk['risk']}: {NEWS2_ALERT_BANDS[risk['risk']]})",
            })
    order = {"high": 0, "medium": 1, "elevated": 2, "low-medium": 2}
    out.sort(key=lambda a: (order.get(a["level"], 3), -a["value"], a["asset"]))
    return out
