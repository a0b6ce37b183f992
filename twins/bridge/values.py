"""What the bridge takes from an OPC-UA server as a reading, and what it refuses, loudly but once.

Today a variable's value is the pair ``[seq, value]`` (``twins.simulators.server``). A server can send
anything else: a String, a list of three, ``[seq, NaN]`` or an infinity, a sequence number that is not a
positive whole number, a value under a Bad status code, no source timestamp. None of that may reach a
twin or be sealed and anchored as a good reading, and none of it may stop the bridge.

``ValueCheck.sample`` turns one OPC-UA data value into a sample ``(seq, source_ts_us, value)`` or refuses it:

- the value is unusable but its sequence number is good (NaN, an infinity, a non-number, a Bad status that
  still carries the pair):
  the sample is kept with ``value=None``. The sequencer passes that number without delivering anything
  (``Sequencer.skipped``), so the variable's numbering stays continuous: no gap to read back from history,
  nothing counted as lost, nothing anchored for it.
- nothing can be placed (not a pair, no usable sequence number, no source timestamp, a Bad status without
  its value, as servers send it): ``None``, dropped.

``[0, NaN]`` is not refused: sequence number 0 is what a fresh variable holds before its first sample.

Each refusal is logged as ONE warning per variable and kind of problem, naming the variable and what
was wrong; later ones of the same kind are only counted (``refused``), so a server that sends nothing but
garbage does not flood the log.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from asyncua import ua

from twins.readings import dt_to_us

log = logging.getLogger("twins.bridge")

#: Sequence numbers are carried as Double: above 2**53 they are no longer exact whole numbers.
MAX_SEQ = 2 ** 53
Key = tuple[str, str]  # (asset, property)
Sample = tuple[int, int, "float | None"]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class ValueCheck:
    def __init__(self) -> None:
        self.refused = 0  # data values not delivered as readings, of every kind
        self._told: set[tuple[Key, str]] = set()

    def _refuse(self, key: Key, kind: str, detail: str) -> None:
        self.refused += 1
        if (key, kind) not in self._told:
            self._told.add((key, kind))
            log.warning("%s/%s: %s; not delivered to the twin (further values like it are counted, not logged)",
                        key[0], key[1], detail)

    def sample(self, key: Key, value: Any, status: ua.StatusCode | None, source_ts: Any) -> Sample | None:
        """The sample to offer the sequencer for one OPC-UA data value, or None when it cannot be placed."""
        if status is not None and not status.is_good():
            # A Bad (or Uncertain) value usually comes without its value, hence without a sequence number: the
            # server numbered no reading then. When it does carry one, that number is passed without a reading.
            seq = value[0] if isinstance(value, (list, tuple)) and len(value) == 2 else None
            placed = _number(seq) and math.isfinite(seq) and seq == int(seq) and 1 <= seq <= MAX_SEQ
            self._refuse(key, "status", f"{f'seq {int(seq)}' if placed else 'a value'} came with status {status.name}")
            return (int(seq), dt_to_us(source_ts), None) if placed and source_ts is not None else None
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            kind = type(value).__name__ if not isinstance(value, (list, tuple)) else f"{len(value)}-element list"
            self._refuse(key, "shape", f"value {_show(value)} ({kind}) is not a [seq, value] pair")
            return None
        raw_seq, raw_value = value
        if raw_seq == 0 and _number(raw_seq):
            return None  # [0, NaN]: the simulators' "nothing published yet" (a fresh variable), not an error
        if not _number(raw_seq) or not math.isfinite(raw_seq) or raw_seq != int(raw_seq) or not 1 <= raw_seq <= MAX_SEQ:
            self._refuse(key, "seq", f"sequence number {_show(raw_seq)} is not a whole number from 1 to 2**53")
            return None
        if source_ts is None:
            self._refuse(key, "timestamp", f"seq {int(raw_seq)} has no source timestamp")
            return None
        seq, ts = int(raw_seq), dt_to_us(source_ts)
        if not _number(raw_value) or not math.isfinite(raw_value):
            self._refuse(key, "value", f"seq {seq} carries {_show(raw_value)}, not a finite number")
            return seq, ts, None
        return seq, ts, float(raw_value)
