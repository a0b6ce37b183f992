"""The twins runtime: bridge → twins → per-org batches → anchorer, plus metrics and status.

``TwinRuntime`` owns the local store, the twins (one per asset of the mapping) and the batcher; the bridge
calls ``on_reading`` for every in-order, de-duplicated reading. Every ``interval`` seconds (default 1 s)
``anchor_once`` seals one batch per org that received readings and queues its record for the anchorer;
one task per org submits that org's records in order (orgs in parallel) and records the returned tx ids in the store (a batch sealed but
not yet anchored when the process dies is resubmitted at the next start). The same task raises the alerts
that the twins' states open (``twins.anchoring.alert_outbox``: one per episode, after the batch holding the
reading or state it was seen at) and, every ``report_every`` intervals, the sustainability reports of completed days
(``twins.anchoring.sustainability_report``).

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
from twins.anchoring.anchorer import AnchorConflict, Anchorer, resubmit_pending
from twins.anchoring.batcher import Batcher
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.anchoring.sustainability_report import due_reports
from twins.bridge.mapping import Mapping
from twins.metrics import BridgeMetrics
from twins.model.federated import FailureModel
from twins.model.ledger_watch import GatewayRoundsReader, ModelsConfig, ModelWatcher
from twins.model.news2 import FALLBACK_LABEL as NEWS2_FALLBACK_LABEL, LABEL as NEWS2_LABEL
from twins.model.sustainability import SustainabilityConfig, plant_totals
from twins.model.twin import MachineTwin, PatientTwin, Twin, make_twin
from twins.readings import Reading

log = logging.getLogger("twins.runtime")
#: Every how many anchoring intervals the bridge looks for sustainability reports that became due (completed days).
REPORT_EVERY = 60
#: Attempts per alert or report in one run before it is left in the outbox for the next start.
SIDE_RECORD_TRIES = 3


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


def _explained(exc: BaseException | None) -> AnchorConflict:
    return AnchorConflict(f"{exc}: this store is not the one that anchored the org's chain on the ledger up to "
                          "there (another twins state has anchored for the org since, or this one was replaced); "
                          "start a new twins state (another --home), or use another network")


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

    # --- federated models --------------------------------------------------------------------------
    def _model_watchers(self) -> dict[str, ModelWatcher]:
        """One watcher per kind of twin with a task, reading the ledger through the anchoring gateway of the first org
        with such twins (any member may read the models contract; the anchorer's contract is bound to the chaincode)."""
        out: dict[str, ModelWatcher] = {}
        for kind, task in sorted(self.models_config.tasks.items()):
            orgs = sorted({t.org for t in self.twins.values() if t.kind == kind})
            if not orgs:
                continue
            by_org = getattr(self.anchorer, "by_org", None) or {}
            contract = next((getattr(by_org.get(o), "contract", None) for o in orgs
                             if getattr(by_org.get(o), "contract", None) is not None), None)
            if contract is None:
                log.warning("%s twins: the %s anchorer has no ledger gateway to read task %s from; they predict with "
                            "the labelled fallback rules", kind, self.anchorer.name, task)
                continue
            out[kind] = ModelWatcher(kind, task, self.models_config.store, GatewayRoundsReader(contract, via=orgs[0]),
                                     on_swap=lambda model, kind=kind: self.swap_model(kind, model))
        return out

    def swap_model(self, kind: str, model: FailureModel | None) -> None:
        """Every twin of ``kind`` predicts with ``model`` from the next reading on. Called on the event loop, which
        also delivers the readings: the swap happens between two readings, for all twins of the kind at once."""
        for t in self.twins.values():
            if t.kind == kind and isinstance(t, (MachineTwin, PatientTwin)):
                t.model = model

    async def _watch_models(self, stop: asyncio.Event) -> None:
        """Ask the ledger for each task's last committed round every ``poll_s``, until ``stop``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.models_config.poll_s)
                return
            except asyncio.TimeoutError:
                pass
            for w in self.model_watchers.values():
                await w.check_once()

    def models_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {kind: w.status() for kind, w in self.model_watchers.items()}
        kinds = {t.kind for t in self.twins.values()}
        if "machine" in kinds and "machine" not in out:
            out["machine"] = {"kind": "machine", "task": None, "state": "fallback", "model": None,
                              "note": "no ledger task configured: the AI4I rules (fallback:ai4i-rules-v1)"}
        if "patient" in kinds and "patient" not in out:
            out["patient"] = {"kind": "patient", "task": None, "state": "fallback", "model": None,
                              "fallback": NEWS2_FALLBACK_LABEL,
                              "note": f"no ledger task read: the NEWS2-like rules ({NEWS2_LABEL}), labelled "
                                      f"{NEWS2_FALLBACK_LABEL}"}
        return out

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

    # --- anchoring ---------------------------------------------------------------------------------
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

    def _queue(self, job: tuple) -> None:
        if self._queues is None:
            return
        org = job[1].org
        q = self._queues.get(org)
        if q is None:
            q = self._queues[org] = asyncio.Queue()
            self._submitters[org] = asyncio.get_running_loop().create_task(self._submitter(q))
        q.put_nowait(job)
        if job[0] == "batch":
            self.pending_by_org[org] = self.pending_by_org.get(org, 0) + 1

    def _anchored(self, record: BatchRecord, seconds: float) -> None:
        """A batch was accepted by the anchorer (in order per org), after ``seconds`` in the call."""
        org = record.org
        self.anchored_by_org[org] = self.anchored_by_org.get(org, 0) + 1
        self.last_anchored_by_org[org] = max(record.batch_no, self.last_anchored_by_org.get(org, 0))
        self.metrics.anchor_submit.labels(org=org).observe(seconds)

    async def _submit_job(self, job: tuple) -> None:
        """Batches are retried until they are anchored (the chain must not skip one). Alerts and reports are tried
        ``SIDE_RECORD_TRIES`` times, then left in the store's outbox for the next start, so that a record the
        ledger refuses cannot hold up anchoring."""
        kind, item = job[0], job[1]
        tries = 0
        while True:
            tries += 1
            try:
                if kind == "batch":
                    t0 = time.perf_counter()
                    tx = await self.anchorer.submit_anchor(item)
                    took = time.perf_counter() - t0
                    now_us = time.time_ns() // 1000
                    self.store.record_anchor(item.batch_id, tx, now_us)
                    self.anchored += 1
                    self.pending_by_org[item.org] -= 1
                    self._anchored(item, took)
                    for ts in job[2]:
                        self.anchor_latency.add((now_us - ts) / 1000.0)
                elif kind == "alert":
                    tx = await self.anchorer.raise_alert(item)
                    self.store.record_alert_anchor(item.key, tx, time.time_ns() // 1000)
                    self.alerts_raised += 1
                    self.alerts_by_org[item.org] = self.alerts_by_org.get(item.org, 0) + 1
                    log.info("alert %s raised on %s: tx %s", item.key, self.anchorer.name, tx)
                else:
                    tx = await self.anchorer.report_sustainability(item)
                    self.store.record_report(item.org, item.period, item.metrics_json(), tx, time.time_ns() // 1000)
                    self.reports += 1
                    self.reports_by_org[item.org] = self.reports_by_org.get(item.org, 0) + 1
                    log.info("sustainability %s reported on %s: tx %s", item.key, self.anchorer.name, tx)
                return
            except AnchorConflict:
                if kind == "batch":
                    raise  # never fixed by retrying: run_anchoring stops the bridge with the reason
                self.record_errors += 1
                log.error("%s %s conflicts with the ledger's record; not resubmitted in this run", kind, item.key)
                return
            except Exception as exc:
                what = item.batch_id if kind == "batch" else item.key
                if kind == "batch":
                    self.anchor_errors += 1
                    self.anchor_errors_by_org[item.org] = self.anchor_errors_by_org.get(item.org, 0) + 1
                else:
                    self.record_errors += 1
                    if tries >= SIDE_RECORD_TRIES:
                        log.error("%s %s not recorded (%s); left for the next start", kind, what, exc)
                        return
                log.warning("%s %s failed (%s); retrying in 1 s", kind, what, exc)
                await asyncio.sleep(1.0)

    async def _submitter(self, q: asyncio.Queue[tuple]) -> None:
        while True:
            job = await q.get()
            try:
                await self._submit_job(job)
            finally:
                if job[0] == "report":
                    self._reports_queued.discard(job[1].key)
                q.task_done()

    def _failed_submitter(self) -> BaseException | None:
        """The error of an org's submitter that ended (it only ends on what retrying cannot fix: AnchorConflict)."""
        for task in self._submitters.values():
            if task.done():
                return task.exception() if not task.cancelled() else RuntimeError("submitter cancelled")
        return None

    async def _queue_due_reports(self) -> None:
        due = await asyncio.to_thread(due_reports, self.store, self.mapping, time.time_ns() // 1000, self.cfg)
        for rep in due:
            if rep.key not in self._reports_queued:
                self._reports_queued.add(rep.key)
                self._queue(("report", rep))

    async def _join_chains(self, stop: asyncio.Event) -> bool:
        """For every org this store has never sealed a batch of: find the org's chain head on the ledger and seal
        after it (``Batcher.continue_chain``). Retried until it answers; False if ``stop`` comes first (then nothing
        is sealed in this run: the readings come back from the servers' history at the next start)."""
        for org in sorted(self.by_org):
            if self.store.last_batch(org) is not None:
                continue
            while True:
                try:
                    head = await self.anchorer.chain_head(org)
                    break
                except Exception as exc:
                    self.anchor_errors += 1
                    self.anchor_errors_by_org[org] = self.anchor_errors_by_org.get(org, 0) + 1
                    log.warning("cannot read the chain head of %s on the %s (%s); retrying in 1 s", org,
                                self.anchorer.name, exc)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                    return False
                except asyncio.TimeoutError:
                    pass
            self.batcher.continue_chain(org, head)
            if head is not None:
                self.last_anchored_by_org[org] = head[0]
                log.info("%s: continuing the org's chain on the %s after batch %d", org, self.anchorer.name, head[0])
        return True

    async def run_anchoring(self, stop: asyncio.Event, drain_timeout: float = 5.0) -> None:
        """Seal every ``interval`` until ``stop``; then seal the rest and wait (bounded) for the anchorer. At start,
        first what a previous run left unrecorded: sealed batches, then alerts; every ``report_every`` intervals
        (and at start) the sustainability reports that have become due."""
        self._queues, self._submitters = {}, {}
        models_task = None
        if self.model_watchers:
            for w in self.model_watchers.values():  # the committed model before the first seal, if there is one
                await w.check_once()
            models_task = asyncio.get_running_loop().create_task(self._watch_models(stop))
        try:
            await self._run_anchoring(stop, drain_timeout)
        finally:
            if models_task is not None:
                models_task.cancel()
                await asyncio.gather(models_task, return_exceptions=True)

    async def _run_anchoring(self, stop: asyncio.Event, drain_timeout: float) -> None:
        if not await self._join_chains(stop):
            return
        try:
            n = await resubmit_pending(self.store, self.anchorer, time.time_ns() // 1000, on_anchored=self._anchored)
        except AnchorConflict as exc:
            raise _explained(exc) from None
        if n:
            log.info("resubmitted %d sealed-but-unanchored batches", n)
            self.anchored += n
        for org in self.by_org:  # everything sealed before this run is anchored now
            last = self.store.last_batch(org)
            if last is not None:
                self.last_anchored_by_org[org] = max(last[0], self.last_anchored_by_org.get(org, 0))
        try:
            for alert in self.alert_tracker.pending():
                self._queue(("alert", alert))
            if self.report_every:
                await self._queue_due_reports()
            ticks = 0
            next_t = time.monotonic() + self.interval
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_t - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                next_t += self.interval
                failed = self._failed_submitter()
                if failed is not None:
                    raise _explained(failed)
                await self.anchor_once_async()
                ticks += 1
                if self.report_every and ticks % self.report_every == 0:
                    await self._queue_due_reports()
            self.anchor_once()  # seal what arrived before the stop
            queues = list(self._queues.values())
            try:
                await asyncio.wait_for(asyncio.gather(*(q.join() for q in queues)), timeout=drain_timeout)
            except asyncio.TimeoutError:
                log.warning("stopping with %d records not yet on the %s (resubmitted at next start)",
                            sum(q.qsize() for q in queues), self.anchorer.name)
        finally:
            tasks = list(self._submitters.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
