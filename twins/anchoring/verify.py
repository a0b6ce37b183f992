"""Verify one stored reading end to end: reading → leaf → Merkle proof → stored root → anchored record.

``verify_reading(store, anchorer, asset, seq, prop=None)`` returns one ``VerifiedReading`` per matching
reading (sequence numbers are per variable, so ``(asset, seq)`` names one reading per property: for a machine,
all the values of product ``seq``). Any mismatch raises ``VerificationError`` naming what disagrees:

- the reading's leaf does not lead, through its proof, to the batch root stored locally (reading altered);
- the stored tree is inconsistent with the stored root / count;
- the batch record stored locally differs from the anchored one (root, count, record hash);
- the reading lies outside the anchored sequence or time range;
- the batch was never anchored.

``verify_batch(store, anchorer, batch_id)`` checks a whole batch the same way, with one ledger read;
``verify_all_batches`` every batch of a store.

Gaps (``twins.anchoring.record.GapRecord``): readings a server without history could not give back are not proven
absent or present, they are declared. ``verify_gaps`` verifies every batch that seals gap records and returns the
gaps as the *anchored* record states them; ``verify_reading`` names the gaps of the reading's variable sealed in its
batch, so a proof never hides that readings may be missing next to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from twins.anchoring.anchorer import Anchorer, connect_ledger
from twins.anchoring.merkle import leaf_hash, proof_from_levels, root_from_proof, root_of, unpack_levels
from twins.anchoring.record import BatchRecord, GapRecord
from twins.anchoring.store import ReadingStore
from twins.readings import Reading


class VerificationError(Exception):
    pass


@dataclass(frozen=True)
class VerifiedReading:
    reading: Reading
    batch_id: str
    leaf_index: int
    proof: list[str]  # sibling hashes, hex, leaf to root
    merkle_root: str
    anchor: dict[str, Any]  # as returned by the anchorer: record, record_hash, tx_id
    gaps: tuple[GapRecord, ...] = ()  # gaps of this reading's variable sealed in the same (anchored) batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "reading": self.reading.to_dict(), "batch_id": self.batch_id, "leaf_index": self.leaf_index,
            "proof": self.proof, "merkle_root": self.merkle_root, "anchor": self.anchor,
            "gaps": [g.to_dict() for g in self.gaps],
        }


@dataclass(frozen=True)
class VerifiedGap:
    gap: GapRecord
    batch_id: str
    tx_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"org": self.gap.org, **self.gap.to_dict(), "batch_id": self.batch_id, "tx_id": self.tx_id}


async def verify_reading(
    store: ReadingStore, anchorer: Anchorer, asset: str, seq: int, prop: str | None = None
) -> list[VerifiedReading]:
    found = store.find_readings(asset, seq, prop)
    if not found:
        what = f"{asset}/{prop}" if prop else asset
        raise VerificationError(f"no stored reading {what} seq {seq}")
    out = []
    for sr in found:
        r = sr.reading
        name = f"{r.asset}/{r.prop}#{r.seq}"
        b = store.batch(sr.batch_id)
        if b is None:
            raise VerificationError(f"{name}: its batch {sr.batch_id} is missing from the store")
        try:
            levels = unpack_levels(b.tree, b.count)
        except ValueError as exc:
            raise VerificationError(f"{name}: stored tree of {sr.batch_id} is corrupt: {exc}") from None
        if levels[-1][0] != b.root or b.record.merkle_root != b.root.hex() or b.record.count != b.count:
            raise VerificationError(f"{name}: stored tree, root and record of {sr.batch_id} disagree")
        if b.record.record_hash() != b.record_hash:
            raise VerificationError(f"{name}: stored record of {sr.batch_id} does not match its hash")
        proof = proof_from_levels(levels, sr.leaf_index)
        computed = root_from_proof(leaf_hash(r.leaf_bytes()), sr.leaf_index, b.count, proof)
        if computed != b.root:
            raise VerificationError(
                f"{name}: reading does not match batch {sr.batch_id} (Merkle root {computed.hex()[:16]}… "
                f"≠ stored {b.root.hex()[:16]}…): the stored reading was altered"
            )
        anchor = await anchorer.get_anchor(sr.batch_id)
        if anchor is None:
            raise VerificationError(f"{name}: batch {sr.batch_id} has no anchor on {anchorer.name}")
        anchored = BatchRecord.from_dict(anchor["record"])
        if anchored.merkle_root != b.root.hex() or anchored.count != b.count:
            raise VerificationError(
                f"{name}: anchored root/count of {sr.batch_id} ({anchored.merkle_root[:16]}…, {anchored.count}) "
                f"≠ local ({b.root.hex()[:16]}…, {b.count})"
            )
        if anchored.record_hash() != b.record_hash or anchor.get("record_hash", b.record_hash) != b.record_hash:
            raise VerificationError(f"{name}: anchored record of {sr.batch_id} differs from the local one")
        rng = anchored.seq_range(r.asset, r.prop)
        if rng is None or not rng[0] <= r.seq <= rng[1]:
            raise VerificationError(f"{name}: outside the anchored sequence range {rng}")
        if not anchored.first_ts_us <= r.source_ts_us <= anchored.last_ts_us:
            raise VerificationError(f"{name}: source time outside the anchored time range")
        gaps = tuple(g for g in anchored.gaps() if (g.asset, g.prop) == (r.asset, r.prop))
        out.append(VerifiedReading(r, sr.batch_id, sr.leaf_index, [p.hex() for p in proof], b.root.hex(), anchor, gaps))
    return out


async def verify_batch(store: ReadingStore, anchorer: Anchorer, batch_id: str) -> BatchRecord:
    """Verify a whole sealed batch against the ledger: the readings the store holds for it, in leaf order, are
    exactly its ``count`` leaves and rebuild its root; the stored record matches that root and its hash; the
    anchored record is the same record; and every reading lies inside the anchored sequence and time ranges.
    One ledger read per batch (``verify_reading`` does one per reading). Returns the anchored record;
    ``VerificationError`` names what disagrees."""
    b = store.batch(batch_id)
    if b is None:
        raise VerificationError(f"no stored batch {batch_id}")
    rows = store.batch_readings(batch_id)
    if [i for i, _ in rows] != list(range(b.count)):
        raise VerificationError(f"{batch_id}: the store holds {len(rows)} leaves of its {b.count}, or not in order")
    root = root_of([leaf_hash(r.leaf_bytes()) for _, r in rows])
    if root != b.root or b.record.merkle_root != root.hex() or b.record.count != b.count:
        raise VerificationError(f"{batch_id}: its stored readings do not rebuild the stored root (a reading was altered)")
    if b.record.record_hash() != b.record_hash:
        raise VerificationError(f"{batch_id}: stored record does not match its hash")
    anchor = await anchorer.get_anchor(batch_id)
    if anchor is None:
        raise VerificationError(f"batch {batch_id} has no anchor on {anchorer.name}")
    anchored = BatchRecord.from_dict(anchor["record"])
    if (anchored.merkle_root, anchored.count) != (root.hex(), b.count) or anchored.record_hash() != b.record_hash \
            or anchor.get("record_hash", b.record_hash) != b.record_hash:
        raise VerificationError(f"{batch_id}: the anchored record differs from the local one")
    for _, r in rows:
        rng = anchored.seq_range(r.asset, r.prop)
        if rng is None or not rng[0] <= r.seq <= rng[1] or not anchored.first_ts_us <= r.source_ts_us <= anchored.last_ts_us:
            raise VerificationError(f"{batch_id}: {r.asset}/{r.prop}#{r.seq} outside the anchored ranges")
    return anchored


async def verify_gaps(store: ReadingStore, anchorer: Anchorer) -> list[VerifiedGap]:
    """Every gap record sealed in the store, each from its batch's anchored record after ``verify_batch`` of that
    batch (``VerificationError`` if it does not verify: a gap nobody can prove was declared is no declaration)."""
    out: list[VerifiedGap] = []
    for batch_id in store.batch_ids():
        b = store.batch(batch_id)
        if b is None or not b.record.extra.get("gaps"):
            continue
        anchored = await verify_batch(store, anchorer, batch_id)
        anchor = await anchorer.get_anchor(batch_id) or {}
        out += [VerifiedGap(g, batch_id, anchor.get("tx_id")) for g in anchored.gaps()]
    return out


async def verify_all_batches(store: ReadingStore, anchorer: Anchorer) -> tuple[int, dict[str, str]]:
    """``verify_batch`` of every sealed batch in the store: (how many verified, batch id → why the others did not)."""
    failed: dict[str, str] = {}
    ids = store.batch_ids()
    for batch_id in ids:
        try:
            await verify_batch(store, anchorer, batch_id)
        except VerificationError as exc:
            failed[batch_id] = str(exc)
    return len(ids) - len(failed), failed


async def verify_store_on_ledger(store: ReadingStore, config: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """``verify_all_batches`` through the ledger a twins ledger config names (each org's operator, as
    `twinledger verify reading` does); the gateways are closed afterwards."""
    anchorer, gateways = connect_ledger(config)
    try:
        return await verify_all_batches(store, anchorer)
    finally:
        for g in gateways:
            await g.close()


def verify_reading_sync(store: ReadingStore, anchorer: Anchorer, asset: str, seq: int, prop: str | None = None) -> list[VerifiedReading]:
    return asyncio.run(verify_reading(store, anchorer, asset, seq, prop))
