"""UNIT-TEST FAKE: one transaction simulation, an in-memory ChaincodeStub for the contracts' unit tests.

It implements the part of the shim's ChaincodeStub interface the TwinLedger contracts use, so that a
contract's logic can be tested in-process in milliseconds. Like a peer's transaction simulator it reads
committed state only (no read-your-own-writes) and keeps writes, private writes, validation parameters
and the event in the proposal's write sets, which the fake ledger (``fake_ledger.py``) applies when the
call succeeds. What only peers decide (read-set validation, endorsement policies, gossip of private
data) is not modelled here: tests/integration/test_fabric_semantics.py shows it on the real network.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import chaincode_event_pb2
from google.protobuf.timestamp_pb2 import Timestamp

#: The unit tests' fixed "now"; a simulation driven by a proposal carries the proposal's timestamp.
FIXED_TIME = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
#: Prefix of Fabric's implicit per-org collections; only the org's own members may read or write them.
IMPLICIT_COLLECTION_PREFIX = "_implicit_org_"


@dataclass
class KV:
    key: str
    value: bytes


class _KVIterator:
    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)


class PrivateDataAccessDenied(Exception):
    """The creator's org is not a member of the (implicit) collection it tried to use."""


@dataclass
class FakeStub:
    """One transaction proposal against an in-memory ledger."""

    ledger: dict[str, bytes]
    function: str
    args: list[str]
    creator: dict[str, Any] | None
    txid: str = "tx-0001"
    channel_id: str = "twinledger"
    timestamp: dt.datetime | Timestamp = FIXED_TIME
    writes: dict[str, bytes | None] = field(default_factory=dict)
    events: list[chaincode_event_pb2.ChaincodeEvent] = field(default_factory=list)
    # Committed data beside the world state, shared with the Ledger (see the module docstring).
    private: dict[str, dict[str, bytes]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, list[kv_query_result_pb2.KeyModification]] = field(default_factory=dict)
    transient: dict[str, bytes] = field(default_factory=dict)
    chaincode_name: str = "twinledger"
    # This proposal's private and metadata write sets.
    private_writes: dict[tuple[str, str], bytes] = field(default_factory=dict)
    metadata_writes: dict[str, bytes] = field(default_factory=dict)

    # Key helpers are the shim's own, so keys have exactly Fabric's composite-key format.
    create_composite_key = ChaincodeStub.create_composite_key
    split_composite_key = ChaincodeStub.split_composite_key

    def get_function_and_parameters(self) -> tuple[str, list[str]]:
        return self.function, list(self.args)

    def get_txid(self) -> str:
        return self.txid

    def get_channel_id(self) -> str:
        return self.channel_id

    def get_creator(self) -> dict[str, Any]:
        return self.creator or {}

    def get_tx_timestamp(self) -> Timestamp:
        if isinstance(self.timestamp, Timestamp):
            return Timestamp(seconds=self.timestamp.seconds, nanos=self.timestamp.nanos)
        ts = Timestamp()
        ts.FromDatetime(self.timestamp)
        return ts

    async def get_state(self, key: str) -> bytes:
        return self.ledger.get(key, b"")

    async def put_state(self, key: str, value: bytes | str) -> None:
        self.writes[key] = value.encode() if isinstance(value, str) else bytes(value)

    async def delete_state(self, key: str) -> None:
        self.writes[key] = None

    async def get_state_by_partial_composite_key(self, object_type: str, attributes: list[str]) -> _KVIterator:
        prefix = self.create_composite_key(object_type, attributes)
        return _KVIterator([KV(k, v) for k, v in sorted(self.ledger.items()) if k.startswith(prefix)])

    async def get_history_for_key(self, key: str) -> _KVIterator:
        return _KVIterator(list(reversed(self.history.get(key, []))))

    def get_transient(self) -> dict[str, bytes]:
        return dict(self.transient)

    def _member_only(self, collection: str, access: str) -> None:
        # Implicit collections are memberOnlyRead/memberOnlyWrite: a peer refuses any other org's client.
        if not collection:
            raise ValueError("collection must not be an empty string")
        implicit = collection.startswith(IMPLICIT_COLLECTION_PREFIX)
        owner = collection[len(IMPLICIT_COLLECTION_PREFIX):] if implicit else None
        if owner is not None and (self.creator or {}).get("mspid") != owner:
            raise PrivateDataAccessDenied(
                f"tx creator does not have {access} access permission on privatedata in chaincodeName:"
                f"{self.chaincode_name} collectionName: {collection}"
            )

    async def get_private_data(self, collection: str, key: str) -> bytes:
        self._member_only(collection, "read")
        return self.private.get(collection, {}).get(key, b"")

    async def put_private_data(self, collection: str, key: str, value: bytes | str) -> None:
        self._member_only(collection, "write")
        self.private_writes[(collection, key)] = value.encode() if isinstance(value, str) else bytes(value)

    async def get_private_data_hash(self, collection: str, key: str) -> bytes:
        # Every peer of the channel holds the hashes, so any org may read them.
        if not collection:
            raise ValueError("collection must not be an empty string")
        value = self.private.get(collection, {}).get(key)
        return hashlib.sha256(value).digest() if value is not None else b""

    async def set_state_validation_parameter(self, key: str, policy: bytes) -> None:
        self.metadata_writes[key] = bytes(policy)

    async def get_state_validation_parameter(self, key: str) -> bytes:
        return self.metadata.get(key, b"")

    def has_writes(self) -> bool:
        return bool(self.writes or self.private_writes or self.metadata_writes or self.events)

    def set_event(self, name: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.events.append(chaincode_event_pb2.ChaincodeEvent(event_name=name, payload=data, tx_id=self.txid))

    def get_events(self) -> list[chaincode_event_pb2.ChaincodeEvent]:
        return list(self.events)
