"""Fixtures for the chaincode unit tests: an in-memory ledger and stub (unit fakes), and test identities.

The fake stub and ledger (``fake_stub.py``, ``fake_ledger.py``) give the contracts what a peer's
simulator gives them: committed-state reads, write sets applied after a successful call, private data
per collection (and its SHA-256, which every peer has), key-level validation parameters, the key
history (newest first, as Fabric returns it) and the proposal's transient map. Here each transaction
commits as soon as it is endorsed successfully; what the channel decides at commit is tested on real
peers (tests/integration/test_fabric_semantics.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fabric_protos.peer import proposal_response_pb2

from chaincode import compat
from chaincode.app import build_chaincode
from chaincode.identity import ATTRIBUTES_OID
from tests.unit.chaincode.fake_ledger import Ledger
from tests.unit.chaincode.fake_stub import FIXED_TIME, FakeStub

__all__ = ["FIXED_TIME", "CertFactory", "Consortium", "FakeStub", "Ledger"]


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
