"""Fixtures for the chaincode unit tests: an in-memory stub with Fabric's semantics and test identities.

The fake implements the part of the shim's ChaincodeStub interface the contracts use. Like a Fabric
peer's transaction simulator it reads committed state only (no read-your-own-writes) and keeps writes
and the event in the proposal's write set, applied to the ledger only when the caller commits.
Beyond the world state it keeps what a peer keeps for the data-governance contracts: private data
per collection (and its SHA-256, which every peer has), key-level validation parameters, the key
history (returned newest first, as Fabric 2.x does) and the proposal's transient map.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import chaincode_event_pb2, proposal_response_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from chaincode import compat
from chaincode.app import build_chaincode
from chaincode.identity import ATTRIBUTES_OID

FIXED_TIME = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


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


@dataclass
class FakeStub:
    """One transaction proposal against an in-memory ledger."""

    ledger: dict[str, bytes]
    function: str
    args: list[str]
    creator: dict[str, Any] | None
    txid: str = "tx-0001"
    channel_id: str = "twinledger"
    timestamp: dt.datetime = FIXED_TIME
    writes: dict[str, bytes | None] = field(default_factory=dict)
    events: list[chaincode_event_pb2.ChaincodeEvent] = field(default_factory=list)
    # Committed data beside the world state, shared with the Ledger (see the module docstring).
    private: dict[str, dict[str, bytes]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, list[kv_query_result_pb2.KeyModification]] = field(default_factory=dict)
    transient: dict[str, bytes] = field(default_factory=dict)
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

    async def get_private_data(self, collection: str, key: str) -> bytes:
        if not collection:
            raise ValueError("collection must not be an empty string")
        return self.private.get(collection, {}).get(key, b"")

    async def put_private_data(self, collection: str, key: str, value: bytes | str) -> None:
        if not collection:
            raise ValueError("collection must not be an empty string")
        self.private_writes[(collection, key)] = value.encode() if isinstance(value, str) else bytes(value)

    async def get_private_data_hash(self, collection: str, key: str) -> bytes:
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

    def commit(self) -> None:
        timestamp = self.get_tx_timestamp()
        for key, value in self.writes.items():
            if value is None:
                self.ledger.pop(key, None)
            else:
                self.ledger[key] = value
            self.history.setdefault(key, []).append(kv_query_result_pb2.KeyModification(
                tx_id=self.txid, value=value or b"", timestamp=timestamp, is_delete=value is None))
        for (collection, key), value in self.private_writes.items():
            self.private.setdefault(collection, {})[key] = value
        self.metadata.update(self.metadata_writes)


class CertFactory:
    """A throw-away CA issuing user certificates with Fabric CA's attribute extension."""

    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ca.test"),
        ])

    def issue(self, common_name: str, attrs: dict[str, str] | None = None, raw_extension: bytes | None = None,
              ou: str = "client") -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(FIXED_TIME - dt.timedelta(days=1))
            .not_valid_after(FIXED_TIME + dt.timedelta(days=3650))
        )
        value = raw_extension
        if value is None and attrs is not None:
            value = json.dumps({"attrs": attrs}).encode()
        if value is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(ATTRIBUTES_OID, value), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def certs() -> CertFactory:
    return CertFactory()


@pytest.fixture(scope="session")
def creator(certs: CertFactory) -> Callable[..., dict[str, Any]]:
    """creator(msp_id, role=..., org_kind=..., cn=...) -> the shim's creator dict for such a user."""
    cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def make(msp_id: str, role: str | None = "admin", org_kind: str | None = None, cn: str = "user") -> dict[str, Any]:
        key = (msp_id, role, org_kind, cn)
        if key not in cache:
            attrs = {"hf.EnrollmentID": cn, "hf.Type": "client"}
            if role is not None:
                attrs["role"] = role
            if org_kind is not None:
                attrs["org_kind"] = org_kind
            cache[key] = {"mspid": msp_id, "idBytes": certs.issue(cn, attrs)}
        return cache[key]

    return make


@pytest.fixture(autouse=True)
def _compat_applied() -> Iterator[None]:
    # Every chaincode test runs on the patched shim, as the server does; tests that show a defect
    # use the `unpatched` fixture, which reverts for their duration only. The root log level compat
    # sets is put back afterwards so that tests of other packages see pytest's usual logging.
    root_level = logging.getLogger().level
    compat.apply()
    yield
    logging.getLogger().setLevel(root_level)


@pytest.fixture
def unpatched() -> Any:
    compat.revert()
    try:
        yield
    finally:
        compat.apply()


@dataclass
class Ledger:
    """A ledger plus a way to run one transaction through the real ContractChaincode dispatcher."""

    state: dict[str, bytes] = field(default_factory=dict)
    counter: int = 0
    private: dict[str, dict[str, bytes]] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, list[Any]] = field(default_factory=dict)

    async def run(self, creator: dict[str, Any] | None, function: str, *args: str,
                  chaincode: Any = None, transient: dict[str, bytes] | None = None,
                  at: dt.datetime | None = None) -> tuple[proposal_response_pb2.Response, FakeStub]:
        """Endorse (invoke) and, when the response is a success, commit the write set."""
        self.counter += 1
        stub = FakeStub(self.state, function, list(args), creator, txid=f"tx-{self.counter:04d}",
                        timestamp=at or FIXED_TIME, private=self.private, metadata=self.metadata,
                        history=self.history, transient=dict(transient or {}))
        response = await (chaincode or build_chaincode()).invoke(stub)
        if response.status < 400:
            stub.commit()
        return response, stub

    def snapshot(self) -> dict[str, bytes]:
        return dict(self.state)

    def world(self) -> tuple[Any, ...]:
        """Everything a transaction could change: state, private data, validation parameters, history."""
        return copy.deepcopy((self.state, self.private, self.metadata,
                              {k: [m.SerializeToString() for m in v] for k, v in self.history.items()}))


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


# --- the data-governance contracts: a registered consortium ------------------------------------------

#: The default spec's orgs: name -> (MSP ID, kind).
ORGS: dict[str, tuple[str, str]] = {
    "hospital1": ("Hospital1MSP", "hospital"),
    "hospital2": ("Hospital2MSP", "hospital"),
    "plant1": ("Plant1MSP", "plant"),
    "plant2": ("Plant2MSP", "plant"),
}
MANIFEST_SHA256 = hashlib.sha256(b"manifest of ai4i-2020").hexdigest()
SCHEMA = json.dumps({"columns": {"air_temperature_k": "float", "machine_failure": "int"}, "rows": 10000})


@dataclass
class Consortium:
    """A ledger on which hospital1, hospital2, plant1 and plant2 are registered, and ways to call it.

    One ContractChaincode serves every call (as one chaincode process serves a peer).
    """

    ledger: Ledger
    make_creator: Callable[..., dict[str, Any]]
    chaincode: Any

    def user(self, org: str, role: str | None = "steward", cn: str | None = None, org_kind: str | None = None,
             msp_id: str | None = None) -> dict[str, Any]:
        return self.make_creator(msp_id or ORGS[org][0], role=role, org_kind=org_kind, cn=cn or f"{role}.{org}")

    def call(self, who: dict[str, Any] | None, function: str, *args: str, transient: dict[str, bytes] | None = None,
             at: dt.datetime | None = None) -> tuple[proposal_response_pb2.Response, FakeStub]:
        import asyncio

        return asyncio.run(self.ledger.run(who, function, *args, chaincode=self.chaincode, transient=transient, at=at))

    def ok(self, who: dict[str, Any] | None, function: str, *args: str, **kwargs: Any) -> Any:
        response, _ = self.call(who, function, *args, **kwargs)
        assert response.status == 200, response.message
        return json.loads(response.payload) if response.payload else None

    def rejected(self, who: dict[str, Any] | None, function: str, *args: str, fragment: str, **kwargs: Any) -> str:
        """The call fails with one line containing fragment, and changes nothing anywhere."""
        before = self.ledger.world()
        response, stub = self.call(who, function, *args, **kwargs)
        assert response.status == 500, f"expected a rejection, got {response.status}: {response.payload!r}"
        assert fragment in response.message, response.message
        assert "\n" not in response.message and "Traceback" not in response.message
        assert not stub.has_writes(), (stub.writes, stub.private_writes, stub.metadata_writes, stub.events)
        assert self.ledger.world() == before
        return response.message


@pytest.fixture
def consortium(ledger: Ledger, creator: Callable[..., dict[str, Any]]) -> Consortium:
    members = Consortium(ledger, creator, build_chaincode())
    for name, (msp_id, kind) in ORGS.items():
        members.ok(creator(msp_id, role="admin", cn=f"admin.{name}"), "RegisterOrg", name, kind)
    return members
