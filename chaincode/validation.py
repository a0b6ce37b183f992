"""Argument checks shared by the contracts.

Arguments arrive as untrusted strings from any client of the channel; each function checks them
before it reads or writes state, so a rejected call changes nothing and says why.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from chaincode.errors import ValidationError

#: Longest identifier (org names, later data set and task IDs) accepted on the ledger.
MAX_NAME_LENGTH = 64
# Lower-case letters, digits and inner hyphens: safe as a composite-key attribute, a file name and a
# DNS-like label, which is how org names are also used by the network tooling.
_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?")


def require_str(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, got {type(value).__name__}")
    return value


def require_pattern(field: str, value: Any, *, pattern: re.Pattern[str], max_length: int, rule: str) -> str:
    """Non-empty text of at most max_length characters that fully matches pattern.

    The one shape of every identifier-like argument; ``rule`` finishes the error message
    ("<field> '<value>' <rule>"), which stays one bounded line because the length is checked first.
    """
    text = require_str(field, value)
    if not text:
        raise ValidationError(f"{field} must not be empty")
    if len(text) > max_length:
        raise ValidationError(f"{field} is {len(text)} characters long; the limit is {max_length}")
    if not pattern.fullmatch(text):
        raise ValidationError(f"{field} {text!r} {rule}")
    return text


def require_name(field: str, value: Any) -> str:
    """An identifier: 1..64 chars of a-z, 0-9 and '-', starting with a letter, not ending with '-'."""
    return require_pattern(field, value, pattern=_NAME_RE, max_length=MAX_NAME_LENGTH,
                           rule="is not valid: use lower-case letters, digits and '-', starting with a letter")


def require_choice(field: str, value: Any, choices: Collection[str]) -> str:
    text = require_str(field, value)
    if text not in choices:
        allowed = ", ".join(sorted(choices))
        shown = text if len(text) <= MAX_NAME_LENGTH else text[:MAX_NAME_LENGTH] + "..."
        raise ValidationError(f"{field} {shown!r} is not one of: {allowed}")
    return text
