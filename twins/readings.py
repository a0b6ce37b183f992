"""The unit of sensor data: one value of one property of one asset, with its source time, quality and position.

Identity. A reading IS ``(asset, prop, source_ts_us)``: the OPC-UA SourceTimestamp of the value (the
ServerTimestamp when a server sends none, see ``twins.bridge.values``), as a historian keys its records and as
HistoryRead by time range finds them again. Standard servers number nothing, so loss and duplicates are judged
by time: the bridge takes a variable's values in strictly increasing timestamp order, drops every value not newer
than the last one taken (a re-sent value, a history overlap), and refills what it may have missed — a reconnect,
a queue overflow — by a HistoryRead from the last timestamp it took (``twins.bridge.sequencer``).

``seq`` is the bridge's own ordinal of the reading within its variable: 1, 2, 3, … in timestamp order, without
holes, continued from the store after a restart. It is derived, never received; it keeps the anchored
records' per-variable ranges compact and contiguous (a verifier sees that batch n+1 of a variable starts
where batch n ended), and names a reading on the command line (``verify reading ASSET SEQ``). The store holds
both unique per variable (``twins.anchoring.store``).

``status`` is the OPC-UA StatusCode of the value without its info bits (``code & 0xFFFF0000``: Good = 0,
severity in the top two bits: 01 Uncertain, 10 Bad). A Bad or Uncertain value is recorded and anchored
as such, never given to a twin as a good value; its ``value`` is NaN when the server sent no usable number.

Canonical leaf bytes (what the Merkle tree hashes; see ``twins.anchoring.merkle``)::

    b"TLR2"                                  4 bytes  format tag / version
    u16 len(org)   || org   (UTF-8)                   owning organisation (hospital1, plant1, ...)
    u16 len(asset) || asset (UTF-8)
    u16 len(prop)  || prop  (UTF-8)
    u64 seq                                           the bridge's ordinal, big-endian
    i64 source_ts_us                                  microseconds since 1970-01-01T00:00:00Z, big-endian
    u32 status                                        StatusCode without info bits, big-endian
    f64 value                                         IEEE-754 binary64, big-endian; NaN only when status is
                                                      not Good, then always 0x7ff8000000000000

Fixed-width binary rather than JSON so that any language reproduces it bit for bit (no float formatting,
key order or whitespace questions). TLR1 (before standard scalars) had no status and no NaN.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

LEAF_TAG = b"TLR2"
_TAIL = struct.Struct(">QqId")
_NAN = struct.unpack(">d", bytes.fromhex("7ff8000000000000"))[0]
#: StatusCode bits kept in a reading: severity and sub-code, not the info bits (Overflow, historian bits), which
#: describe the delivery, not the value, and differ between a live notification and a history record.
STATUS_MASK = 0xFFFF0000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Reading:
    org: str
    asset: str
    prop: str
    seq: int
    source_ts_us: int
    value: float
    status: int = 0  # OPC-UA StatusCode & STATUS_MASK; 0 = Good

    @property
    def key(self) -> tuple[str, str]:
        return (self.asset, self.prop)

    @property
    def good(self) -> bool:
        return self.status >> 30 == 0

    @property
    def quality(self) -> str:
        return quality_of(self.status)

    def leaf_bytes(self) -> bytes:
        return leaf_bytes(self.org, self.asset, self.prop, self.seq, self.source_ts_us, self.value, self.status)

    def to_dict(self) -> dict:
        return {
            "org": self.org, "asset": self.asset, "prop": self.prop, "seq": self.seq,
            "source_ts_us": self.source_ts_us, "source_ts": us_to_iso(self.source_ts_us),
            "value": self.value if math.isfinite(self.value) else None, "status": self.status,
            "quality": self.quality,
        }


def quality_of(status: int) -> str:
    """"good", "uncertain" or "bad" from a StatusCode's severity bits."""
    return ("good", "uncertain", "bad", "bad")[(status >> 30) & 3]


def _s(text: str) -> bytes:
    b = text.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"identifier too long for the leaf encoding: {text[:40]}...")
    return struct.pack(">H", len(b)) + b


def leaf_bytes(org: str, asset: str, prop: str, seq: int, source_ts_us: int, value: float, status: int = 0) -> bytes:
    if status & ~STATUS_MASK & 0xFFFFFFFF or not 0 <= status <= 0xFFFFFFFF:
        raise ValueError(f"reading {asset}/{prop}#{seq}: status 0x{status:08x} carries info bits or is not a u32")
    if not math.isfinite(value):
        if status >> 30 == 0 or not math.isnan(value):
            raise ValueError(f"reading {asset}/{prop}#{seq} has a non-finite value {value!r}")
        value = _NAN  # one bit pattern for "no value", whatever NaN the caller had
    if seq < 0:
        raise ValueError(f"negative sequence number {seq}")
    return LEAF_TAG + _s(org) + _s(asset) + _s(prop) + _TAIL.pack(seq, source_ts_us, status, float(value))


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
