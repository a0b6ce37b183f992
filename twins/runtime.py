"""The twins runtime: bridge → twins → per-org batches → anchorer, plus metrics and status.

``TwinRuntime`` owns the local store, the twins (one per asset of the mapping) and the batcher; the bridge
calls ``on_reading`` for every in-order, de-duplicated reading. Every ``interval`` seconds (default 1 s)
``anchor_once`` seals one batch per org that received readings and queues its record for the anchorer;
a separate task submits records in order and records the returned tx ids in the store (a batch sealed but
not yet anchored when the process dies is resubmitted at the next start).

Restart: the store gives, per variable, the last sealed ``(seq, source_ts)`` — the bridge resumes right after
it and reads the rest back from the server's history — and the twin state sealed with the latest batch of
each org, so twins continue exactly from the readings that were sealed.

Latency metrics (per reading, milliseconds, from the value's OPC-UA SourceTimestamp):
``sensor→twin`` (twin updated) and ``sensor→sealed`` (its batch committed to the local store).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from twins.alerts import twin_alerts
from twins.anchoring.anchorer import Anchorer, resubmit_pending
from twins.anchoring.batcher import Batcher
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.bridge.mapping import Mapping
from twins.model.sustainability import SustainabilityConfig, plant_totals
from twins.model.twin import MachineTwin, Twin, make_twin
from twins.readings import Reading

log = logging.getLogger("twins.runtime")


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


class TwinRuntime:
    def __init__(self, mapping: Mapping, store_path: str | Path, anchorer: Anchorer, *, interval: float = 1.0,
                 sustainability: SustainabilityConfig | None = None, restore: bool = True) -> None:
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
        self.batches = 0
        self.anchored = 0
        self.anchor_errors = 0
        self._submit_q: asyncio.Queue[BatchRecord] | None = None

    def positions(self) -> dict[tuple[str, str], tuple[int, int]]:
        return self.store.last_positions()

    def _twin_states(self, org: str) -> dict[str, tuple[str, str]]:
        return {t.asset: t.state_json_and_hash() for t in self.by_org.get(org, [])}

    # --- hot path ----------------------------------------------------------------------------------
    def on_reading(self, r: Reading) -> None:
        self.twins[r.asset].update(r)
        self.batcher.add(r)
        self.readings += 1
        self.twin_latency.add(time.time() * 1000.0 - r.source_ts_us / 1000.0)

    # --- anchoring ---------------------------------------------------------------------------------
    def anchor_once(self) -> list[BatchRecord]:
        """Seal synchronously (tests, shutdown)."""
        return self._after_seal(self.batcher.seal_all())

    async def anchor_once_async(self) -> list[BatchRecord]:
        """Detach pending readings + twin states now; hash, build trees and write the store in a worker thread
        so the event loop keeps receiving notifications meanwhile (~16 ms per 1000 readings)."""
        taken = [(org, t) for org in sorted(self.batcher.pending) if (t := self.batcher.take(org)) is not None]
        sealed = []
        for org, (readings, states) in taken:
            sealed.append(await asyncio.to_thread(self.batcher.seal_taken, org, readings, states))
        return self._after_seal(sealed)

    def _after_seal(self, sealed: list[tuple[BatchRecord, list[Reading]]]) -> list[BatchRecord]:
        now_ms = time.time() * 1000.0
        out = []
        for record, readings in sealed:
            for r in readings:
                self.seal_latency.add(now_ms - r.source_ts_us / 1000.0)
            self.batches += 1
            out.append(record)
            if self._submit_q is not None:
                self._submit_q.put_nowait(record)
        return out

    async def _submitter(self) -> None:
        assert self._submit_q is not None
        while True:
            rec = await self._submit_q.get()
            while True:
                try:
                    tx = await self.anchorer.submit_anchor(rec)
                    self.store.record_anchor(rec.batch_id, tx, time.time_ns() // 1000)
                    self.anchored += 1
                    break
                except Exception as exc:
                    self.anchor_errors += 1
                    log.warning("anchoring %s failed (%s); retrying in 1 s", rec.batch_id, exc)
                    await asyncio.sleep(1.0)
            self._submit_q.task_done()

    async def run_anchoring(self, stop: asyncio.Event, drain_timeout: float = 5.0) -> None:
        """Seal every ``interval`` until ``stop``; then seal the rest and wait (bounded) for the anchorer."""
        self._submit_q = asyncio.Queue()
        n = await resubmit_pending(self.store, self.anchorer, time.time_ns() // 1000)
        if n:
            log.info("resubmitted %d sealed-but-unanchored batches", n)
            self.anchored += n
        submitter = asyncio.create_task(self._submitter())
        try:
            next_t = time.monotonic() + self.interval
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_t - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                next_t += self.interval
                await self.anchor_once_async()
            self.anchor_once()  # seal what arrived before the stop
            try:
                await asyncio.wait_for(self._submit_q.join(), timeout=drain_timeout)
            except asyncio.TimeoutError:
                log.warning("stopping with %d batches sealed but not anchored (resubmitted at next start)", self._submit_q.qsize())
        finally:
            submitter.cancel()
            await asyncio.gather(submitter, return_exceptions=True)

    # --- status --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        plants: dict[str, list[dict[str, float]]] = {}
        for t in self.twins.values():
            if isinstance(t, MachineTwin):
                plants.setdefault(t.org, []).append(t.sustainability())
        p50, p99 = self.twin_latency.percentiles(50, 99)
        s50, s99 = self.seal_latency.percentiles(50, 99)
        snapshots = {a: t.snapshot() for a, t in sorted(self.twins.items())}
        return {
            "time": time.time(),  # readers derive rates from two statuses
            "twins": snapshots,
            "alerts": twin_alerts(snapshots),
            "plants": {org: plant_totals(v) for org, v in sorted(plants.items())},
            "counters": {"readings": self.readings, "batches": self.batches, "anchored": self.anchored,
                         "anchor_errors": self.anchor_errors},
            "latency_ms": {"sensor_to_twin_p50": p50, "sensor_to_twin_p99": p99,
                           "sensor_to_sealed_p50": s50, "sensor_to_sealed_p99": s99},
        }

    def close(self) -> None:
        self.store.close()
