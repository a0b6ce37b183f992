"""The unit of sensor data: one value of one property of one asset, with its source time and sequence.

A reading is identified by ``(asset, prop, seq)``: ``seq`` is the per-variable sequence number the
simulator (the "sensor") assigns, 1, 2, 3, … without holes, so a consumer that saw ``seq = n`` and then
``seq = n + 3`` knows exactly which two readings it missed.

Canonical leaf bytes (what the Merkle tree hashes; see ``twins.anchoring.merkle``)::

    b"TLR1"                                  4 bytes  format tag / version
    u16 len(org)   || org   (UTF-8)                   owning organisation (hospital1, plant1, ...)
    u16 len(asset) || asset (UTF-8)
    u16 len(prop)  || prop  (UTF-8)
    u64 seq                                           big-endian
    i64 source_ts_us                                  microseconds since 1970-01-01T00:00:00Z, big-endian
    f64 value                                         IEEE-754 binary64, big-endian

Fixed-width binary rather than JSON so that any language reproduces it bit for bit (no float formatting,
key order or whitespace questions). NaN is never a reading: simulators publish nothing for a missing value.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

LEAF_TAG = b"TLR1"
_TAIL = struct.Struct(">Qqd")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Reading:
    org: str
    asset: str
    prop: str
    seq: int
    source_ts_us: int
    value: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.asset, self.prop)

    def leaf_bytes(self) -> bytes:
        return leaf_bytes(self.org, self.asset, self.prop, self.seq, self.source_ts_us, self.value)

    def to_dict(self) -> dict:
        return {
            "org": self.org, "asset": self.asset, "prop": self.prop, "seq": self.seq,
            "source_ts_us": self.source_ts_us, "source_ts": us_to_iso(self.source_ts_us), "value": self.value,
        }


def _s(text: str) -> bytes:
    b = text.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"identifier too long for the leaf encoding: {text[:40]}...")
    return struct.pack(">H", len(b)) + b


def leaf_bytes(org: str, asset: str, prop: str, seq: int, source_ts_us: int, value: float) -> bytes:
    if not math.isfinite(value):
        raise ValueError(f"reading {asset}/{prop}#{seq} has a non-finite value {value!r}")
    if seq < 0:
        raise ValueError(f"negative sequence number {seq}")
    return LEAF_TAG + _s(org) + _s(asset) + _s(prop) + _TAIL.pack(seq, source_ts_us, float(value))


def dt_to_us(dt: datetime) -> int:
    """UTC datetime (naive = UTC, as asyncua returns them) → integer microseconds since the Unix epoch."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    d = dt - _EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def us_to_dt(us: int) -> datetime:
    """Inverse of ``dt_to_us`` (timezone-aware UTC)."""
    from datetime import timedelta

    return _EPOCH + timedelta(microseconds=us)


def us_to_iso(us: int) -> str:
    return us_to_dt(us).isoformat().replace("+00:00", "Z")
