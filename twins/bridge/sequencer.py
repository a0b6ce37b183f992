"""Per-variable ordering, de-duplication and gap replay — the bridge's "no loss, no duplicate" logic.

For each variable the sequencer remembers the last delivered ``(seq, source_ts)``. A sample offered with

- ``seq <= last``      is a duplicate (re-sent initial value, history overlap, replay): dropped;
- ``seq == last + 1``  is delivered at once;
- ``seq >  last + 1``  opens a gap: the variable switches to *filling*, the sample (and any later ones) wait in
  a pending list, and the filler reads the history from ``last_ts`` (inclusive) up to the newest pending
  sample; it delivers the missing samples in order, then the pending ones.

A hole left after such a read is judged against the range the read *covered* (up to its ``to_ts``, or up to the
newest sample it returned when it read "up to now"):

- a hole before a sample beyond that range was never asked for — typically a sample that reached pending while
  the read was in flight, after a reconnect to a restarted server whose first live value lies past readings the
  old connection never delivered. It is read again at once, up to the new newest pending sample; it is not a loss.
- a hole inside the covered range is data the server should have had. It is read again after a backoff
  (``retry_delays``, bounded); only when the server still has none of it is it counted in ``lost`` and logged
  as an error (pruned past retention) — never silently, never before the server was asked again.

After every (re)connect ``request_catch_up`` queues every known variable for a history read up to "now", so
values published while the bridge was away are replayed even when no new live value reveals the gap.
A read that fails while connected (timeout, bad status) is retried with backoff; after a disconnect the
request waits for the next connection. Delivery is synchronous and in sequence order per variable;
different variables interleave freely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twins.bridge.mapping import NodeMap
from twins.readings import Reading

log = logging.getLogger("twins.bridge")

Sample = tuple[int, int, "float | None"]  # seq, source_ts_us, value (None: refused, see twins.bridge.values)
# fetch(node, from_ts_us inclusive, to_ts_us inclusive or None = now) -> samples in seq order
Fetch = Callable[[NodeMap, int, int | None], Awaitable[list[Sample]]]

# waits before reading a hole again that the server should have had (~3.75 s in all before it counts as lost)
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)


@dataclass
class VarState:
    node: NodeMap
    last_seq: int | None = None
    last_ts: int = 0
    filling: bool = False
    pending: list[Sample] = field(default_factory=list)
    from_history: set[int] = field(default_factory=set)  # pending seqs that came from a history read (replayed)
    hole: int | None = None  # the open in-range hole follows this seq
    attempts: int = 0  # reads of that hole that came back without it
    retry: asyncio.TimerHandle | None = None  # the scheduled re-read of that hole


class Sequencer:
    def __init__(self, nodes: list[NodeMap], deliver: Callable[[Reading], None], start_from: str = "live",
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        if start_from not in ("live", "history"):
            raise ValueError("start_from is 'live' or 'history'")
        self.start_from = start_from
        self.retry_delays = retry_delays
        self.deliver = deliver
        self.vars: dict[tuple[str, str], VarState] = {(n.asset, n.prop): VarState(n) for n in nodes}
        self.fetch: Fetch | None = None
        self._need: dict[tuple[str, str], None] = {}  # ordered set of vars to fill
        self._wake = asyncio.Event()
        self.delivered = self.duplicates = self.gaps = self.replayed = self.lost = 0
        self.rereads = 0  # history reads repeated because a hole was still open after a read
        self.skipped = 0  # sequence numbers passed without a reading: the server's value was refused
        self.backwards = 0  # live values whose seq went back while their source time went forward
        self._told_backwards: set[tuple[str, str]] = set()

    def resume(self, positions: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Start after these (seq, ts_us) per variable (the last ones sealed in the store)."""
        for key, (seq, ts) in positions.items():
            st = self.vars.get(key)
            if st is not None:
                st.last_seq, st.last_ts = seq, ts

    def _emit(self, st: VarState, s: Sample) -> None:
        n = st.node
        st.last_seq, st.last_ts = s[0], s[1]
        if s[2] is None:  # its number is taken, so no gap opens; no reading is made of it
            self.skipped += 1
            return
        self.delivered += 1
        self.deliver(Reading(n.org, n.asset, n.prop, s[0], s[1], s[2]))

    def offer(self, key: tuple[str, str], seq: int, ts_us: int, value: float | None) -> None:
        st = self.vars.get(key)
        if st is None or seq <= 0:
            return
        if st.filling:
            st.pending.append((seq, ts_us, value))
            return
        last = st.last_seq
        if last is None:
            if self.start_from == "live":
                self._emit(st, (seq, ts_us, value))
                return
            last = 0
        if seq <= last:
            self.duplicates += 1
            if ts_us > st.last_ts:
                self._went_backwards(st, seq, ts_us)
        elif seq == last + 1:
            self._emit(st, (seq, ts_us, value))
        else:
            self.gaps += 1
            st.filling = True
            st.pending.append((seq, ts_us, value))
            self._need[key] = None
            self._wake.set()

    def _went_backwards(self, st: VarState, seq: int, ts_us: int) -> None:
        """A value newer than the last delivered with a number not above it: not a re-sent or replayed value
        (those are older), but a server that restarted or broke its numbering. Dropped, as every seq <= last
        is; said once per variable, since the bridge follows that numbering only once it passes the last."""
        self.backwards += 1
        key = (st.node.asset, st.node.prop)
        if key not in self._told_backwards:
            self._told_backwards.add(key)
            log.warning("%s/%s: sequence number went back from %d to %d while the source time went forward; "
                        "dropped (values are taken again after seq %d; further ones are counted, not logged)",
                        *key, st.last_seq, seq, st.last_seq)

    def _request(self, key: tuple[str, str]) -> None:
        self._need[key] = None
        self._wake.set()

    def request_catch_up(self) -> None:
        for key, st in self.vars.items():
            if st.last_seq is not None or self.start_from == "history":
                self._need[key] = None
        self._wake.set()

    def idle(self) -> bool:
        return not self._need and not any(st.filling for st in self.vars.values())

    async def _fill(self, key: tuple[str, str]) -> None:
        st = self.vars[key]
        assert self.fetch is not None
        while True:
            # the bound is taken now; samples that reach pending during the read may lie beyond it
            to_ts = max(s[1] for s in st.pending) if st.pending else None
            samples = await self.fetch(st.node, st.last_ts, to_ts)
            covered_to = to_ts if to_ts is not None else max((s[1] for s in samples), default=None)
            st.from_history.update(s[0] for s in samples)
            # pending may have grown during the await; merge, one sample per seq, in seq order
            merged = sorted({s[0]: s for s in [*samples, *st.pending]}.values())
            hole = self._deliver_until_hole(st, merged, covered_to)
            if hole is None:
                self._done(st)
                return
            if hole == "beyond":
                self.rereads += 1  # not asked for yet: read again, up to the newest pending sample
                continue
            # the server should have had the hole and answered without it: ask again later, then give up
            st.attempts += 1
            self.rereads += 1
            delay = self.retry_delays[st.attempts - 1]
            log.warning("%s/%s: history has no seq %d.. yet (read %d); reading it again in %.2f s",
                        st.node.asset, st.node.prop, (st.last_seq or 0) + 1, st.attempts, delay)
            if st.retry is not None:
                st.retry.cancel()
            st.retry = asyncio.get_running_loop().call_later(delay, self._request, key)
            return

    def _deliver_until_hole(self, st: VarState, merged: list[Sample], covered_to: int | None) -> str | None:
        """Deliver ``merged`` in order; stop at a hole the server may still fill and keep the rest pending.

        Returns None when all was delivered, "beyond" for a hole past the range read, "retry" for a hole inside it
        while re-reads remain. A hole inside the range with no re-read left is declared lost and passed."""
        for i, s in enumerate(merged):
            last = st.last_seq if st.last_seq is not None else (0 if self.start_from == "history" else s[0] - 1)
            if s[0] <= last:
                self.duplicates += 1
                continue
            if s[0] > last + 1:
                # missing seqs precede s, so their timestamps are below s's: the read covered them iff it covered s
                beyond = covered_to is None or s[1] > covered_to
                if st.hole != last:  # another hole than the one re-read so far: it gets its own re-reads
                    st.hole, st.attempts = last, 0
                if beyond or st.attempts < len(self.retry_delays):
                    st.pending = merged[i:]
                    st.filling = True  # (a catch-up read starts unfilled) later live samples queue behind the hole
                    return "beyond" if beyond else "retry"
                missing = s[0] - last - 1
                self.lost += missing
                log.error("%s/%s: seq %d..%d are not in the server's history after %d reads (retention?) — "
                          "%d readings lost", st.node.asset, st.node.prop, last + 1, s[0] - 1, st.attempts + 1, missing)
            if s[0] in st.from_history:
                self.replayed += 1
            self._emit(st, s)
        return None

    def _done(self, st: VarState) -> None:
        st.pending = []
        st.from_history.clear()
        st.hole, st.attempts = None, 0
        if st.retry is not None:
            st.retry.cancel()
            st.retry = None
        st.filling = False

    async def run_filler(self, connected: Callable[[], bool]) -> None:
        """Serve fill requests while the connection is up. A failed read is retried with backoff while connected
        (a timeout on a loaded server, a bad status); once disconnected the request waits for the reconnect's
        catch-up (the filler returns)."""
        failures = 0
        while True:
            if not self._need:
                await self._wake.wait()
            self._wake.clear()
            while self._need and connected():
                key = next(iter(self._need))
                try:
                    await self._fill(key)
                except Exception as exc:  # connection errors of every kind: keep the request
                    failures += 1
                    if not connected():
                        log.warning("history read for %s/%s failed (%s); will retry after reconnect", *key, exc)
                        return
                    delay = min(5.0, 0.2 * 2 ** (failures - 1))
                    log.warning("history read for %s/%s failed (%s); retrying in %.1f s", *key, exc, delay)
                    del self._need[key]  # to the back of the queue: one failing variable does not hold up the others
                    self._need[key] = None
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                self._need.pop(key, None)
            if self._need:  # disconnected with work left: the session ends and a new filler starts after reconnect
                return
