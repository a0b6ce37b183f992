"""Ordering and committing: transactions are cut into blocks and validated in block order.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. Instead of a Raft ordering service, ``BlockCutter`` cuts a block like an orderer's
batch settings do (after ``interval`` seconds, or at ``max_count`` transactions) and commits it at
once: each transaction is validated and applied in order, so a transaction's MVCC check sees the
writes of the valid transactions before it in the same block, as on a Fabric committer. It keeps the
chain's height, each transaction's validation code and block (for CommitStatus) and every block's
valid events (for ChaincodeEvents). Must be created on the event loop that serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fabric_protos.peer import chaincode_event_pb2, transaction_pb2


@dataclass
class BlockTx:
    tx_id: str
    code: int
    event: chaincode_event_pb2.ChaincodeEvent | None


@dataclass
class Block:
    number: int
    transactions: list[BlockTx] = field(default_factory=list)


#: Validates and applies one ordered transaction: (tx id, block number, tx number) -> (code, event).
Validator = Callable[[str, int, int], tuple[int, chaincode_event_pb2.ChaincodeEvent | None]]


class BlockCutter:
    def __init__(self, validate: Validator, interval: float = 0.02, max_count: int = 500) -> None:
        self._validate = validate
        self._interval = interval
        self._max_count = max_count
        self.blocks: list[Block] = [Block(0)]  # block 0 stands for the channel's genesis (config) block
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._committed: dict[str, tuple[int, int]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._new_block = asyncio.Event()

    @property
    def height(self) -> int:
        return len(self.blocks)

    def is_known(self, tx_id: str) -> bool:
        return tx_id in self._committed or tx_id in self._pending

    def enqueue(self, tx_id: str) -> None:
        self._pending.append(tx_id)
        if len(self._pending) >= self._max_count:
            self.cut()
        elif self._timer is None:
            # Like an orderer's batch timeout: transactions arriving close together share a block.
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.cut)

    def cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        block = Block(len(self.blocks))
        for number, tx_id in enumerate(self._pending):
            code, event = self._validate(tx_id, block.number, number)
            block.transactions.append(BlockTx(tx_id, code, event))
            self._committed[tx_id] = (code, block.number)
            self._waiters.setdefault(tx_id, asyncio.Event()).set()
        self._pending = []
        self.blocks.append(block)
        self._new_block.set()
        self._new_block = asyncio.Event()

    async def status(self, tx_id: str) -> tuple[int, int]:
        """(validation code, block number) once tx_id is committed; waits until then."""
        await self._waiters.setdefault(tx_id, asyncio.Event()).wait()
        return self._committed[tx_id]

    def block_of(self, tx_id: str) -> int | None:
        committed = self._committed.get(tx_id)
        return committed[1] if committed else None

    async def events_from(self, start: int, chaincode: str, after_tx: str = ""
                          ) -> AsyncIterator[tuple[int, list[chaincode_event_pb2.ChaincodeEvent]]]:
        """(block number, that block's valid events of chaincode) from block start on, forever.

        With after_tx, events up to and including that transaction's are skipped (checkpoint resume).
        Blocks without matching events are skipped, as Fabric's gateway skips them.
        """
        passed = not after_tx
        number = start
        while True:
            while number >= len(self.blocks):
                await self._new_block.wait()
            events = []
            for tx in self.blocks[number].transactions:
                if not passed:
                    passed = tx.tx_id == after_tx
                    continue
                if tx.event is not None and tx.code == transaction_pb2.VALID and tx.event.chaincode_id == chaincode:
                    events.append(tx.event)
            if events:
                yield number, events
            number += 1
