"""Checkpointers: persistence, resume position and atomic writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from network.checkpoint import FileCheckpointer, InMemoryCheckpointer


@dataclass
class Event:
    block_number: int
    transaction_id: str


def test_in_memory_defaults_and_updates() -> None:
    cp = InMemoryCheckpointer()
    assert (cp.block_number, cp.transaction_id) == (0, "")
    cp.checkpoint_event(Event(7, "tx7"))
    assert (cp.block_number, cp.transaction_id) == (7, "tx7")
    cp.checkpoint_block(7)  # whole block done: next block, no transaction
    assert (cp.block_number, cp.transaction_id) == (8, "")
    with pytest.raises(ValueError):
        cp.checkpoint_transaction(-1, "")


def test_file_checkpointer_persists_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "events.json"
    cp = FileCheckpointer(path)
    assert (cp.block_number, cp.transaction_id) == (0, "")
    cp.checkpoint_event(Event(12, "abc"))

    # Same JSON shape as the official SDKs' FileCheckpointer.
    assert json.loads(path.read_text()) == {"blockNumber": 12, "transactionId": "abc"}

    resumed = FileCheckpointer(path)
    assert (resumed.block_number, resumed.transaction_id) == (12, "abc")
    resumed.checkpoint_block(12)
    assert (FileCheckpointer(path).block_number, FileCheckpointer(path).transaction_id) == (13, "")


def test_file_checkpointer_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    cp = FileCheckpointer(path)
    for i in range(20):
        cp.checkpoint_transaction(i, f"tx{i}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json"]


def test_file_checkpointer_keeps_old_state_when_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cp.json"
    cp = FileCheckpointer(path)
    cp.checkpoint_transaction(3, "tx3")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("network.files.os.replace", failing_replace)  # the one writer it uses
    with pytest.raises(OSError):
        cp.checkpoint_transaction(4, "tx4")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"blockNumber": 3, "transactionId": "tx3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json"]


def test_corrupt_checkpoint_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FileCheckpointer(path)
