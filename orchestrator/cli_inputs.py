"""Reading a command's local input before any ledger call: digests, JSON documents, expiry times.

Each reader turns what a person types into the exact argument the chaincode takes, or raises a
one-line ``UserError`` naming the option, so that bad input never costs a round trip to the peers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable
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


# --- argparse types: a number that cannot mean anything is refused while parsing -------------------
# Each returns an argparse ``type=`` callable; a bad value becomes argparse's one-line usage error
# (exit 2) before any file is written or any peer is asked. float() alone takes "nan" and "inf", and
# a negative count or a port above 65535 is a whole number too.


def whole(minimum: int, maximum: int | None = None, what: str = "a whole number") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            limits = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {what} {limits}, not {text!r}")
        return value
    parse.__name__ = what  # argparse names the type in its own messages
    return parse


def finite(minimum: float, *, above: bool = False, what: str = "a number") -> Callable[[str], float]:
    """A finite float >= minimum (> minimum with above=True)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            bound = f"{'above' if above else 'of at least'} {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite {what} {bound}, not {text!r}")
        return value
    parse.__name__ = what
    return parse


#: A TCP port on 127.0.0.1; port(allow_zero=True) also takes 0, "pick a free one" or "none".
def port(allow_zero: bool = False) -> Callable[[str], int]:
    return whole(0 if allow_zero else 1, 65535, "a port")


#: The first of a block of ports (the network's or the federation's): the lowest ports are the system's.
port_base = whole(1025, 64999, "a port base")
#: A count of things that must happen at least once (rounds, orgs, lines).
positive = whole(1, None, "a count")
seconds = finite(0.0, what="number of seconds")
positive_seconds = finite(0.0, above=True, what="number of seconds")
positive_rate = finite(0.0, above=True, what="rate")
