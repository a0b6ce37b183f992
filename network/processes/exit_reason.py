"""Why a supervised process died, read from the end of its own log, and whether it waits for disk space.

A Fabric node that cannot write its ledger panics (``Cannot commit block to the ledger due to write
.../blockfile_000000: no space left on device``); restarted at once it panics again, every time, until
space returns. So the supervisor keeps the fatal line of each exit (shown by ``twinledger status``) and,
when it names a full disk, waits for free space on that file system instead of crash-looping, then
restarts the node as soon as there is room again (the node recovers its ledger from the last complete
block and catches up from the orderers).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: How much of a log's end is read after an exit: a Go panic's stack follows its message by a few KB.
TAIL_BYTES = 64 * 1024
#: Free space on the full file system at which the node is started again: enough for a few hundred
#: blocks, so a disk that is still nearly full does not put the node straight back into a crash loop.
RESTART_FREE_BYTES = 8 * 1024 * 1024
MAX_LINE = 300

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: ``write /path/file: no space left on device`` (Go) and ``[Errno 28] No space left on device: '/path'``
#: (Python): the path is the first absolute path on the line.
_NO_SPACE = re.compile(r"no space left on device", re.IGNORECASE)
_PATH = re.compile(r"(/[^\s:'\"]+)")
_FABRIC_FATAL = re.compile(r"\b(PANI|FATA)\b")
_PY_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


@dataclass(frozen=True)
class ExitReason:
    line: str                      # the fatal line, colour codes stripped, at most MAX_LINE characters
    full_path: str | None = None   # a path a write failed on because its disk is full

    @property
    def disk_full(self) -> bool:
        return self.full_path is not None


def read_exit_reason(log: Path, since: int) -> ExitReason | None:
    """The reason a run that started writing ``log`` at byte ``since`` ended, or None if it said none."""
    try:
        with open(log, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(since, size - TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    return exit_reason_of(text.splitlines())


def exit_reason_of(lines: list[str]) -> ExitReason | None:
    """The most telling line: a full disk first (it decides what to do), then a Go panic, a Fabric PANI or
    FATA log line, then the last line of a Python traceback."""
    clean = [_ANSI.sub("", ln).strip() for ln in lines]
    for ln in clean:
        if _NO_SPACE.search(ln):
            path = _PATH.search(ln)
            return ExitReason(_short(ln), path.group(1) if path else None)
    for ln in clean:
        if ln.startswith("panic:"):
            return ExitReason(_short(ln))
    for ln in clean:
        if _FABRIC_FATAL.search(ln):
            return ExitReason(_short(ln))
    for ln in reversed(clean):
        if _PY_ERROR.match(ln):
            return ExitReason(_short(ln))
    return None


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or its nearest
    existing parent: the file that could not be written may not exist)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def _short(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
