"""UNIT-TEST FAKE: the committed ledger behind ``FakeStub``: world state, private data, validation parameters,
key history.

``run`` executes one transaction through the real ContractChaincode dispatcher against this ledger and,
when the chaincode answers with success, applies its write sets at once (a unit test's "commit"). What
a real channel checks at commit -- MVCC and phantom reads, key-level endorsement policies -- is shown on
real peers in tests/integration/test_fabric_semantics.py, not imitated here.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import proposal_response_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from chaincode.app import build_chaincode
from tests.unit.chaincode.fake_stub import FIXED_TIME, FakeStub


@dataclass
class Ledger:
    """A ledger plus a way to run one transaction through the real ContractChaincode dispatcher."""

    state: dict[str, bytes] = field(default_factory=dict)
    counter: int = 0
    private: dict[str, dict[str, bytes]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, list[Any]] = field(default_factory=dict)

    def new_stub(self, creator: dict[str, Any] | None, function: str, args: Iterable[str], *, txid: str,
                 timestamp: dt.datetime | Timestamp = FIXED_TIME, transient: dict[str, bytes] | None = None,
                 channel_id: str = "twinledger", chaincode_name: str = "twinledger") -> FakeStub:
        return FakeStub(self.state, function, list(args), creator, txid=txid, channel_id=channel_id,
                        timestamp=timestamp, private=self.private, metadata=self.metadata, history=self.history,
                        transient=dict(transient or {}), chaincode_name=chaincode_name)

    def apply(self, stub: FakeStub) -> None:
        """Write a successful transaction's write sets and key history."""
        timestamp = stub.get_tx_timestamp()
        for key, value in stub.writes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
            self.history.setdefault(key, []).append(kv_query_result_pb2.KeyModification(
                tx_id=stub.txid, value=value or b"", timestamp=timestamp, is_delete=value is None))
        for (collection, key), value in stub.private_writes.items():
            self.private.setdefault(collection, {})[key] = value
        for key, policy in stub.metadata_writes.items():
            self.metadata[key] = policy

    async def run(self, creator: dict[str, Any] | None, function: str, *args: str,
                  chaincode: Any = None, transient: dict[str, bytes] | None = None,
                  at: dt.datetime | None = None) -> tuple[proposal_response_pb2.Response, FakeStub]:
        """Endorse (invoke) and, when the response is a success, commit the write set."""
        self.counter += 1
        stub = self.new_stub(creator, function, args, txid=f"tx-{self.counter:04d}", timestamp=at or FIXED_TIME,
                             transient=transient)
        response = await (chaincode or build_chaincode()).invoke(stub)
        if response.status < 400:
            self.apply(stub)
        return response, stub

    def snapshot(self) -> dict[str, bytes]:
        return dict(self.state)

    def world(self) -> tuple[Any, ...]:
        """Everything a transaction could change: state, private data, validation parameters, history."""
        return copy.deepcopy((self.state, self.private, self.metadata,
                              {k: [m.SerializeToString() for m in v] for k, v in self.history.items()}))
