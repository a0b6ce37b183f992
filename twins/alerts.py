"""Which twins need attention now: alert rules over the twins' snapshots (``Twin.snapshot()``).

An alert is a current condition, recomputed from every snapshot (no history, no acknowledgement here; raising
an alert on the ledger is the twins contract's ``RaiseAlert``). Kinds match the contract's alert-kind pattern.

- ``failure-risk`` (machine): P(the next product fails) ≥ ``MACHINE_RISK_ALERT``. AI4I 2020's base failure
  rate is 3.4 % of products; 0.2 is ~6× that, i.e. the twin sees a machine well outside its normal regime
  (an approaching failure mode), not ordinary noise. The label of the model that predicted it goes along
  (``federated:<task>:round<N>:<hash prefix>`` or ``fallback:ai4i-rules-v1``), with the federated model's full
  SHA-256 as ``model_sha256`` (the hash the ledger committed for that round).
- ``sepsis-risk`` (patient, once the hospitals' federated sepsis model is in use): P(sepsis onset within 6 h)
  ≥ ``SEPSIS_RISK_ALERT``, labelled with the model and its full SHA-256 like a machine's alert. The NEWS2-like
  rules then raise no alert of their own: the consortium's model replaces them.
- ``news2`` (patient, before the sepsis model's first committed round): the NEWS2-like risk band ``low-medium``
  (one parameter scored 3), ``medium`` (5–6) or ``high`` (≥ 7) — the bands at which NEWS2 asks for an urgent
  clinical response — labelled ``fallback:news2-like-v1``.
"""

from __future__ import annotations

from typing import Any

from twins.model.news2 import FALLBACK_LABEL as NEWS2_FALLBACK_LABEL

MACHINE_RISK_ALERT = 0.2
#: The sepsis model's alert threshold. bench.quality's ward figures alert 5 % of the non-septic patient-hours of a
#: hospital's validation split (federated.sepsis.ALERT_RATE); for the federated model with the task's tuned settings
#: (serverapp.TUNED: pos-weight sqrt(neg/pos), 10 rounds) that threshold was 0.213 / 0.215 / 0.220 / 0.261 / 0.272 /
#: 0.294 (seeds 0-2 x both hospitals), median 0.24. The twin holds no validation data to recompute it per round, so
#: it uses that median; a round trained with other settings shifts it.
SEPSIS_RISK_ALERT = 0.24
NEWS2_ALERT_BANDS = {"low-medium": "urgent ward review", "medium": "urgent response", "high": "emergency response"}


def twin_alerts(twins: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts for ``{asset: snapshot}``, most severe first (machines by probability, patients by score)."""
    out: list[dict[str, Any]] = []
    for asset, s in sorted(twins.items()):
        pred = s.get("prediction")
        if s.get("kind") == "patient":
            out += _patient_alerts(asset, s)
            continue
        if pred and pred.get("probability") is not None and pred["probability"] >= MACHINE_RISK_ALERT:
            modes = pred.get("modes") or {}
            top = max(modes, key=modes.get) if modes else None
            out.append({
                "asset": asset, "org": s.get("org"), "kind": "failure-risk", "value": float(pred["probability"]),
                "level": "high" if pred["probability"] >= 0.5 else "elevated", "label": pred.get("model"),
                "model_sha256": pred.get("model_sha256"),
                "detail": f"P(next product fails) {pred['probability']:.2f}" + (f", mostly {top}" if top else ""),
            })
        elif s.get("risk") and not pred:  # a snapshot without its kind: a patient's NEWS2-like risk
            out += _patient_alerts(asset, s)
    order = {"high": 0, "medium": 1, "elevated": 2, "low-medium": 2}
    out.sort(key=lambda a: (order.get(a["level"], 3), -a["value"], a["asset"]))
    return out


def _patient_alerts(asset: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    pred = s.get("prediction")
    if pred and str(pred.get("model", "")).startswith("federated:"):
        p = pred.get("probability")
        if p is None or p < SEPSIS_RISK_ALERT:
            return []
        return [{"asset": asset, "org": s.get("org"), "kind": "sepsis-risk", "value": float(p),
                 "level": "high" if p >= 0.8 else "elevated", "label": pred["model"], "model_sha256": pred.get("model_sha256"),
                 "detail": f"P(sepsis onset within 6 h) {p:.2f}"}]
    risk = s.get("risk")
    if risk and risk.get("risk") in NEWS2_ALERT_BANDS:
        return [{"asset": asset, "org": s.get("org"), "kind": "news2", "value": float(risk.get("score", 0)),
                 "level": risk["risk"], "label": NEWS2_FALLBACK_LABEL, "model_sha256": None,
                 "detail": f"NEWS2-like {risk.get('score')} ({risk['risk']}: {NEWS2_ALERT_BANDS[risk['risk']]})"}]
    return []
