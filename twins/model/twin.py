"""Per-asset digital twins: state estimation, derived features, prediction, sustainability.

``update(reading)`` is the hot path (one Kalman step, a few counters); features and predictions are
computed on demand (``snapshot()``), e.g. once per anchoring interval. ``state()`` is the JSON-able state
whose canonical hash is anchored with every batch, and from which ``from_state`` restores a twin after a
bridge restart.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from federated.sepsis import HORIZON_H
from twins.anchoring.record import canonical_json
from twins.model import ai4i
from twins.model.federated import FailureModel
from twins.model.kalman import ScalarKalman
from twins.model.news2 import FALLBACK_LABEL, news2
from twins.model.patient_hours import PatientHours
from twins.model.sustainability import SustainabilityConfig, metrics
from twins.readings import Reading

MACHINE_SIGNALS = ("AirTemperature", "ProcessTemperature", "RotationalSpeed", "Torque", "ToolWear", "Power", "Energy")
FAILURE_FLAGS = ("MachineFailure", "TWF", "HDF", "PWF", "OSF", "RNF")
PATIENT_SIGNALS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2")


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class Twin:
    kind = "generic"

    def __init__(self, asset: str, org: str) -> None:
        self.asset = asset
        self.org = org
        self.filters: dict[str, ScalarKalman] = {}
        self.last: dict[str, list] = {}  # prop -> [seq, source_ts_us, value]
        self.updates = 0

    def update(self, r: Reading) -> None:
        f = self.filters.get(r.prop)
        if f is None:
            f = self.filters[r.prop] = ScalarKalman.for_signal(r.prop)
        f.update(r.value)
        self.last[r.prop] = [r.seq, r.source_ts_us, r.value]
        self.updates += 1

    def est(self, prop: str) -> float | None:
        f = self.filters.get(prop)
        return f.x if f is not None and f.n else None

    def raw(self, prop: str) -> float | None:
        v = self.last.get(prop)
        return v[2] if v else None

    def state(self) -> dict[str, Any]:
        return {
            "asset": self.asset, "org": self.org, "kind": self.kind, "updates": self.updates,
            "filters": {k: f.to_dict() for k, f in sorted(self.filters.items())},
            "last": dict(sorted(self.last.items())),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        self.updates = int(d.get("updates", 0))
        self.filters = {k: ScalarKalman.from_dict(v) for k, v in d.get("filters", {}).items()}
        self.last = {k: list(v) for k, v in d.get("last", {}).items()}

    def state_json_and_hash(self) -> tuple[str, str]:
        b = canonical_json(self.state())
        return b.decode(), hashlib.sha256(b).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        return {
            "asset": self.asset, "org": self.org, "kind": self.kind, "updates": self.updates,
            "estimates": {k: {"value": f.x, "std": f.std} for k, f in sorted(self.filters.items()) if f.n},
            "last_seq": {k: v[0] for k, v in sorted(self.last.items())},
        }


class MachineTwin(Twin):
    kind = "machine"

    def __init__(self, asset: str, org: str, sustainability: SustainabilityConfig | None = None) -> None:
        super().__init__(asset, org)
        self.cfg = sustainability or SustainabilityConfig()
        self.products = {"L": 0, "M": 0, "H": 0}
        self.failures = {m: 0 for m in FAILURE_FLAGS}
        self.energy_kwh = 0.0
        self._last_energy: float | None = None
        self.model: FailureModel | None = None

    def update(self, r: Reading) -> None:
        p = r.prop
        if p in FAILURE_FLAGS:
            if r.value >= 0.5:
                self.failures[p] += 1
            self.last[p] = [r.seq, r.source_ts_us, r.value]
            self.updates += 1
            return
        if p == "ProductType":
            t = ai4i.CODE_TYPE.get(int(round(r.value)))
            if t:
                self.products[t] += 1
            self.last[p] = [r.seq, r.source_ts_us, r.value]
            self.updates += 1
            return
        if p == "Energy":
            if self._last_energy is not None and r.value > self._last_energy:
                self.energy_kwh += r.value - self._last_energy
            self._last_energy = r.value
        super().update(r)

    def type_mix(self) -> dict[str, float]:
        n = sum(self.products.values())
        if n == 0:
            return dict(ai4i.TYPE_SHARE)
        return {t: c / n for t, c in self.products.items()}

    def features(self) -> dict[str, float] | None:
        air, proc = self.est("AirTemperature"), self.est("ProcessTemperature")
        rpm, tq = self.est("RotationalSpeed"), self.est("Torque")
        wear = self.raw("ToolWear")
        if None in (air, proc, rpm, tq, wear):
            return None
        return {
            "air_k": air, "process_k": proc, "rpm": rpm, "torque_nm": tq, "wear_min": wear,
            "temp_diff_k": proc - air, "power_w": ai4i.power_w(tq, rpm), "strain_min_nm": wear * tq,
        }

    def predict(self) -> dict[str, Any] | None:
        f = self.features()
        if f is None:
            return None
        model = self.model  # read once: the runtime may swap it between two readings, never within a prediction
        if model is not None:
            return {"probability": float(model.predict(f, self.type_mix())), "model": model.label,
                    "model_sha256": model.sha256}
        pred = ai4i.fallback_failure_probability(f["air_k"], f["process_k"], f["rpm"], f["torque_nm"], f["wear_min"], self.type_mix())
        return {"probability": pred.probability, "modes": pred.modes, "model": pred.model, "model_sha256": None}

    def model_label(self) -> str:
        return self.model.label if self.model is not None else ai4i.FALLBACK_LABEL

    def sustainability(self) -> dict[str, float]:
        return metrics(self.energy_kwh, self.products, self.cfg)

    def state(self) -> dict[str, Any]:
        d = super().state()
        d.update(products=self.products, failures=self.failures, energy_kwh=self.energy_kwh, last_energy=self._last_energy)
        # the model predicting from this state: anchored with it (state hash in every batch record); not restored,
        # as a restarted twin uses the model the ledger names then
        d["model"] = self.model_label()
        return d

    def load_state(self, d: dict[str, Any]) -> None:
        super().load_state(d)
        self.products = {k: int(v) for k, v in d.get("products", self.products).items()}
        self.failures = {k: int(v) for k, v in d.get("failures", self.failures).items()}
        self.energy_kwh = float(d.get("energy_kwh", 0.0))
        self._last_energy = d.get("last_energy")

    def snapshot(self) -> dict[str, Any]:
        s = super().snapshot()
        s.update(features=self.features(), prediction=self.predict(), failures=self.failures, sustainability=self.sustainability())
        return s


class PatientTwin(Twin):
    """A bedside monitor's patient. Predicts sepsis onset within ``federated.sepsis.HORIZON_H`` hours with the
    hospitals' federated model once the ledger has committed one (``self.model``, swapped in by the runtime), from
    the hourly chart ``twins.model.patient_hours`` keeps; before that, its only risk is the NEWS2-like score,
    labelled ``news2.FALLBACK_LABEL`` (and its alerts are NEWS2 alerts)."""

    kind = "patient"

    def __init__(self, asset: str, org: str) -> None:
        super().__init__(asset, org)
        self.chart = PatientHours()
        self.model: FailureModel | None = None

    def update(self, r: Reading) -> None:
        self.chart.add(r.prop, r.source_ts_us, r.value)
        super().update(r)

    def vitals(self) -> dict[str, float | None]:
        return {k: self.raw(k) for k in PATIENT_SIGNALS}

    def features(self) -> dict[str, float | None]:
        hr, sbp, dbp = self.est("HR"), self.est("SBP"), self.est("DBP")
        return {
            "shock_index": hr / sbp if hr is not None and sbp else None,
            "pulse_pressure": sbp - dbp if sbp is not None and dbp is not None else None,
        }

    def risk(self) -> dict[str, Any]:
        return news2(self.vitals()).to_dict()

    def predict(self) -> dict[str, Any] | None:
        """P(sepsis onset within the horizon) by the federated model, naming it; None while no model is in use (the
        NEWS2-like fallback is then the risk) or before the first hour."""
        model = self.model  # read once: the runtime may swap it between two readings, never within a prediction
        if model is None:
            return None
        x = self.chart.features()
        if x is None:
            return None
        return {"probability": model.predict_features(x), "model": model.label, "model_sha256": model.sha256,
                "target": f"sepsis onset within {HORIZON_H} h", "hour_ts_us": self.chart.latest_us()}

    def model_label(self) -> str:
        return self.model.label if self.model is not None else FALLBACK_LABEL

    def state(self) -> dict[str, Any]:
        d = super().state()
        d["chart"] = self.chart.to_dict()
        d["model"] = self.model_label()  # anchored with the state, not restored (as MachineTwin.state)
        return d

    def load_state(self, d: dict[str, Any]) -> None:
        super().load_state(d)
        self.chart = PatientHours.from_dict(d.get("chart"))

    def snapshot(self) -> dict[str, Any]:
        s = super().snapshot()
        s.update(features=self.features(), risk=self.risk(), prediction=self.predict(), model=self.model_label())
        return s


def make_twin(kind: str, asset: str, org: str, sustainability: SustainabilityConfig | None = None) -> Twin:
    if kind == "machine":
        return MachineTwin(asset, org, sustainability)
    if kind == "patient":
        return PatientTwin(asset, org)
    return Twin(asset, org)
