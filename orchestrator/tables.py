"""Plain-text output for people: aligned tables and "field  value" blocks (scripts use --json instead)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())  # one line per row, whatever the value holds


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "(none)") -> str:
    body = [[cell(v) for v in row] for row in rows]
    if not body:
        return empty
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = [headers, *body]
    # The last column is not padded, so long values (tx ids, details) leave no trailing spaces.
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths[:-1])) + ("  " if len(line) > 1 else "") + line[-1]
        for line in lines
    )


def render_fields(pairs: Iterable[tuple[str, Any]]) -> str:
    items = [(k, cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in items)


def emit(args: argparse.Namespace, result: Any, human: str) -> None:
    """The command's answer: the chaincode's JSON as-is with --json, else the text for people."""
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else human)
