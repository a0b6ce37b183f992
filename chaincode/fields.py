"""Argument rules shared by the model-registry and twins contracts (numbers, arrays, metrics).

Like arguments.py, each rule checks one kind of value and returns it in canonical form or raises
ValidationError with one bounded line naming the argument.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from chaincode.arguments import parse_json_text, require_json_object, shown
from chaincode.errors import ValidationError
from chaincode.validation import require_str

_DIGITS_RE = re.compile(r"[0-9]{1,10}")
#: Largest JSON array argument, in UTF-8 bytes.
MAX_ARRAY_BYTES = 4096
#: Most entries in a metrics object.
MAX_METRICS = 64
_METRIC_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")


def require_int_text(field: str, value: Any, low: int, high: int) -> int:
    """A decimal integer written as ASCII digits (no sign, no spaces), within low..high."""
    text = require_str(field, value)
    if not _DIGITS_RE.fullmatch(text):
        raise ValidationError(f"{field} {shown(text)!r} is not a whole number")
    number = int(text)
    if not low <= number <= high:
        raise ValidationError(f"{field} {number} is out of range {low}..{high}")
    return number


def require_json_int(field: str, value: Any, low: int, high: int | None = None) -> int:
    """A JSON integer (not a boolean, not a float) of at least low (and at most high)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be a whole number, got {shown(json.dumps(value))}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValidationError(f"{field} {value} is out of range {bounds}")
    return value


def require_number(field: str, value: Any) -> float | int:
    """A finite JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a finite number, got {shown(json.dumps(value))}")
    return value


def require_json_array(field: str, value: Any, max_bytes: int = MAX_ARRAY_BYTES) -> list[Any]:
    """A JSON array of at most max_bytes (duplicate object keys, NaN and Infinity refused)."""
    document = parse_json_text(field, value, max_bytes)
    if not isinstance(document, list):
        raise ValidationError(f"{field} must be a JSON array")
    return document


def require_metrics(field: str, value: Any, *, non_negative: bool = False) -> dict[str, float | int]:
    """A flat JSON object of metric name -> finite number (at most MAX_METRICS entries)."""
    document = require_json_object(field, value, max_depth=1)
    return check_metrics(field, document, non_negative=non_negative)


def check_metrics(field: str, document: Any, *, non_negative: bool = False) -> dict[str, float | int]:
    if not isinstance(document, dict):
        raise ValidationError(f"{field} must be a JSON object of metric name -> number")
    if len(document) > MAX_METRICS:
        raise ValidationError(f"{field} has {len(document)} metrics; the limit is {MAX_METRICS}")
    for name, number in document.items():
        if not _METRIC_RE.fullmatch(name):
            raise ValidationError(f"{field}: metric name {shown(name)!r} is not valid: use letters, digits, "
                                  "'.', '_' and '-', starting with a letter")
        require_number(f"{field}: metric {name!r}", number)
        if non_negative and number < 0:
            raise ValidationError(f"{field}: metric {name!r} is negative ({number})")
    return dict(document)


def require_unique_list(field: str, value: Any, *, noun: str, max_items: int, item: Callable[[Any], str]) -> list[str]:
    """A non-empty JSON array of at most max_items distinct entries, each checked by item()."""
    entries = require_json_array(field, value)
    if not entries:
        raise ValidationError(f"{field} must name at least one {noun}")
    if len(entries) > max_items:
        raise ValidationError(f"{field} has {len(entries)} entries; the limit is {max_items}")
    checked = [item(entry) for entry in entries]
    if len(set(checked)) != len(checked):
        raise ValidationError(f"{field} lists {'an' if noun[0] in 'aeiou' else 'a'} {noun} more than once")
    return checked
