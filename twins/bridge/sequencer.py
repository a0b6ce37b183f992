"""Per-variable ordering, de-duplication and history refill by source time — the bridge's "no loss, no duplicate".

A standard OPC-UA server numbers nothing: a value is known by its variable and its SourceTimestamp (the
ServerTimestamp when the server sends none; ``twins.bridge.values``), as a historian keys it and as HistoryRead
by time range finds it again. So for each variable the sequencer remembers the timestamp ``last_ts`` of the last
value it delivered, and a value offered with

- ``ts <= last_ts`` is a duplicate (the initial value re-sent at every subscription, a history overlap): dropped;
- ``ts >  last_ts`` is delivered at once, as reading number ``last_seq + 1`` of its variable (the ordinal
  ``twins.readings`` describes; continued from the store after a restart, ``resume``);

unless the variable is *filling*: then values wait in ``pending`` until a history read has covered what may be
missing before them. Nothing in a value says that a value is missing before it, so the bridge fills whenever
OPC-UA says the stream broke:

- a (re)connect (``request_catch_up``, after the subscription exists): values published while it was away are in
  the server's history. The read goes from ``last_ts`` up to the first live value of the new session (``cont_ts``;
  from there on the subscription delivers every change) or, when none came yet, up to now — which is later than the
  subscription's creation, so what the read returns and what the subscription sends meet without a hole.
- a value flagged with the Overflow info bit (``overflow=True``): the server's monitored-item queue dropped values
  just before it. The read goes up to that value. Another overflow during the read moves the bound and reads again;
  values offered before that overflow are delivered first (the hole lies just before the overflowed value).

Pending values and the history read are merged by timestamp (one value per timestamp; the server's history wins,
it is the record) and delivered in order. A read that fails while connected is retried with backoff; after a
disconnect the request waits for the next session's catch-up. A server that keeps no history
(BadHistoryOperationUnsupported and the like, ``NoHistory``) cannot refill: the variable's pending values are delivered,
the break is counted in ``unfilled`` and logged once per variable — the readings it may have hidden are not
invented and not silently assumed absent: the sequencer hands ``on_gap`` an explicit ``GapRecord`` (asset, variable,
from, to, reason) that the batcher seals into the org's next batch, so it is anchored with the readings around it.
Its bounds are both readings the bridge has: ``from`` the source time of the last one delivered before the break
(after a restart: the last sealed one), ``to`` that of the first one delivered after it; what the server published
strictly between may be missing. A gap is emitted just before the reading that closes it, so both reach the same
batch.

``lost`` is kept for the status and metrics: 0 unless a server without history had a break (then the number of such
breaks; the readings themselves cannot be counted without numbers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twins.anchoring.record import GapRecord
from twins.bridge.mapping import NodeMap
from twins.readings import Reading

log = logging.getLogger("twins.bridge")

Sample = tuple[int, int, float]  # source_ts_us, status (StatusCode & STATUS_MASK), value (NaN: none; see values.py)
# fetch(node, from_ts_us inclusive or None = from the start, to_ts_us inclusive or None = now) -> samples by time
Fetch = Callable[[NodeMap, "int | None", "int | None"], Awaitable[list[Sample]]]


class NoHistory(Exception):
    """The server keeps no history of this variable (or refuses to read it): a gap cannot be refilled."""


@dataclass
class VarState:
    node: NodeMap
    last_seq: int = 0  # the bridge's ordinal of the last delivered reading (0: none yet)
    last_ts: int | None = None  # source time of the last delivered reading (None: none yet)
    filling: bool = False
    pending: list[Sample] = field(default_factory=list)
    cont_ts: int | None = None  # the live stream is complete from this pending value on (None: no value yet)
    overflows: int = 0  # Overflow bits seen while filling (a read compares before/after)
    no_history: bool = False
    cause: str = "reconnect"  # what broke the stream last: "reconnect" (or a restart) | "overflow"
    no_history_reason: str = ""
    gap_from: tuple[int, str] | None = None  # an unfilled break after this source time, for this reason: open gap


class Sequencer:
    def __init__(self, nodes: list[NodeMap], deliver: Callable[[Reading], None], start_from: str = "live",
                 on_gap: Callable[[GapRecord], None] | None = None) -> None:
        if start_from not in ("live", "history"):
            raise ValueError("start_from is 'live' or 'history'")
        self.start_from = start_from
        self.deliver = deliver
        self.vars: dict[tuple[str, str], VarState] = {(n.asset, n.prop): VarState(n) for n in nodes}
        self.fetch: Fetch | None = None
        self._need: dict[tuple[str, str], None] = {}  # ordered set of vars to fill
        self._wake = asyncio.Event()
        self.delivered = self.duplicates = self.replayed = 0
        self.gaps = 0  # breaks of a stream that needed a history read (overflow bits; reconnects not counted)
        self.overflows = 0  # values that came with the Overflow bit
        self.not_good = 0  # readings delivered with a Bad or Uncertain status (recorded, not given to twins)
        self.unfilled = 0  # breaks a server without history could not refill
        self.rereads = 0  # history reads repeated because the stream broke again during one
        self.fills = 0  # history reads done
        self.on_gap = on_gap
        self.gap_records = 0  # GapRecords handed to on_gap

    @property
    def lost(self) -> int:
        return self.unfilled

    def resume(self, positions: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Start after these (seq, ts_us) per variable (the last ones sealed in the store)."""
        for key, (seq, ts) in positions.items():
            st = self.vars.get(key)
            if st is not None:
                st.last_seq, st.last_ts = seq, ts

    def _emit(self, st: VarState, s: Sample) -> None:
        n = st.node
        if st.gap_from is not None and s[0] > st.gap_from[0]:
            self.gap_records += 1
            if self.on_gap is not None:
                self.on_gap(GapRecord(n.org, n.asset, n.prop, st.gap_from[0], s[0], st.gap_from[1]))
            st.gap_from = None
        st.last_seq += 1
        st.last_ts = s[0]
        self.delivered += 1
        if s[1] >> 30:
            self.not_good += 1
        self.deliver(Reading(n.org, n.asset, n.prop, st.last_seq, s[0], s[2], s[1]))

    def _start_fill(self, key: tuple[str, str], st: VarState) -> None:
        st.filling = True
        self._need[key] = None
        self._wake.set()

    def offer(self, key: tuple[str, str], ts_us: int, status: int, value: float, overflow: bool = False) -> None:
        st = self.vars.get(key)
        if st is None:
            return
        if overflow:
            self.overflows += 1
        if st.filling:
            st.pending.append((ts_us, status, value))
            if overflow:  # values were dropped just before this one: the read must reach it
                st.cont_ts = ts_us
                st.overflows += 1
            elif st.cont_ts is None:
                st.cont_ts = ts_us
            return
        if st.last_ts is None:
            if self.start_from == "live" and not overflow:
                self._emit(st, (ts_us, status, value))
                return
            st.pending.append((ts_us, status, value))  # from the start of history
            st.cont_ts = ts_us
            self._start_fill(key, st)
            return
        if ts_us <= st.last_ts:
            self.duplicates += 1
        elif overflow:
            self.gaps += 1
            st.cause = "overflow"
            st.pending.append((ts_us, status, value))
            st.cont_ts = ts_us
            self._start_fill(key, st)
        else:
            self._emit(st, (ts_us, status, value))

    def request_catch_up(self) -> None:
        """After a (re)connect, once the subscription exists: every variable with a position (all of them when
        starting from history) reads what the server published since, before live values are delivered."""
        for key, st in self.vars.items():
            if st.last_ts is not None or self.start_from == "history":
                st.filling = True
                st.cause = "reconnect"
                st.cont_ts = None  # values pending from an earlier session are merged, but do not bound the read
                self._need[key] = None
        self._wake.set()

    def idle(self) -> bool:
        return not self._need and not any(st.filling for st in self.vars.values())

    def _deliver_merged(self, st: VarState, history: list[Sample], live: list[Sample], before: int | None) -> list[Sample]:
        """Deliver history ∪ live by time (``< before`` when given), skipping what is not newer than last_ts; return
        the live values kept back."""
        live_ts = {s[0] for s in live}
        merged = {s[0]: s for s in live}
        merged.update({s[0]: s for s in history})  # one value per timestamp: the server's record wins
        keep = []
        for ts in sorted(merged):
            s = merged[ts]
            if before is not None and ts >= before:
                if ts in live_ts:
                    keep.append(s)
                continue
            if st.last_ts is not None and ts <= st.last_ts:
                if ts in live_ts:
                    self.duplicates += 1
                continue
            if ts not in live_ts:
                self.replayed += 1
            self._emit(st, s)
        return keep

    def _open_gap(self, st: VarState) -> None:
        """The break cannot be refilled: what was published after the last delivered reading may be missing."""
        if st.last_ts is not None and st.gap_from is None:
            what = "an overflow of the server's queue" if st.cause == "overflow" else "a reconnect or restart"
            st.gap_from = (st.last_ts, f"{what}; the server keeps no history ({st.no_history_reason})")

    async def _fill(self, key: tuple[str, str]) -> None:
        st = self.vars[key]
        assert self.fetch is not None
        while True:
            to_ts, overflows = st.cont_ts, st.overflows
            try:
                history = [] if st.no_history else await self.fetch(st.node, st.last_ts, to_ts)
            except NoHistory as exc:
                st.no_history = True
                self.unfilled += 1
                log.error("%s/%s: the server keeps no history of it (%s): values it published while the stream was "
                          "broken cannot be read back; delivering what came live (further breaks are counted in "
                          "'lost', not logged)", st.node.asset, st.node.prop, exc)
                history = []
                st.no_history_reason = str(exc)
                self._open_gap(st)
            else:
                if st.no_history and (to_ts is not None or st.last_ts is not None):
                    self.unfilled += 1
                    self._open_gap(st)
            self.fills += 1
            live, st.pending = st.pending, []
            if st.overflows != overflows and st.cont_ts is not None:
                # the stream broke again during the read: deliver up to that break, then read up to it
                st.pending = self._deliver_merged(st, history, live, st.cont_ts)
                self.rereads += 1
                if not st.no_history:
                    continue
                st.cause = "overflow"  # the second break cannot be refilled either: its own gap
                self.unfilled += 1
                self._open_gap(st)
                live, st.pending = st.pending, []
                history = []
            self._deliver_merged(st, history, live, None)
            st.filling = False
            st.cont_ts = None
            return

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
                del self._need[key]  # taken now: a request made during the read queues a new one
                try:
                    await self._fill(key)
                except Exception as exc:  # connection errors of every kind: keep the request
                    self._need.setdefault(key, None)  # at the back: one failing variable does not hold up the others
                    failures += 1
                    if not connected():
                        log.warning("history read for %s/%s failed (%s); will retry after reconnect", *key, exc)
                        return
                    delay = min(5.0, 0.2 * 2 ** (failures - 1))
                    log.warning("history read for %s/%s failed (%s); retrying in %.1f s", *key, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
            if self._need:  # disconnected with work left: the session ends and a new filler starts after reconnect
                return
