"""The anchor record of one sealed batch: what goes on the ledger (hashes and ranges, never the data)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

LEAF_FORMAT = "TLR2"  # twins.readings.leaf_bytes (TLR1: before standard scalars, no status)
TREE_FORMAT = "sha256-rfc6962"  # twins.anchoring.merkle

# What the twins contract accepts (chaincode/twins.py MAX_RECORD_BYTES, chaincode/arguments.py MAX_ARGUMENT_BYTES;
# tests/unit/twins/test_ledger_records.py keeps these equal to the contract's): a record's canonical JSON, and
# all arguments of AnchorSensorBatch (batch id + record) together, in UTF-8 bytes. The batcher splits an org's
# interval into several chained batches rather than ever exceed them.
MAX_RECORD_BYTES = 8000
MAX_ARGUMENT_BYTES = 8192


@dataclass(frozen=True)
class GapRecord:
    """Readings of one variable that may be missing and could not be read back: the server keeps no history, and the
    stream broke (a reconnect, a restart of the bridge, an overflow of the server's queue) after the reading at
    ``from_ts_us`` and resumed with the one at ``to_ts_us`` (source times; both readings are stored, the gap lies
    strictly between). Sealed into the org's batch with its readings (``BatchRecord.extra["gaps"]``), so the
    anchored record hash covers it and a verifier sees the gap instead of missing it."""

    org: str
    asset: str
    prop: str
    from_ts_us: int
    to_ts_us: int
    reason: str

    def to_text(self) -> str:
        """``"asset/prop FROM_US TO_US reason"``: one string, as the twins contract takes a record nested at most 3
        levels deep (record -> extra -> gaps -> this); a variable name has no space, the reason comes last."""
        return f"{self.asset}/{self.prop} {self.from_ts_us} {self.to_ts_us} {self.reason}"

    @staticmethod
    def from_text(org: str, text: str) -> "GapRecord":
        var, from_us, to_us, reason = text.split(" ", 3)
        asset, _, prop = var.rpartition("/")
        return GapRecord(org, asset, prop, int(from_us), int(to_us), reason)

    def to_dict(self) -> dict:
        return {"var": f"{self.asset}/{self.prop}", "from_ts_us": self.from_ts_us, "to_ts_us": self.to_ts_us,
                "reason": self.reason}


def compact_ranges(per_variable: dict[str, list[int]]) -> dict[str, list[int]]:
    """``{"asset/prop": [first, last]}`` -> the same, with each asset whose variables all share one range folded
    into one ``"asset": [first, last]`` entry (sorted keys; see ``BatchRecord.seq_ranges``)."""
    by_asset: dict[str, dict[str, list[int]]] = {}
    for var, rng in per_variable.items():
        asset, sep, prop = var.rpartition("/")
        by_asset.setdefault(asset if sep else var, {})[prop if sep else ""] = rng
    out: dict[str, list[int]] = {}
    for asset, props in by_asset.items():
        distinct = {tuple(r) for r in props.values()}
        if len(distinct) == 1 and "" not in props and "/" not in asset:
            out[asset] = list(next(iter(distinct)))
        else:
            out.update({f"{asset}/{p}" if p else asset: r for p, r in props.items()})
    return dict(sorted(out.items()))


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the byte string that record hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True)
class BatchRecord:
    """One org's readings sealed during one anchoring interval.

    ``seq_ranges`` maps ``"asset/prop"`` to ``[first_seq, last_seq]`` of that variable in the batch, or
    ``"asset"`` alone when every variable of that asset in the batch has the same range (``compact_ranges``:
    a machine's 14 values of one product share its sequence number, so this keeps records ~4x smaller and the
    ledger's 8 KiB argument cap far away, with no information lost);
    ``first_ts_us``/``last_ts_us`` bound the readings' source timestamps; ``twin_state_hashes`` maps each of
    the org's assets to the SHA-256 of its twin state (canonical JSON) at sealing; ``prev_record_hash`` chains
    the org's batches, so a batch missing from a local store is noticed.
    """

    org: str
    batch_no: int
    merkle_root: str  # hex
    count: int
    seq_ranges: dict[str, list[int]]
    first_ts_us: int
    last_ts_us: int
    twin_state_hashes: dict[str, str]
    prev_record_hash: str
    sealed_at_us: int
    leaf_format: str = LEAF_FORMAT
    tree_format: str = TREE_FORMAT
    extra: dict = field(default_factory=dict)

    @property
    def batch_id(self) -> str:
        return f"{self.org}:{self.batch_no:010d}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_id"] = self.batch_id
        return d

    @staticmethod
    def from_dict(d: dict) -> "BatchRecord":
        d = {k: v for k, v in d.items() if k != "batch_id"}
        return BatchRecord(**d)

    def canonical(self) -> bytes:
        return canonical_json(self.to_dict())

    def gaps(self) -> list[GapRecord]:
        """The gap records sealed with this batch (none in most batches: ``extra`` then has no ``gaps``)."""
        return [GapRecord.from_text(self.org, t) for t in self.extra.get("gaps", [])]

    def seq_range(self, asset: str, prop: str) -> list[int] | None:
        """The anchored ``[first, last]`` sequence range of ``asset/prop`` (per variable or per asset)."""
        return self.seq_ranges.get(f"{asset}/{prop}") or self.seq_ranges.get(asset)

    def ledger_size(self) -> int:
        """Bytes of AnchorSensorBatch's arguments for this record (the contract's cap applies to their sum)."""
        return len(self.batch_id.encode()) + len(self.canonical())

    def fits_ledger(self) -> bool:
        return len(self.canonical()) <= MAX_RECORD_BYTES and self.ledger_size() <= MAX_ARGUMENT_BYTES

    def record_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()
