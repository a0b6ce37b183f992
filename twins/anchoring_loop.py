"""The twins runtime's anchoring loop: per-org submitters that take sealed batches, alerts and sustainability
reports to the anchorer, and the loop that seals every ``interval`` until stopped.

One task per org submits that org's records in order (orgs in parallel) and records the returned tx ids in the
store (a batch sealed but not yet anchored when the process dies is resubmitted at the next start). The same task
raises the alerts that the twins' states open (``twins.anchoring.alert_outbox``: one per episode, after the batch
holding the reading or state it was seen at) and, every ``report_every`` intervals, the sustainability reports of
completed days (``twins.anchoring.sustainability_report``).

``AnchoringLoop`` is a part of ``twins.runtime.TwinRuntime``, which sets the attributes annotated below and seals
(``anchor_once``, ``anchor_once_async``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from twins.anchoring.anchorer import AnchorConflict, Anchorer, resubmit_pending
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.anchoring.sustainability_report import due_reports

if TYPE_CHECKING:
    from twins.anchoring.alert_outbox import AlertTracker
    from twins.anchoring.batcher import Batcher
    from twins.bridge.mapping import Mapping
    from twins.metrics import BridgeMetrics
    from twins.model.ledger_watch import ModelWatcher
    from twins.model.sustainability import SustainabilityConfig
    from twins.model.twin import Twin
    from twins.runtime import LatencyRecorder

# the runtime's logger: the bridge's log lines keep the name they always had
log = logging.getLogger("twins.runtime")
#: Attempts per alert or report in one run before it is left in the outbox for the next start.
SIDE_RECORD_TRIES = 3


def _explained(exc: BaseException | None) -> AnchorConflict:
    return AnchorConflict(f"{exc}: this store is not the one that anchored the org's chain on the ledger up to "
                          "there (another twins state has anchored for the org since, or this one was replaced); "
                          "start a new twins state (another --home), or use another network")


class AnchoringLoop:
    """Submission of sealed records to the anchorer, one ordered queue per org, and the sealing loop."""

    # set by TwinRuntime.__init__
    mapping: Mapping
    store: ReadingStore
    anchorer: Anchorer
    interval: float
    cfg: SustainabilityConfig
    by_org: dict[str, list[Twin]]
    batcher: Batcher
    alert_tracker: AlertTracker
    metrics: BridgeMetrics
    model_watchers: dict[str, ModelWatcher]
    report_every: int
    anchored: int
    anchor_errors: int
    alerts_raised: int
    reports: int
    record_errors: int
    anchor_latency: LatencyRecorder
    pending_by_org: dict[str, int]
    anchored_by_org: dict[str, int]
    anchor_errors_by_org: dict[str, int]
    alerts_by_org: dict[str, int]
    reports_by_org: dict[str, int]
    last_anchored_by_org: dict[str, int]
    _reports_queued: set[str]
    _queues: dict[str, asyncio.Queue[tuple]] | None
    _submitters: dict[str, asyncio.Task[None]]

    if TYPE_CHECKING:  # declared for readers and checkers only: defined stubs would shadow the real methods
        def anchor_once(self) -> list[BatchRecord]: ...  # TwinRuntime (sealing)
        async def anchor_once_async(self) -> list[BatchRecord]: ...  # TwinRuntime (sealing)
        async def _watch_models(self, stop: asyncio.Event) -> None: ...  # ModelsInUse

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
