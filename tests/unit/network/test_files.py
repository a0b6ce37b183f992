"""network/files.py: atomic writes with the final mode from creation, private logs and folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from network import files
from network.files import open_private_log, private_dir, write_atomic, write_private


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_atomic_text_and_bytes_with_modes(tmp_path: Path) -> None:
    a = write_atomic(tmp_path / "sub" / "a.yaml", "héllo\n")
    assert a.read_bytes() == "héllo\n".encode()
    assert _mode(a) == 0o644
    b = write_atomic(tmp_path / "b.sh", b"#!/bin/sh\n", 0o755)
    assert b.read_bytes() == b"#!/bin/sh\n" and _mode(b) == 0o755
    k = write_private(tmp_path / "k.pem", b"KEY")
    assert k.read_bytes() == b"KEY" and _mode(k) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sh", "k.pem", "sub"]  # no temp file left


def test_replacing_a_wider_file_gives_the_new_mode(tmp_path: Path) -> None:
    p = tmp_path / "secrets.json"
    p.write_text("{}")
    p.chmod(0o644)
    write_private(p, "{\"a\": 1}")
    assert _mode(p) == 0o600 and p.read_text() == "{\"a\": 1}"


def test_the_mode_is_right_from_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at the temporary file while its bytes are being written: already 0600, never wider."""
    seen: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        temps = [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
        assert len(temps) == 1 and _mode(temps[0]) == 0o600
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", spying_write)
    write_private(tmp_path / "key.pem", b"-----BEGIN PRIVATE KEY-----\n")
    assert seen and set(seen) == {0o600}


def test_a_write_failing_midway_leaves_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_private(tmp_path / "state.json", b"old")
    calls = {"n": 0}
    real_write = os.write

    def failing_write(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data[:3])  # a short write, then the disk is full

    monkeypatch.setattr(files.os, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        write_private(p, b"new content, longer than one short write")
    assert p.read_bytes() == b"old" and _mode(p) == 0o600
    assert [q.name for q in tmp_path.iterdir()] == ["state.json"]


def test_a_failing_fsync_leaves_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_atomic(tmp_path / "core.yaml", "old")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_atomic(p, "new")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["core.yaml"]


def test_umask_narrows_never_widens(tmp_path: Path) -> None:
    os.umask(0o077)
    assert _mode(write_atomic(tmp_path / "a", "x", 0o644)) == 0o600
    assert _mode(write_private(tmp_path / "b", "x")) == 0o600


def test_private_dir_and_log(tmp_path: Path) -> None:
    d = private_dir(tmp_path / "home" / "logs")
    assert _mode(d) == 0o700
    with open_private_log(d / "peer0.log") as f:
        f.write(b"one\n")
    with open_private_log(d / "peer0.log") as f:
        f.write(b"two\n")
    assert (d / "peer0.log").read_bytes() == b"one\ntwo\n" and _mode(d / "peer0.log") == 0o600
    # A home made before logs were private is narrowed, not rejected.
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "x.log").write_text("a\n")
    (old / "x.log").chmod(0o644)
    assert _mode(private_dir(old)) == 0o700
    with open_private_log(old / "x.log") as f:
        f.write(b"b\n")
    assert _mode(old / "x.log") == 0o600 and (old / "x.log").read_text() == "a\nb\n"
