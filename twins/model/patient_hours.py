"""A patient twin's hourly chart, kept just long enough to compute the sepsis model's features online.

The sepsis task (``federated.sepsis``) trains on one row per ICU hour: the eight vitals of the hour (NaN = not
measured), forward-filled within the stay, a not-yet-observed flag each and their 3 h / 6 h changes. A bedside
replay publishes one hour as one sample: every vital measured that hour and ``ICULOS`` (hours since admission,
present every hour) with the same SourceTimestamp. The bridge orders readings per variable only, so the values of
one hour may arrive interleaved with those of the next; an hour is therefore the set of values sharing a source
timestamp (within ``SAME_HOUR_US``), and a value may still join any hour the chart keeps.

The chart keeps ``KEEP`` hours (``federated.sepsis.WINDOW_H`` for the features, plus slack for late values); an hour
leaving it is folded into ``carry`` (the last observed value of each vital before the kept hours), so
``features()`` is ``federated.sepsis.window_features`` over exactly what ``patient_features`` would see for the
whole stay. ``ICULOS`` going down starts a new stay (the replay wrapped around): the chart restarts empty, so no
value of one stay is carried into the next (as the training data never mixes patients). The latest hour may still
be filling when the twin is asked (its missing values are then the previous hours' forward fill, what the bedside
knows at that moment); the runtime checks alerts when an asset's next sample starts, when its hour is complete.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from federated.sepsis import VITALS, WINDOW_H, carry_forward, window_features

#: Values this close in source time belong to one hour (the simulator stamps one sample with one timestamp,
#: moved by 1 µs only when two samples of a variable would share it).
SAME_HOUR_US = 1000
#: Hours kept: the feature window plus slack for a vital delivered after values of later hours.
KEEP = WINDOW_H + 2
HOUR_PROP = "ICULOS"
_INDEX = {v: i for i, v in enumerate(VITALS)}


def _nan_list(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _json_list(values: np.ndarray | list[float]) -> list[float | None]:
    return [None if math.isnan(float(v)) else float(v) for v in values]


class PatientHours:
    def __init__(self) -> None:
        self.hours: list[list[Any]] = []  # [source_ts_us, ICULOS or None, [len(VITALS) floats, NaN = not measured]]
        self.carry: np.ndarray | None = None  # forward-filled vitals of the stay's hours before self.hours
        self.stay_start_us: int | None = None
        self.late = 0  # values for an hour no longer kept (or of a previous stay): not used
        self.stays = 0  # new stays seen (ICULOS went down)

    def _hour(self, ts_us: int) -> list[Any] | None:
        for h in reversed(self.hours):
            if abs(h[0] - ts_us) <= SAME_HOUR_US:
                return h
        if (self.stay_start_us is not None and ts_us < self.stay_start_us) or (
                self.carry is not None and self.hours and ts_us < self.hours[0][0]):
            self.late += 1  # an hour already folded into carry, or of the previous stay
            return None
        h = [int(ts_us), None, [math.nan] * len(VITALS)]
        self.hours.append(h)
        self.hours.sort(key=lambda r: r[0])
        return h

    def add(self, prop: str, ts_us: int, value: float) -> None:
        """One good reading of the patient's monitor (other variables are ignored)."""
        if prop != HOUR_PROP and prop not in _INDEX:
            return
        h = self._hour(ts_us)
        if h is None:
            return
        if prop == HOUR_PROP:
            h[1] = float(value)
            before = [r for r in self.hours if r[0] < h[0] and r[1] is not None]
            if before and value < before[-1][1]:  # the ICU hour went back: a new stay begins at this hour
                self.hours = [r for r in self.hours if r[0] >= h[0]]
                self.carry, self.stay_start_us = None, h[0]
                self.stays += 1
        else:
            h[2][_INDEX[prop]] = float(value)
        while len(self.hours) > KEEP:
            self.carry = carry_forward(self.carry, np.asarray(self.hours.pop(0)[2]))

    def features(self) -> np.ndarray | None:
        """The sepsis features (``federated.sepsis.FEATURES``) of the latest hour; None before the first hour."""
        if not self.hours:
            return None
        rows = np.asarray([h[2] for h in self.hours], dtype=np.float64)
        carry = self.carry
        for row in rows[:-WINDOW_H]:
            carry = carry_forward(carry, row)
        return window_features(carry, rows[-WINDOW_H:] if carry is not None else rows)

    def latest_us(self) -> int | None:
        return self.hours[-1][0] if self.hours else None

    def to_dict(self) -> dict[str, Any]:
        return {"hours": [[h[0], h[1], _json_list(h[2])] for h in self.hours],
                "carry": None if self.carry is None else _json_list(self.carry),
                "stay_start_us": self.stay_start_us, "late": self.late, "stays": self.stays}

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> PatientHours:
        out = PatientHours()
        if not d:
            return out
        out.hours = [[int(h[0]), None if h[1] is None else float(h[1]), _nan_list(h[2])] for h in d.get("hours", [])]
        out.carry = None if d.get("carry") is None else np.asarray(_nan_list(d["carry"]), dtype=np.float64)
        out.stay_start_us = d.get("stay_start_us")
        out.late, out.stays = int(d.get("late", 0)), int(d.get("stays", 0))
        return out
