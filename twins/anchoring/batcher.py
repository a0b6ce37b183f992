"""Per-org batching: readings accumulate in memory and are sealed into one batch per org per interval (more
than one only when one record would exceed the ledger's argument cap, see ``Batcher.seal_taken``).

Sealing = leaf hashes → Merkle tree → ``BatchRecord`` (root, count, per-variable sequence ranges, time
range, twin-state hashes, hash of the org's previous record) → one store transaction. The record is then
handed to the ``Anchorer`` by the caller (``twins.anchoring_loop``), so a slow ledger never stalls sealing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twins.anchoring.merkle import build_levels, leaf_hash
from twins.anchoring.record import BatchRecord, GapRecord, compact_ranges
from twins.anchoring.store import ReadingStore
from twins.readings import Reading

# asset -> (state canonical JSON, its sha256 hex), for the assets of one org
TwinStateFn = Callable[[str], dict[str, tuple[str, str]]]


class Batcher:
    def __init__(self, store: ReadingStore, twin_states: TwinStateFn | None = None) -> None:
        self.store = store
        self.twin_states = twin_states or (lambda org: {})
        self.pending: dict[str, list[Reading]] = {}
        self._last: dict[str, tuple[int, str]] = {}
        # gap records (twins.bridge.sequencer) travel with the readings: pending with them, detached by the same
        # take(), sealed into the same batch (the reading that closes a gap comes right after it)
        self.pending_gaps: dict[str, list[GapRecord]] = {}
        self._taken_gaps: dict[str, list[GapRecord]] = {}
        self.gaps_sealed = 0

    def continue_chain(self, org: str, head: tuple[int, str] | None) -> None:
        """Seal ``org``'s first batch of this store after ``head`` (batch_no, record_hash), the org's last batch on
        the ledger (``Anchorer.chain_head``): the ledger keeps one chain per org, which a new store joins rather
        than restarting at batch 1 (that number is taken). Ignored once the store holds batches of the org: those
        decide, and a store that no longer matches the ledger is refused at anchoring (``AnchorConflict``)."""
        if head is not None and self.store.last_batch(org) is None:
            self._last[org] = head

    def add(self, reading: Reading) -> None:
        lst = self.pending.get(reading.org)
        if lst is None:
            lst = self.pending[reading.org] = []
        lst.append(reading)

    def add_gap(self, gap: GapRecord) -> None:
        self.pending_gaps.setdefault(gap.org, []).append(gap)

    def pending_count(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def take(self, org: str) -> tuple[list[Reading], dict[str, tuple[str, str]]] | None:
        """Detach the org's pending readings together with its twins' states at this very moment (cheap; the
        twins have seen exactly these readings). ``seal_taken`` does the heavy part, possibly in a thread."""
        readings = self.pending.pop(org, None)
        if not readings:
            return None
        gaps = self.pending_gaps.pop(org, None)
        if gaps:  # seal_taken of this org (which must not overlap another) picks them up
            self._taken_gaps.setdefault(org, []).extend(gaps)
        return readings, self.twin_states(org)

    def seal(self, org: str, now_us: int | None = None) -> list[tuple[BatchRecord, list[Reading]]]:
        taken = self.take(org)
        if taken is None:
            return []
        return self.seal_taken(org, taken[0], taken[1], now_us)

    def seal_taken(self, org: str, readings: list[Reading], states: dict[str, tuple[str, str]],
                   now_us: int | None = None) -> list[tuple[BatchRecord, list[Reading]]]:
        """Leaves → tree → record → one store transaction per batch. Calls for one org must not overlap.

        Usually one batch. When the record would not fit the ledger's argument cap (``BatchRecord.fits_ledger``:
        an org with very many assets in one interval), the readings are split by asset into several batches,
        chained one after the other like any others; each then carries the state hashes of the twins whose
        readings it holds (a twin without readings in the interval has not changed since it was last sealed)."""
        now_us = now_us if now_us is not None else time.time_ns() // 1000
        leaves = {id(r): leaf_hash(r.leaf_bytes()) for r in readings}  # hashed once, whatever the split
        gaps = self._taken_gaps.pop(org, [])
        assets = sorted({r.asset for r in readings})
        todo: list[list[str] | None] = [None]  # None: all of it, with every twin state (the usual single batch)
        out = []
        while todo:
            part = todo.pop(0)
            keep = None if part is None else set(part)
            rs = readings if keep is None else [r for r in readings if r.asset in keep]
            st = states if keep is None else {a: v for a, v in states.items() if a in keep}
            gs = gaps if keep is None else [g for g in gaps if g.asset in keep]
            record, levels = self._record(org, rs, st, leaves, now_us, gs)
            if not record.fits_ledger():
                names = assets if part is None else part
                if len(names) < 2:
                    raise ValueError(f"the readings of {names[0]} in one interval do not fit one ledger record "
                                     f"({record.ledger_size()} bytes); seal more often (a shorter interval)")
                half = len(names) // 2
                todo[:0] = [names[:half], names[half:]]
                continue
            self.store.append_batch(record, rs, levels, st)
            self._last[org] = (record.batch_no, record.record_hash())
            self.gaps_sealed += len(gs)
            out.append((record, rs))
        return out

    def _record(self, org: str, readings: list[Reading], states: dict[str, tuple[str, str]],
                leaves: dict[int, bytes], now_us: int, gaps: list[GapRecord] = ()  # type: ignore[assignment]
                ) -> tuple[BatchRecord, list[list[bytes]]]:
        if org not in self._last:
            self._last[org] = self.store.last_batch(org) or (0, "")
        last_no, prev_hash = self._last[org]
        levels = build_levels([leaves[id(r)] for r in readings])
        ranges: dict[str, list[int]] = {}
        for r in readings:
            k = f"{r.asset}/{r.prop}"
            rng = ranges.get(k)
            if rng is None:
                ranges[k] = [r.seq, r.seq]
            else:
                rng[0] = min(rng[0], r.seq)
                rng[1] = max(rng[1], r.seq)
        record = BatchRecord(
            org=org, batch_no=last_no + 1, merkle_root=levels[-1][0].hex(), count=len(readings),
            seq_ranges=compact_ranges(ranges),
            first_ts_us=min(r.source_ts_us for r in readings), last_ts_us=max(r.source_ts_us for r in readings),
            twin_state_hashes={a: h for a, (_, h) in sorted(states.items())}, prev_record_hash=prev_hash,
            sealed_at_us=now_us, extra={"gaps": [g.to_text() for g in gaps]} if gaps else {},
        )
        return record, levels

    def seal_all(self, now_us: int | None = None) -> list[tuple[BatchRecord, list[Reading]]]:
        out = []
        for org in sorted(self.pending):
            out += self.seal(org, now_us)
        return out
