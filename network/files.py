"""Writing files so that no reader -- another process, or a restart after a crash -- sees them half
written or, for a private file, readable by anyone but its owner even for a moment.

Every generated file of TwinLedger goes through here: node configs, the supervisor's manifest and state,
enrolment secrets, private keys, checkpoints, model artefacts, OPC-UA and Flower state.

* ``write_atomic`` writes a temporary sibling created with its final mode (``open(2)`` with O_EXCL, so
  neither a chmod afterwards nor a window where the bytes sit in a 0644 file), fsyncs it, renames it over
  the target (atomic on POSIX: the old or the new content, never a mix) and fsyncs the folder so the
  rename itself survives a crash. On any error the temporary file is removed and the old file stays.
* ``write_private`` is the same with mode 0600: keys, secrets, anything a log must not show either.
* ``private_dir`` / ``open_private_log`` make a 0700 folder and a 0600 append-only log in one step.

Modes behave as for ``open(2)``: the process umask can narrow them, never widen them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO

PRIVATE = 0o600
PRIVATE_DIR = 0o700
#: For processes whose files we do not write ourselves (fabric-ca-server puts its bootstrap password in
#: its config, Fabric nodes their ledgers, all with Go's default 0644): the owner's alone from creation.
PRIVATE_UMASK = 0o077

StrPath = str | os.PathLike[str]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable. Some file systems refuse fsync on a folder; that only loses durability.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: StrPath, data: bytes | str, mode: int = 0o644, *, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` atomically; the file has ``mode`` from its first byte. Returns the path.

    The parent folder is created if missing. ``str`` data is encoded with ``encoding``.
    """
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name in the same folder (same file system, so the rename is atomic); O_EXCL never
    # reuses a file someone else prepared, and a crashed writer's leftover never blocks the next one.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_private(path: StrPath, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """``write_atomic`` with mode 0600: readable by the owner only, from creation."""
    return write_atomic(path, data, PRIVATE, encoding=encoding)


def private_dir(path: StrPath) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing folder is narrowed to 0700."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)  # a home made before logs were private
    return path


def open_private_log(path: StrPath) -> BinaryIO:
    """Open a log for appending, unbuffered, created 0600 (an existing, wider one is narrowed)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, PRIVATE)
        return os.fdopen(fd, "ab", buffering=0)
    except BaseException:
        os.close(fd)
        raise
