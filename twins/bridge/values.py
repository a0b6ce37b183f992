"""What the bridge takes from an OPC-UA server as a reading, and what it refuses, loudly but once.

A reading comes from a standard scalar variable: Boolean, the integer types (SByte … UInt64) or Float / Double,
with a StatusCode and a Source (or at least a Server) timestamp. ``ValueCheck.sample`` turns one OPC-UA data value
into a sample ``(ts_us, status, value)`` for the sequencer, or refuses it:

- the time: the SourceTimestamp; without one, the ServerTimestamp (said ONCE per variable: such a server orders its
  values by when it saw them, not by when they were measured); with neither, the value cannot be placed: refused.
- the quality: the StatusCode without its info bits (``twins.readings.STATUS_MASK``). A Bad or Uncertain value is
  a reading *of that quality*: kept, sealed and anchored with its status, with its value when it carries a finite
  number (Uncertain usually does) and NaN otherwise, and never given to a twin as a good value (the runtime skips
  it). BadWaitingForInitialData — a variable that never had a value — is no reading at all: ignored, silently.
- the value, under a Good status: a Boolean is 1.0 / 0.0, an integer or a Float its float value (an Int64 / UInt64
  beyond 2**53 is rounded to the nearest double, said once); NaN, an infinity, a String, an array, a structure,
  or no value at all are refused.

Each refusal or fallback is logged as ONE warning per variable and kind of problem, naming the variable and what was
wrong; later ones of the same kind are only counted (``refused``), so a server that sends nothing but garbage does
not flood the log. The project's former ``[seq, value]`` pairs are arrays, hence refused like any other array.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from asyncua import ua

from twins.readings import STATUS_MASK, dt_to_us

log = logging.getLogger("twins.bridge")

Key = tuple[str, str]  # (asset, property)
Sample = tuple[int, int, float]
EXACT = 2 ** 53
_NO_INITIAL = ua.StatusCodes.BadWaitingForInitialData
_NAN = float("nan")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_float(value: Any) -> float | None:
    """A Boolean or number as float; None for anything else (a string, an array, a structure, None)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


class ValueCheck:
    def __init__(self) -> None:
        self.refused = 0  # data values not delivered as readings, of every kind
        self.server_time = 0  # values placed by their ServerTimestamp (no SourceTimestamp)
        self._told: set[tuple[Key, str]] = set()

    def _tell(self, key: Key, kind: str, detail: str, level: int = logging.WARNING) -> None:
        if (key, kind) not in self._told:
            self._told.add((key, kind))
            log.log(level, "%s/%s: %s (further values like it are counted, not logged)", key[0], key[1], detail)

    def _refuse(self, key: Key, kind: str, detail: str) -> None:
        self.refused += 1
        self._tell(key, kind, detail + "; not delivered")

    def sample(self, key: Key, value: Any, status: ua.StatusCode | None, source_ts: Any,
               server_ts: Any = None) -> Sample | None:
        """The sample to offer the sequencer for one OPC-UA data value, or None when it is not a reading."""
        code = (status.value if status is not None else 0) & STATUS_MASK
        if code == _NO_INITIAL:
            return None  # the variable has no value yet: nothing was measured
        if source_ts is not None:
            ts = dt_to_us(source_ts)
        elif server_ts is not None:
            ts = dt_to_us(server_ts)
            self.server_time += 1
            self._tell(key, "server-time", "the server sends no SourceTimestamp: its values are ordered and identified "
                       "by their ServerTimestamp (when the server saw them, not when they were measured)")
        else:
            self._refuse(key, "timestamp", f"value {_show(value)} has neither a Source nor a Server timestamp, so it "
                         "cannot be placed in time")
            return None
        number = _as_float(value)
        if code >> 30:  # Uncertain or Bad: a reading of that quality, never a good value for the twin
            self._tell(key, "status", f"a value came with status {ua.StatusCode(code).name}: recorded and anchored "
                       "with that status, not given to the twin")
            return ts, code, number if number is not None and math.isfinite(number) else _NAN
        if number is None:
            kind = type(value).__name__ if not isinstance(value, (list, tuple)) else f"{len(value)}-element array"
            self._refuse(key, "type", f"value {_show(value)} ({kind}) is not a Boolean or numeric scalar")
            return None
        if not math.isfinite(number):
            self._refuse(key, "finite", f"value {_show(value)} under a Good status is not a finite number")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > EXACT:
            self._tell(key, "exact", f"integer {value} is beyond 2**53: recorded as the nearest double {number!r}")
        return ts, code, number
