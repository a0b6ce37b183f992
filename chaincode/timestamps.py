"""Time on the ledger: RFC 3339 UTC timestamps, compared as integer nanoseconds.

A contract never reads the wall clock: every endorser must compute the same result, so "now" is the
proposal's timestamp (set once by the client, identical on every endorser). Comparisons use integer
nanoseconds since the epoch so that no float rounding can make two peers disagree about whether a
grant has expired.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from chaincode.errors import ValidationError
from chaincode.validation import require_str

NANOS_PER_SECOND = 1_000_000_000
#: Longest timestamp text accepted ("2026-01-31T23:59:59.123456789+00:00" is 35 characters).
MAX_TIMESTAMP_LENGTH = 40
# ASCII digits only ([0-9], not \d, which also matches other scripts' digits); UTC only, written as
# "Z" or "+00:00": a local offset would make the same text mean different instants to different readers.
_RFC3339_UTC = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|\+00:00)"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
EXAMPLE = "2026-01-31T23:59:59Z"


def _shown(text: str) -> str:
    return text if len(text) <= MAX_TIMESTAMP_LENGTH else text[:MAX_TIMESTAMP_LENGTH] + "..."


def parse_utc(field: str, value: Any) -> int:
    """An RFC 3339 UTC timestamp as nanoseconds since the epoch; ValidationError when it is not one."""
    text = require_str(field, value)
    match = _RFC3339_UTC.fullmatch(text) if len(text) <= MAX_TIMESTAMP_LENGTH else None
    if match is None:
        raise ValidationError(f"{field} {_shown(text)!r} is not an RFC 3339 UTC timestamp like {EXAMPLE!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc)
    except ValueError as exc:  # month 13, February 30th, second 60 (no leap seconds), year 0 ...
        raise ValidationError(f"{field} {text!r} is not a valid date and time: {exc}") from exc
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    fraction = (match.group(7) or "").ljust(9, "0")
    return seconds * NANOS_PER_SECOND + int(fraction)


def format_utc(nanos: int) -> str:
    """Canonical text of an instant: the proto3 JSON form of a Timestamp (also what tx_timestamp gives)."""
    seconds, remainder = divmod(nanos, NANOS_PER_SECOND)
    return Timestamp(seconds=seconds, nanos=remainder).ToJsonString()


def tx_nanos(stub: Any) -> int:
    """The proposal's timestamp in nanoseconds: the only "now" a contract may use."""
    ts = stub.get_tx_timestamp()
    if ts is None:
        raise RuntimeError("the transaction has no timestamp")
    return int(ts.seconds) * NANOS_PER_SECOND + int(ts.nanos)


def timestamp_nanos(ts: Timestamp) -> int:
    return int(ts.seconds) * NANOS_PER_SECOND + int(ts.nanos)
