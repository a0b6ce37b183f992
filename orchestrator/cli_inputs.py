"""Reading a command's local input before any ledger call: digests, JSON documents, expiry times.

Each reader turns what a person types into the exact argument the chaincode takes, or raises a
one-line ``UserError`` naming the option, so that bad input never costs a round trip to the peers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from orchestrator.cli_common import UserError

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_RELATIVE = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def sha256_of(option: str, value: str) -> str:
    """64 hexadecimal digits as given (lower-cased), or the SHA-256 of the file at that path."""
    if _HEX64.fullmatch(value):
        return value.lower()
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"{option} {value!r} is neither a SHA-256 digest (64 hexadecimal digits) nor a file to hash")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise UserError(f"{option}: cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def json_object_of(option: str, value: str) -> str:
    """A JSON object given inline or as a path to a .json file, returned as compact JSON text."""
    text = value
    path = Path(value).expanduser()
    if not value.lstrip().startswith("{") and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{option}: cannot read {path}: {exc}") from None
    try:
        document: Any = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{option} is neither a JSON object nor a JSON file: {exc}") from None
    if not isinstance(document, dict):
        raise UserError(f"{option} must be a JSON object (e.g. '{{\"columns\": {{\"age\": \"int\"}}}}')")
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_utc(moment: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds and "Z", a form the chaincode's timestamp rule accepts."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expiry_of(option: str, value: str, now: dt.datetime | None = None) -> str:
    """An absolute time (RFC 3339 with a zone, e.g. 2026-01-31T23:59:59Z) or a delay from now (90s, 30m,
    12h, 30d), as RFC 3339 UTC; it must lie in the future."""
    now = now or dt.datetime.now(dt.timezone.utc)
    relative = _RELATIVE.fullmatch(value.strip())
    if relative:
        moment = now + dt.timedelta(seconds=int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)])
    else:
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise UserError(f"{option} {value!r} is neither a time like 2026-01-31T23:59:59Z nor a delay like "
                            "30d, 12h, 15m or 90s") from None
        if moment.tzinfo is None:
            raise UserError(f"{option} {value!r} has no time zone: end it with Z for UTC")
    if moment <= now:
        raise UserError(f"{option} {value!r} is not in the future (now is {format_utc(now)})")
    return format_utc(moment)
