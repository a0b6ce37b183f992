"""Per-variable ordering, de-duplication and gap replay — the bridge's "no loss, no duplicate" logic.

For each variable the sequencer remembers the last delivered ``(seq, source_ts)``. A sample offered with

- ``seq <= last``      is a duplicate (re-sent initial value, history overlap, replay): dropped;
- ``seq == last + 1``  is delivered at once;
- ``seq >  last + 1``  opens a gap: the variable switches to *filling*, the sample (and any later ones) wait in
  a pending list, and the filler reads the history from ``last_ts`` (inclusive) up to the newest pending
  sample; it delivers the missing samples in order, then the pending ones. Whatever the history cannot
  supply (pruned past retention) is counted in ``lost`` and logged as an error — never silently.

After every (re)connect ``request_catch_up`` queues every known variable for a history read up to "now", so
values published while the bridge was away are replayed even when no new live value reveals the gap.
Delivery is synchronous and in sequence order per variable; different variables interleave freely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twins.bridge.mapping import NodeMap
from twins.readings import Reading

log = logging.getLogger("twins.bridge")

Sample = tuple[int, int, float]  # seq, source_ts_us, value
# fetch(node, from_ts_us inclusive, to_ts_us inclusive or None = now) -> samples in seq order
Fetch = Callable[[NodeMap, int, int | None], Awaitable[list[Sample]]]


@dataclass
class VarState:
    node: NodeMap
    last_seq: int | None = None
    last_ts: int = 0
    filling: bool = False
    pending: list[Sample] = field(default_factory=list)


class Sequencer:
    def __init__(self, nodes: list[NodeMap], deliver: Callable[[Reading], None], start_from: str = "live") -> None:
        if start_from not in ("live", "history"):
            raise ValueError("start_from is 'live' or 'history'")
        self.start_from = start_from
        self.deliver = deliver
        self.vars: dict[tuple[str, str], VarState] = {(n.asset, n.prop): VarState(n) for n in nodes}
        self.fetch: Fetch | None = None
        self._need: dict[tuple[str, str], None] = {}  # ordered set of vars to fill
        self._wake = asyncio.Event()
        self.delivered = self.duplicates = self.gaps = self.replayed = self.lost = 0

    def resume(self, positions: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Start after these (seq, ts_us) per variable (the last ones sealed in the store)."""
        for key, (seq, ts) in positions.items():
            st = self.vars.get(key)
            if st is not None:
                st.last_seq, st.last_ts = seq, ts

    def _emit(self, st: VarState, s: Sample) -> None:
        n = st.node
        st.last_seq, st.last_ts = s[0], s[1]
        self.delivered += 1
        self.deliver(Reading(n.org, n.asset, n.prop, s[0], s[1], s[2]))

    def offer(self, key: tuple[str, str], seq: int, ts_us: int, value: float) -> None:
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
        elif seq == last + 1:
            self._emit(st, (seq, ts_us, value))
        else:
            self.gaps += 1
            st.filling = True
            st.pending.append((seq, ts_us, value))
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
        to_ts = max(s[1] for s in st.pending) if st.pending else None
        samples = await self.fetch(st.node, st.last_ts, to_ts)
        from_history = {s[0] for s in samples}
        # pending may have grown during the await; merge, one sample per seq, in seq order
        merged = sorted({s[0]: s for s in [*samples, *st.pending]}.values())
        st.pending = []
        for s in merged:
            last = st.last_seq if st.last_seq is not None else (0 if self.start_from == "history" else s[0] - 1)
            if s[0] <= last:
                self.duplicates += 1
                continue
            if s[0] > last + 1:
                missing = s[0] - last - 1
                self.lost += missing
                log.error("%s/%s: seq %d..%d are not in the server's history (retention?) — %d readings lost",
                          st.node.asset, st.node.prop, last + 1, s[0] - 1, missing)
            if s[0] in from_history:
                self.replayed += 1
            self._emit(st, s)
        st.filling = False

    async def run_filler(self, connected: Callable[[], bool]) -> None:
        """Serve fill requests while the connection is up; on a fetch failure keep the request for later."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._need and connected():
                key = next(iter(self._need))
                try:
                    await self._fill(key)
                except Exception as exc:  # connection errors of every kind: keep the request
                    log.warning("history read for %s/%s failed (%s); will retry after reconnect", *key, exc)
                    return
                self._need.pop(key, None)
