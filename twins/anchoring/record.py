"""The anchor record of one sealed batch: what goes on the ledger (hashes and ranges, never the data)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

LEAF_FORMAT = "TLR1"  # twins.readings.leaf_bytes
TREE_FORMAT = "sha256-rfc6962"  # twins.anchoring.merkle


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the byte string that record hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True)
class BatchRecord:
    """One org's readings sealed during one anchoring interval.

    ``seq_ranges`` maps ``"asset/prop"`` to ``[first_seq, last_seq]`` of that variable in the batch;
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

    def record_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()
