"""The twins runtime: bridge → twins → per-org batches → anchorer, plus metrics and status.

``TwinRuntime`` owns the local store, the twins (one per asset of the mapping) and the batcher; the bridge
calls ``on_reading`` for every in-order, de-duplicated reading. Every ``interval`` seconds (default 1 s)
``anchor_once`` seals one batch per org that received readings and queues its record for the anchorer, with the
alerts its twin states open. Its parts: ``twins.anchoring_loop`` (the per-org submitters that take batches, alerts
and sustainability reports to the anchorer in order, and the sealing loop ``run_anchoring``) and
``twins.models_in_use`` (the ledger's federated models the twins predict with).

Restart: the store gives, per variable, the last sealed ``(seq, source_ts)`` — the bridge resumes right after
it and reads the rest back from the server's history — and the twin state sealed with the latest batch of
each org, so twins continue exactly from the readings that were sealed.

Latency metrics (per reading, milliseconds, from the value's OPC-UA SourceTimestamp):
``sensor→twin`` (twin updated), ``sensor→sealed`` (its batch committed to the local store) and
``sensor→anchored`` (the anchorer returned: with the ledger, the transaction is committed in a block).

Prometheus metrics (``twins.metrics.BridgeMetrics``, ``self.metrics``): per-org totals are plain ints here
(``*_by_org``), copied into the registry only when ``/metrics`` is scraped; the hot path adds one dict increment
and one sensor→twin histogram observation per reading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from twins.alerts import twin_alerts
from twins.anchoring.alert_outbox import AlertTracker
from twins.anchoring.anchorer import Anchorer
from twins.anchoring.batcher import Batcher
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.anchoring_loop import AnchoringLoop
from twins.bridge.mapping import Mapping
from twins.metrics import BridgeMetrics
from twins.model.ledger_watch import ModelsConfig, ModelWatcher
from twins.model.sustainability import SustainabilityConfig, plant_totals
from twins.model.twin import MachineTwin, Twin, make_twin
from twins.models_in_use import ModelsInUse
from twins.readings import Reading

log = logging.getLogger("twins.runtime")
#: Every how many anchoring intervals the bridge looks for sustainability reports that became due (completed days).
REPORT_EVERY = 60


def load_twin(store: ReadingStore, mapping: Mapping, asset: str) -> Twin:
    """One twin as sealed with its org's latest batch (what-if, reports), with the mapping's sustainability
    factors. ``ValueError`` (with the reason) when the mapping has no such asset or nothing was sealed for it."""
    info = mapping.assets.get(asset)
    if info is None:
        raise ValueError(f"{asset} is not an asset of the mapping (known: {', '.join(sorted(mapping.assets))})")
    twin = make_twin(info.kind, asset, info.org, SustainabilityConfig.from_dict(mapping.sustainability))
    sj = store.latest_twin_states().get(asset)
    if sj is None:
        raise ValueError(f"no sealed state of {asset} yet")
    twin.load_state(json.loads(sj))
    return twin


class LatencyRecorder:
    """Keeps latencies (ms) in a bounded ring; ``percentiles`` over what it holds."""

    def __init__(self, cap: int = 50_000) -> None:
        self.cap = cap
        self.values: list[float] = []
        self.count = 0

    def add(self, ms: float) -> None:
        self.count += 1
        if len(self.values) < self.cap:
            self.values.append(ms)
        else:
            self.values[self.count % self.cap] = ms

    def reset(self) -> None:
        self.values, self.count = [], 0

    def percentiles(self, *ps: float) -> list[float | None]:
        if not self.values:
            return [None for _ in ps]
        v = sorted(self.values)
        return [v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] for p in ps]


class TwinRuntime(AnchoringLoop, ModelsInUse):
    def __init__(self, mapping: Mapping, store_path: str | Path, anchorer: Anchorer, *, interval: float = 1.0,
                 sustainability: SustainabilityConfig | None = None, restore: bool = True,
                 report_every: int = REPORT_EVERY, models: ModelsConfig | None = None) -> None:
        self.mapping = mapping
        self.store = ReadingStore(store_path)
        self.anchorer = anchorer
        self.interval = interval
        self.cfg = sustainability or SustainabilityConfig.from_dict(mapping.sustainability)
        self.twins: dict[str, Twin] = {a: make_twin(i.kind, a, i.org, self.cfg) for a, i in mapping.assets.items()}
        self.by_org: dict[str, list[Twin]] = {}
        for t in self.twins.values():
            self.by_org.setdefault(t.org, []).append(t)
        if restore:
            for asset, sj in self.store.latest_twin_states().items():
                if asset in self.twins:
                    self.twins[asset].load_state(json.loads(sj))
        self.batcher = Batcher(self.store, self._twin_states)
        self.twin_latency = LatencyRecorder()
        self.seal_latency = LatencyRecorder()
        self.readings = 0
        self.not_good = 0  # readings with a Bad or Uncertain status (stored and anchored, not applied to a twin)
        self.batches = 0
        self.anchored = 0
        self.anchor_errors = 0
        self.anchor_latency = LatencyRecorder()
        self.alert_tracker = AlertTracker(self.store)
        self.alerts_raised = 0
        self.reports = 0
        self.record_errors = 0  # alerts and reports that failed an attempt
        self.report_every = report_every
        self._reports_queued: set[str] = set()
        self._last_applied: dict[str, tuple[str, int]] = {}  # asset -> (prop, seq) of its latest reading
        self._seen: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # org -> alert conditions since its last seal
        # one submission queue and task per org (created as its first record comes): an org's records go to the
        # ledger in order (its chain, and an alert after the batch that proves it), orgs in parallel, so anchoring
        # keeps up with one batch per org per interval whatever the number of orgs (a commit takes ~150 ms here)
        self._queues: dict[str, asyncio.Queue[tuple]] | None = None
        self._submitters: dict[str, asyncio.Task[None]] = {}
        # per-org running totals of this run, read by the metrics at scrape time
        orgs = sorted(self.by_org)
        self.readings_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.sealed_readings_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.batches_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.anchored_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.pending_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.anchor_errors_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.alerts_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.reports_by_org: dict[str, int] = dict.fromkeys(orgs, 0)
        self.last_anchored_by_org: dict[str, int] = {}
        self._inflight = 0  # readings detached from the batcher and being sealed
        self.metrics = BridgeMetrics()
        self._observe_twin_s = self.metrics.observe_sensor_to_twin
        self.metrics.attach_runtime(self)
        # the federated models the twins predict with: the ledger's last committed round of each kind's task
        self.models_config = models or ModelsConfig.load(Path(store_path).parent)
        self.model_watchers: dict[str, ModelWatcher] = self._model_watchers()

    def positions(self) -> dict[tuple[str, str], tuple[int, int]]:
        return self.store.last_positions()

    def _twin_states(self, org: str) -> dict[str, tuple[str, str]]:
        return {t.asset: t.state_json_and_hash() for t in self.by_org.get(org, [])}

    # --- hot path ----------------------------------------------------------------------------------
    def on_reading(self, r: Reading) -> None:
        if not r.good:  # Bad / Uncertain: sealed and anchored with its status, never a value for the twin
            self.batcher.add(r)
            self.readings += 1
            self.readings_by_org[r.org] += 1
            self.not_good += 1
            return
        twin = self.twins[r.asset]
        last = self._last_applied.get(r.asset)
        if last is not None and last[1] != r.seq:
            # the asset's previous sequence number is complete (all values of a machine's product): check the alert
            # rules on that state now, as conditions can come and go between two sealings (a worn tool is replaced)
            for a in twin_alerts({r.asset: twin.snapshot()}):
                self._seen.setdefault(r.org, {}).setdefault(
                    (a["asset"], a["kind"]), dict(a, reading={"prop": last[0], "seq": last[1]}))
        twin.update(r)
        self._last_applied[r.asset] = (r.prop, r.seq)
        self.batcher.add(r)
        self.readings += 1
        self.readings_by_org[r.org] += 1
        ms = time.time() * 1000.0 - r.source_ts_us / 1000.0
        self.twin_latency.add(ms)
        self._observe_twin_s(ms / 1000.0)

    def unsealed(self) -> int:
        """Delivered readings not sealed yet (pending in the batcher, or being sealed right now)."""
        return self.batcher.pending_count() + self._inflight

    # --- sealing -------------------------------------------------------------------------------------
    def _take(self) -> list[tuple[str, list[Reading], dict[str, tuple[str, str]], dict[str, dict[str, Any]], dict]]:
        """Detach every org's pending readings with its twins' states and snapshots at this very moment (no await in
        between, so alerts are computed from exactly the states the batch hashes)."""
        out = []
        for org in sorted(self.batcher.pending):
            taken = self.batcher.take(org)
            if taken is not None:
                self._inflight += len(taken[0])
                out.append((org, taken[0], taken[1], {t.asset: t.snapshot() for t in self.by_org.get(org, [])},
                            self._seen.pop(org, {})))
        return out

    def anchor_once(self) -> list[BatchRecord]:
        """Seal synchronously (tests, shutdown)."""
        out = []
        for org, readings, states, snaps, seen in self._take():
            try:
                sealed = self.batcher.seal_taken(org, readings, states)
            except BaseException:
                self._inflight -= len(readings)
                raise
            out += self._after_seal(org, sealed, snaps, seen)
            self._inflight -= len(readings)  # after _after_seal counted them sealed
        return out

    async def anchor_once_async(self) -> list[BatchRecord]:
        """Detach pending readings + twin states now; hash, build trees and write the store in a worker thread
        so the event loop keeps receiving notifications meanwhile (~16 ms per 1000 readings)."""
        out = []
        for org, readings, states, snaps, seen in self._take():
            try:
                sealed = await asyncio.to_thread(self.batcher.seal_taken, org, readings, states)
            except BaseException:
                self._inflight -= len(readings)
                raise
            out += self._after_seal(org, sealed, snaps, seen)
            self._inflight -= len(readings)  # after _after_seal counted them sealed
        return out

    def _after_seal(self, org: str, sealed: list[tuple[BatchRecord, list[Reading]]],
                    snapshots: dict[str, dict[str, Any]], seen: dict) -> list[BatchRecord]:
        """Queue the sealed batches, then the alerts their twin states open (an alert goes to the ledger after
        the batch that proves its state)."""
        now_ms = time.time() * 1000.0
        out = []
        for record, readings in sealed:
            for r in readings:
                self.seal_latency.add(now_ms - r.source_ts_us / 1000.0)
            self.batches += 1
            self.batches_by_org[org] = self.batches_by_org.get(org, 0) + 1
            self.sealed_readings_by_org[org] = self.sealed_readings_by_org.get(org, 0) + len(readings)
            out.append(record)
            self._queue(("batch", record, [r.source_ts_us for r in readings]))
        for alert in self.alert_tracker.observe(org, snapshots, out, seen):
            log.info("alert %s opened (%s score %s)", alert.key, alert.kind, alert.score)
            self._queue(("alert", alert))
        return out

    # --- status --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        plants: dict[str, list[dict[str, float]]] = {}
        for t in self.twins.values():
            if isinstance(t, MachineTwin):
                plants.setdefault(t.org, []).append(t.sustainability())
        p50, p99 = self.twin_latency.percentiles(50, 99)
        s50, s99 = self.seal_latency.percentiles(50, 99)
        a50, a99 = self.anchor_latency.percentiles(50, 99)
        snapshots = {a: t.snapshot() for a, t in sorted(self.twins.items())}
        return {
            "time": time.time(),  # readers derive rates from two statuses
            "twins": snapshots,
            "alerts": twin_alerts(snapshots),
            "models": self.models_status(),
            "plants": {org: plant_totals(v) for org, v in sorted(plants.items())},
            "counters": {"readings": self.readings, "not_good": self.not_good, "batches": self.batches, "anchored": self.anchored,
                         "anchor_errors": self.anchor_errors, "alerts_raised": self.alerts_raised,
                         "reports": self.reports, "record_errors": self.record_errors},
            "latency_ms": {"sensor_to_twin_p50": p50, "sensor_to_twin_p99": p99,
                           "sensor_to_sealed_p50": s50, "sensor_to_sealed_p99": s99,
                           "sensor_to_anchored_p50": a50, "sensor_to_anchored_p99": a99},
        }

    def close(self) -> None:
        self.store.close()
