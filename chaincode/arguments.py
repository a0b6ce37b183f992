"""Argument rules of the data-governance contracts (data sets, grants, access checks, consent).

Every value a client passes is untrusted text that may end up in a composite key, a ledger record or
an error message. Each rule below checks one kind of value and returns it in canonical form, or
raises ValidationError with one line that names the argument and the limit it broke; values are
echoed with repr() and cut short, so that an error message is always a single, bounded line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from chaincode.errors import ValidationError
from chaincode.validation import require_pattern, require_str

#: Longest identifier (data set IDs, kinds, patient pseudonyms).
MAX_ID_LENGTH = 64
#: Longest purpose or consent scope ("verb:object").
MAX_PURPOSE_LENGTH = 64
#: Largest schema summary, in UTF-8 bytes, before and after canonicalisation.
MAX_SCHEMA_BYTES = 4096
#: Deepest nesting of objects and arrays in a schema summary.
MAX_SCHEMA_DEPTH = 8
#: Largest total size of one call's arguments, in UTF-8 bytes: bounds what a caller can make every
#: endorser parse, and what a transaction can carry onto the channel.
MAX_ARGUMENT_BYTES = 8192
#: How much of a rejected value an error message repeats.
SHOWN_CHARS = 64

# IDs become composite-key attributes, file names in the CLI's cache and URL path segments, so the
# alphabet is the portable file-name set; the first character may not be '.' or '-' (no ".." and no
# option-like "-x").
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# "train:maintenance-v1", "read:aggregates": a lower-case verb, a colon, then an ID-like object.
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}:[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def shown(text: str) -> str:
    """A bounded excerpt of a rejected value, for error messages."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _utf8_size(field: str, text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates: the peer's UTF-8 decoding never yields them
        raise ValidationError(f"{field} is not valid UTF-8 text") from exc


def require_id(field: str, value: Any) -> str:
    """1..64 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit."""
    return require_pattern(field, value, pattern=_ID_RE, max_length=MAX_ID_LENGTH,
                           rule="is not valid: use letters, digits, '.', '_' and '-', starting with a letter or digit")


def require_purpose(field: str, value: Any) -> str:
    """A purpose of the form verb:object, e.g. 'train:maintenance-v1' or 'read:aggregates'."""
    return require_pattern(field, value, pattern=_PURPOSE_RE, max_length=MAX_PURPOSE_LENGTH,
                           rule="is not of the form verb:object (e.g. 'train:maintenance-v1' or 'read:aggregates')")


def require_sha256(field: str, value: Any) -> str:
    """64 hexadecimal digits, returned in lower case (the form `sha256sum` prints)."""
    text = require_str(field, value)
    if not _SHA256_RE.fullmatch(text):
        raise ValidationError(f"{field} {shown(text)!r} is not a SHA-256 digest (64 hexadecimal digits)")
    return text.lower()


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _depth(document: Any) -> int:
    """Nesting depth of objects and arrays, computed without recursion."""
    deepest = 0
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Sequence[Any] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: canonical JSON cannot write infinity
        raise ValidationError(f"number {shown(text)!r} is out of range")
    return number


def _no_constants(name: str) -> Any:
    raise ValidationError(f"{name} is not JSON")  # Python's parser accepts NaN and Infinity; JSON does not


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:  # last-one-wins would store something other than what the caller showed
            raise ValidationError(f"duplicate key {shown(key)!r}")
        document[key] = value
    return document


def parse_json_text(field: str, value: Any, max_bytes: int, max_depth: int = MAX_SCHEMA_DEPTH) -> Any:
    """Strict JSON of at most max_bytes: no NaN/Infinity, no duplicate keys, one-line errors."""
    text = require_str(field, value)
    size = _utf8_size(field, text)
    if size > max_bytes:
        raise ValidationError(f"{field} is {size} bytes; the limit is {max_bytes}")
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except ValidationError as exc:
        raise ValidationError(f"{field} is not valid: {exc}") from exc
    except RecursionError as exc:
        raise ValidationError(f"{field} is nested more than {max_depth} levels deep") from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise ValidationError(f"{field} is not JSON: {getattr(exc, 'msg', exc)} at character "
                              f"{getattr(exc, 'pos', '?')}") from exc


def require_json_object(field: str, value: Any, max_bytes: int = MAX_SCHEMA_BYTES,
                        max_depth: int = MAX_SCHEMA_DEPTH) -> dict[str, Any]:
    """A JSON object of at most max_bytes (before and after canonicalisation) and max_depth levels."""
    document = parse_json_text(field, value, max_bytes, max_depth)
    if not isinstance(document, dict):
        raise ValidationError(f"{field} must be a JSON object, got {_json_type(document)}")
    if _depth(document) > max_depth:
        raise ValidationError(f"{field} is nested more than {max_depth} levels deep")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(canonical.encode("utf-8")) > max_bytes:  # e.g. 1e5 is written back as 100000.0
        raise ValidationError(f"{field} is more than {max_bytes} bytes once written as canonical JSON")
    return document


def limit_arguments(params: Sequence[str]) -> None:
    """The call's arguments together stay within MAX_ARGUMENT_BYTES."""
    total = sum(_utf8_size("an argument", param) for param in params)
    if total > MAX_ARGUMENT_BYTES:
        raise ValidationError(
            f"the arguments are {total} bytes together; the limit is {MAX_ARGUMENT_BYTES}"
        )
