"""Rules of the consortium registry contract, run through the real ContractChaincode dispatcher."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chaincode.registry import EVENT_ORG_REGISTERED


def run(ledger: Any, creator: Any, function: str, *args: str) -> Any:
    return asyncio.run(ledger.run(creator, function, *args))


def assert_rejected(ledger: Any, creator: Any, function: str, args: tuple[str, ...], fragment: str) -> None:
    """The call fails with a message containing fragment and leaves ledger, write set and events untouched."""
    before = ledger.snapshot()
    response, stub = run(ledger, creator, function, *args)
    assert response.status == 500, response
    assert fragment in response.message, response.message
    assert stub.writes == {} and stub.events == []
    assert ledger.snapshot() == before


def test_admin_registers_own_org(ledger: Any, creator: Any) -> None:
    admin = creator("Hospital1MSP", role="admin", cn="admin1")
    response, stub = run(ledger, admin, "RegisterOrg", "hospital1", "hospital")

    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record == {
        "name": "hospital1",
        "kind": "hospital",
        "msp_id": "Hospital1MSP",
        "registered_by": "x509::CN=admin1,OU=client::CN=ca.test,O=test",
        "tx_id": stub.txid,
        "registered_at": "2025-03-01T12:00:00Z",
    }
    # Values are canonical JSON: sorted keys, no whitespace.
    stored = ledger.state["\x00org\x00hospital1\x00"]
    assert stored == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(ledger.state["\x00org_by_msp\x00Hospital1MSP\x00"]) == {"msp_id": "Hospital1MSP", "name": "hospital1"}

    [event] = stub.events
    assert event.event_name == EVENT_ORG_REGISTERED
    assert json.loads(event.payload) == {"kind": "hospital", "msp_id": "Hospital1MSP", "name": "hospital1"}


def test_contract_prefix_addresses_the_same_function(ledger: Any, creator: Any) -> None:
    response, _ = run(ledger, creator("Plant1MSP"), "registry:RegisterOrg", "plant1", "plant")
    assert response.status == 200, response.message


@pytest.mark.parametrize("role", ["steward", "operator", "client", None])
def test_non_admin_is_denied(ledger: Any, creator: Any, role: str | None) -> None:
    assert_rejected(ledger, creator("Hospital1MSP", role=role), "RegisterOrg", ("hospital1", "hospital"),
                    "access denied: RegisterOrg needs role 'admin'")


def test_caller_without_identity_is_denied(ledger: Any) -> None:
    assert_rejected(ledger, None, "RegisterOrg", ("hospital1", "hospital"), "access denied")


def test_garbage_certificate_is_denied(ledger: Any) -> None:
    assert_rejected(ledger, {"mspid": "Hospital1MSP", "idBytes": b"-----BEGIN CERTIFICATE-----\nxx\n"},
                    "RegisterOrg", ("hospital1", "hospital"), "access denied: the caller's certificate cannot be parsed")


def test_org_kind_attribute_must_match(ledger: Any, creator: Any) -> None:
    admin = creator("Plant1MSP", role="admin", org_kind="plant")
    assert_rejected(ledger, admin, "RegisterOrg", ("plant1", "hospital"), "org_kind 'plant', cannot register kind 'hospital'")
    response, _ = run(ledger, admin, "RegisterOrg", "plant1", "plant")
    assert response.status == 200, response.message


def test_duplicate_name_is_refused(ledger: Any, creator: Any) -> None:
    assert run(ledger, creator("Hospital1MSP"), "RegisterOrg", "hospital1", "hospital")[0].status == 200
    assert_rejected(ledger, creator("Hospital2MSP"), "RegisterOrg", ("hospital1", "hospital"),
                    "org 'hospital1' is already registered")


def test_an_msp_owns_one_org(ledger: Any, creator: Any) -> None:
    # Without this an admin could squat other orgs' names under its own MSP.
    assert run(ledger, creator("Hospital1MSP"), "RegisterOrg", "hospital1", "hospital")[0].status == 200
    assert_rejected(ledger, creator("Hospital1MSP"), "RegisterOrg", ("hospital2", "hospital"),
                    "MSP 'Hospital1MSP' has already registered org 'hospital1'")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "org name must not be empty"),
        ("a" * 65, "org name is 65 characters long; the limit is 64"),
        ("Hospital1", "is not valid"),
        ("1hospital", "is not valid"),
        ("hospital-", "is not valid"),
        ("hos pital", "is not valid"),
        ("hos\x00pital", "is not valid"),
        ("hôpital", "is not valid"),
        ("../etc", "is not valid"),
    ],
)
def test_register_validates_name(ledger: Any, creator: Any, name: str, fragment: str) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "RegisterOrg", (name, "hospital"), fragment)


@pytest.mark.parametrize("kind", ["", "HOSPITAL", "lab", "x" * 500])
def test_register_validates_kind(ledger: Any, creator: Any, kind: str) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "RegisterOrg", ("hospital1", kind), "is not one of: hospital, plant")


def test_name_at_length_limit_is_accepted(ledger: Any, creator: Any) -> None:
    response, _ = run(ledger, creator("Hospital1MSP"), "RegisterOrg", "h" * 64, "hospital")
    assert response.status == 200, response.message


@pytest.mark.parametrize("args", [("hospital1",), ("hospital1", "hospital", "extra")])
def test_register_checks_argument_count(ledger: Any, creator: Any, args: tuple[str, ...]) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "RegisterOrg", args, "incorrect number of params. Expected 2")


def test_read_org(ledger: Any, creator: Any) -> None:
    run(ledger, creator("Plant1MSP"), "RegisterOrg", "plant1", "plant")
    reader = creator("Hospital1MSP", role="client")
    response, stub = run(ledger, reader, "ReadOrg", "plant1")
    assert response.status == 200, response.message
    assert json.loads(response.payload)["msp_id"] == "Plant1MSP"
    assert stub.writes == {}


def test_read_missing_and_invalid_org(ledger: Any, creator: Any) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "ReadOrg", ("plant9",), "org 'plant9' is not registered")
    assert_rejected(ledger, creator("Hospital1MSP"), "ReadOrg", ("Plant 9",), "is not valid")


def test_list_orgs_in_name_order_and_only_orgs(ledger: Any, creator: Any) -> None:
    response, _ = run(ledger, creator("Hospital1MSP"), "ListOrgs")
    assert response.status == 200 and json.loads(response.payload) == []
    for msp, name, kind in [("Plant2MSP", "plant2", "plant"), ("Hospital1MSP", "hospital1", "hospital"),
                            ("Plant1MSP", "plant1", "plant")]:
        assert run(ledger, creator(msp), "RegisterOrg", name, kind)[0].status == 200
    response, stub = run(ledger, creator("Hospital1MSP", role="client"), "ListOrgs")
    orgs = json.loads(response.payload)
    # The org_by_msp index shares the namespace but is not listed as an org.
    assert [o["name"] for o in orgs] == ["hospital1", "plant1", "plant2"]
    assert stub.writes == {}


def test_list_orgs_takes_no_arguments(ledger: Any, creator: Any) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "ListOrgs", ("x",), "incorrect number of params")


def test_who_am_i(ledger: Any, creator: Any) -> None:
    response, stub = run(ledger, creator("Plant2MSP", role="steward", org_kind="plant", cn="anna"), "WhoAmI")
    assert response.status == 200, response.message
    assert json.loads(response.payload) == {
        "msp_id": "Plant2MSP",
        "id": "x509::CN=anna,OU=client::CN=ca.test,O=test",
        "common_name": "anna",
        "role": "steward",
        "org_kind": "plant",
    }
    assert stub.writes == {} and stub.events == []


def test_unknown_function(ledger: Any, creator: Any) -> None:
    assert_rejected(ledger, creator("Hospital1MSP"), "DropOrg", ("hospital1",), "Function DropOrg not found")


def test_read_functions_are_tagged_evaluate() -> None:
    from chaincode.app import build_chaincode

    metadata = json.loads(build_chaincode()._system_contract.get_metadata())
    tags = {tx["name"]: tx["tag"] for tx in metadata["contracts"]["registry"]["transactions"]}
    assert "EVALUATE" in tags["ReadOrg"] and "EVALUATE" in tags["ListOrgs"] and "EVALUATE" in tags["WhoAmI"]
    assert "SUBMIT" in tags["RegisterOrg"]
