"""Fixtures for the chaincode unit tests: an in-memory stub with Fabric's semantics and test identities.

The fake implements the part of the shim's ChaincodeStub interface the contracts use. Like a Fabric
peer's transaction simulator it reads committed state only (no read-your-own-writes) and keeps writes
and the event in the proposal's write set, applied to the ledger only when the caller commits.
"""

from __future__ import annotations

import datetime as dt
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
    def __init__(self, items: list[KV]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncIterator[KV]:
        return self

    async def __anext__(self) -> KV:
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

    def set_event(self, name: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.events.append(chaincode_event_pb2.ChaincodeEvent(event_name=name, payload=data, tx_id=self.txid))

    def get_events(self) -> list[chaincode_event_pb2.ChaincodeEvent]:
        return list(self.events)

    def commit(self) -> None:
        for key, value in self.writes.items():
            if value is None:
                self.ledger.pop(key, None)
            else:
                self.ledger[key] = value


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

    async def run(self, creator: dict[str, Any] | None, function: str, *args: str,
                  chaincode: Any = None) -> tuple[proposal_response_pb2.Response, FakeStub]:
        """Endorse (invoke) and, when the response is a success, commit the write set."""
        self.counter += 1
        stub = FakeStub(self.state, function, list(args), creator, txid=f"tx-{self.counter:04d}")
        response = await (chaincode or build_chaincode()).invoke(stub)
        if response.status < 400:
            stub.commit()
        return response, stub

    def snapshot(self) -> dict[str, bytes]:
        return dict(self.state)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()
