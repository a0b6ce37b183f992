"""Checkpointers: remember how far chaincode-event processing got, so a listener can resume after a restart.

A checkpoint is (block number, transaction id): the block in which the next event is expected and the
last event already processed inside that block. The Fabric gateway resumes *after* that transaction
(``after_transaction_id``), so an event is never delivered twice once it has been checkpointed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from network.files import write_private

__all__ = ["Checkpoint", "EventPosition", "FileCheckpointer", "InMemoryCheckpointer"]


class EventPosition(Protocol):
    """What a checkpointer needs from an event (``network.gateway.ChaincodeEvent`` fits)."""

    @property
    def block_number(self) -> int: ...

    @property
    def transaction_id(self) -> str: ...


class Checkpoint(Protocol):
    """A resume position; (0, "") means "no checkpoint yet"."""

    @property
    def block_number(self) -> int: ...

    @property
    def transaction_id(self) -> str: ...


class InMemoryCheckpointer:
    """Checkpoint held in memory: resume within one process (e.g. after a dropped connection)."""

    def __init__(self) -> None:
        self._block_number = 0
        self._transaction_id = ""

    @property
    def block_number(self) -> int:
        return self._block_number

    @property
    def transaction_id(self) -> str:
        return self._transaction_id

    def checkpoint_block(self, block_number: int) -> None:
        """The whole block was processed: continue from the start of the next one."""
        self.checkpoint_transaction(block_number + 1, "")

    def checkpoint_transaction(self, block_number: int, transaction_id: str) -> None:
        if block_number < 0:
            raise ValueError(f"block number must not be negative, got {block_number}")
        self._block_number = block_number
        self._transaction_id = transaction_id
        self._save()

    def checkpoint_event(self, event: EventPosition) -> None:
        """The event was processed: resume after its transaction, in the same block."""
        self.checkpoint_transaction(event.block_number, event.transaction_id)

    def _save(self) -> None:
        """Hook for persistent checkpointers."""


class FileCheckpointer(InMemoryCheckpointer):
    """Checkpoint kept in a JSON file, written atomically so a crash never leaves it half written.

    The JSON shape ``{"blockNumber": N, "transactionId": "..."}`` is the one the official Fabric Gateway
    SDKs write, so the file can be shared with tools built on them.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
                self._block_number = int(state.get("blockNumber", 0))
                self._transaction_id = str(state.get("transactionId", ""))
            except (ValueError, AttributeError) as exc:
                raise ValueError(
                    f"checkpoint file {self.path} is not valid JSON ({exc}); delete it to restart from "
                    "the default position"
                ) from exc

    def _save(self) -> None:
        data = json.dumps(
            {"blockNumber": self._block_number, "transactionId": self._transaction_id}
        ).encode()
        # Atomic and durable: a reader (or a restart after a crash) sees the old or the new checkpoint,
        # never a mix. 0600 as before (it was written through mkstemp).
        write_private(self.path, data)

