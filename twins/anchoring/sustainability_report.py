"""Sustainability attestations on the ledger: one ``twins:ReportSustainability`` per plant org and UTC day.

The contract keeps one report per (org, period) for ever and its finest period is a day, so a report can only
be made once its day is over: a report of a day still running would lock in a partial figure. The bridge checks
every ``report_every`` anchoring intervals (and at start) which completed days of each org have sealed batches
but no report yet, and reports them (``due_reports``).

A day's figures come from sealed twin states only, so anyone holding the store can recompute them and a
resubmission after a crash is byte-identical (the contract answers "already reported"; the anchorer then
compares with ``ReadSustainability``): per machine, the cumulative energy and product counts sealed with the
org's last batch of the day minus those sealed with its last batch before the day (zero before the first),
turned into energy / CO2 / water / waste with the mapping's factors (``twins.model.sustainability``). The
report also names the org's first and last batch numbers of the day, whose anchored records carry the hashes
of exactly those twin states.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from twins.anchoring.store import ReadingStore
from twins.bridge.mapping import Mapping
from twins.model.sustainability import SustainabilityConfig, plant_totals
from twins.model.twin import MachineTwin, make_twin

_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class SustainabilityReport:
    org: str
    period: str  # "YYYY-MM-DD" (UTC)
    metrics: dict[str, float | int]

    @property
    def key(self) -> str:
        return f"{self.org}/{self.period}"

    def metrics_json(self) -> str:
        return json.dumps(self.metrics, sort_keys=True, separators=(",", ":"))

    def args(self) -> tuple[str, str, str]:
        return self.org, self.period, self.metrics_json()


def day_of(t_us: int) -> str:
    return dt.datetime.fromtimestamp(t_us / 1e6, dt.timezone.utc).date().isoformat()


def _day_start_us(day: str) -> int:
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000


def _totals(store: ReadingStore, org: str, assets: list[str], batch_no: int | None,
            cfg: SustainabilityConfig) -> dict[str, float]:
    per_asset = []
    if batch_no is not None:
        for asset in assets:
            sj = store.twin_state_at(asset, f"{org}:{batch_no:010d}")
            if sj is None:
                continue
            twin = make_twin("machine", asset, org, cfg)
            assert isinstance(twin, MachineTwin)
            twin.load_state(json.loads(sj))
            per_asset.append(twin.sustainability())
    return plant_totals(per_asset)


def day_report(store: ReadingStore, mapping: Mapping, org: str, day: str,
               cfg: SustainabilityConfig | None = None) -> SustainabilityReport | None:
    """The org's report for one UTC day, or None when it sealed nothing that day."""
    cfg = cfg or SustainabilityConfig.from_dict(mapping.sustainability)
    start = _day_start_us(day)
    last = store.last_batch_before(org, start + _DAY_US)
    before = store.last_batch_before(org, start)
    if last is None or last == before:
        return None
    machines = sorted(a for a, i in mapping.assets.items() if i.org == org and i.kind == "machine")
    end_t, start_t = _totals(store, org, machines, last, cfg), _totals(store, org, machines, before, cfg)
    metrics: dict[str, Any] = {k: round(max(0.0, end_t[k] - start_t[k]), 6) for k in end_t}
    metrics["products"] = int(metrics["products"])
    # the store's first batch of the org when it sealed nothing before the day (it may have joined the org's chain)
    first = before + 1 if before is not None else store.first_batch_no(org)
    metrics.update(first_batch_no=first, last_batch_no=last)
    return SustainabilityReport(org, day, metrics)


def due_reports(store: ReadingStore, mapping: Mapping, now_us: int,
                cfg: SustainabilityConfig | None = None) -> list[SustainabilityReport]:
    """Reports of every completed UTC day (before ``now_us``'s day) of every org with machines that sealed batches
    that day and has no report in the store yet, oldest first."""
    done = store.reports()
    today = day_of(now_us)
    out = []
    for org in sorted({i.org for i in mapping.assets.values() if i.kind == "machine"}):
        span = store.sealed_span(org)
        if span is None:
            continue
        day = dt.date.fromisoformat(day_of(span[0]))
        while day.isoformat() < today:
            if (org, day.isoformat()) not in done:
                rep = day_report(store, mapping, org, day.isoformat(), cfg)
                if rep is not None:
                    out.append(rep)
            day += dt.timedelta(days=1)
    return out
