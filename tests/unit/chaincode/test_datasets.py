"""Data set registration and reads (contract "data"), through the real ContractChaincode dispatcher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaincode.arguments import MAX_ARGUMENT_BYTES, MAX_SCHEMA_BYTES
from chaincode.data_access import EVENT_DATASET_REGISTERED
from chaincode.endorsement import peers_of, policy_orgs

SHA = "ab" * 32
DATASET_KEY = "\x00dataset\x00ai4i-2020\x00"


def register(dataset_id: str = "ai4i-2020", kind: str = "tabular", schema: str = '{"rows":10000}',
             sha: str = SHA, sensitivity: str = "internal") -> tuple[str, ...]:
    return ("data:RegisterDataset", dataset_id, kind, schema, sha, sensitivity)


def test_steward_registers_a_data_set_of_its_own_org(consortium: Any) -> None:
    steward = consortium.user("plant1", cn="sam")
    response, stub = consortium.call(steward, *register(schema='{ "rows": 10000, "cols": ["a"] }',
                                                         sha=SHA.upper()))
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record == {
        "id": "ai4i-2020",
        "kind": "tabular",
        "schema": {"cols": ["a"], "rows": 10000},
        "manifest_sha256": SHA,  # lower-cased
        "sensitivity": "internal",
        "owner": "plant1",
        "owner_msp": "Plant1MSP",
        "registered_by": "x509::CN=sam,OU=client::CN=ca.test,O=test",
        "registered_at": "2025-03-01T12:00:00Z",
        "tx_id": stub.txid,
    }
    ledger = consortium.ledger
    assert ledger.state[DATASET_KEY] == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    # Key-level endorsement: changes to the record need a peer of the owner org.
    assert ledger.metadata[DATASET_KEY] == peers_of(["Plant1MSP"])
    assert policy_orgs(ledger.metadata[DATASET_KEY]) == {"Plant1MSP": "PEER"}
    [event] = stub.events
    assert event.event_name == EVENT_DATASET_REGISTERED
    assert json.loads(event.payload) == {"id": "ai4i-2020", "owner": "plant1", "kind": "tabular",
                                         "manifest_sha256": SHA, "sensitivity": "internal"}


def test_owner_comes_from_the_certificate(consortium: Any) -> None:
    # There is no owner argument: a hospital steward registering "plant data" still registers it as hospital1's.
    record = consortium.ok(consortium.user("hospital1"), *register(dataset_id="plant1-sensors"))
    assert (record["owner"], record["owner_msp"]) == ("hospital1", "Hospital1MSP")


@pytest.mark.parametrize("role", ["admin", "operator", "client", None])
def test_only_stewards_register(consortium: Any, role: str | None) -> None:
    consortium.rejected(consortium.user("plant1", role=role), *register(),
                        fragment="access denied: RegisterDataset needs role 'steward' in the caller's certificate")


def test_caller_of_an_unregistered_msp_is_denied(consortium: Any) -> None:
    stranger = consortium.user("plant1", msp_id="Lab9MSP")
    consortium.rejected(stranger, *register(),
                        fragment="MSP 'Lab9MSP' has no org in the consortium registry; its admin must run RegisterOrg first")


def test_certificate_org_kind_must_agree_with_the_registry(consortium: Any) -> None:
    consortium.rejected(consortium.user("plant1", org_kind="hospital"), *register(),
                        fragment="certificate says org_kind 'hospital', but org 'plant1' is registered as 'plant'")
    consortium.ok(consortium.user("plant1", org_kind="plant"), *register())


@pytest.mark.parametrize("identity", [None, {"mspid": "Plant1MSP", "idBytes": b"not a certificate"}])
def test_unreadable_identity_is_denied(consortium: Any, identity: Any) -> None:
    consortium.rejected(identity, *register(), fragment="access denied")


def test_duplicate_id_is_refused_for_every_org(consortium: Any) -> None:
    consortium.ok(consortium.user("plant1"), *register())
    for org in ("plant1", "hospital2"):
        consortium.rejected(consortium.user(org), *register(sha="cd" * 32),
                            fragment="data set 'ai4i-2020' is already registered by org 'plant1'")


@pytest.mark.parametrize(
    ("dataset_id", "fragment"),
    [
        ("", "data set ID must not be empty"),
        ("d" * 65, "data set ID is 65 characters long; the limit is 64"),
        (".hidden", "is not valid"),
        ("-rf", "is not valid"),
        ("a/b", "is not valid"),
        ("a b", "is not valid"),
        ("a\x00b", "is not valid"),
        ("ümlaut", "is not valid"),
        ("a:b", "is not valid"),
    ],
)
def test_data_set_id_rules(consortium: Any, dataset_id: str, fragment: str) -> None:
    consortium.rejected(consortium.user("plant1"), *register(dataset_id=dataset_id), fragment=fragment)


def test_id_at_the_limit_and_with_every_allowed_character(consortium: Any) -> None:
    for dataset_id in ("D" * 64, "A.b_c-9", "0"):
        consortium.ok(consortium.user("plant1"), *register(dataset_id=dataset_id))


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("", "schema summary is not JSON"),
        ("{", "schema summary is not JSON"),
        ("[1, 2]", "schema summary must be a JSON object, got an array"),
        ('"text"', "must be a JSON object, got a string"),
        ("null", "must be a JSON object, got null"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ('{"a": 1e999}', "number '1e999' is out of range"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"a":' * 9 + "1" + "}" * 9, "nested more than 8 levels deep"),
        ("[" * 2100 + "]" * 2100, "schema summary is 4200 bytes; the limit is 4096"),  # too big, and far too deep for the parser
        ("{" + '"a":' * 2000 + "}", "schema summary is"),
        ('{"k": "' + "x" * MAX_SCHEMA_BYTES + '"}', f"the limit is {MAX_SCHEMA_BYTES}"),
        ('{"k": "' + "é" * 2100 + '"}', "bytes; the limit is 4096"),  # characters < 4096, UTF-8 bytes > 4096
        ('{"n": [' + ",".join(["1e5"] * 900) + "]}", "more than 4096 bytes once written as canonical JSON"),
    ],
)
def test_schema_summary_rules(consortium: Any, schema: str, fragment: str) -> None:
    consortium.rejected(consortium.user("plant1"), *register(schema=schema), fragment=fragment)


def test_schema_summary_nesting_at_the_limit_is_accepted(consortium: Any) -> None:
    schema = '{"a":' * 7 + "[1]" + "}" * 7  # 7 objects + 1 array = 8 levels
    record = consortium.ok(consortium.user("plant1"), *register(schema=schema))
    assert json.dumps(record["schema"], separators=(",", ":")) == schema


def test_very_deep_schema_fails_cleanly(consortium: Any) -> None:
    # Deep enough that the JSON parser itself gives up (RecursionError), yet within the size limit.
    message = consortium.rejected(consortium.user("plant1"), *register(schema="[" * 4000),
                                  fragment="schema summary is nested more than 8 levels deep")
    assert "Recursion" not in message


@pytest.mark.parametrize("sha", ["", "ab" * 31, "ab" * 33, "zz" * 32, " " + "ab" * 32, "0x" + "ab" * 31])
def test_manifest_sha256_rules(consortium: Any, sha: str) -> None:
    consortium.rejected(consortium.user("plant1"), *register(sha=sha),
                        fragment="manifest SHA-256")


@pytest.mark.parametrize("kind", ["", "k" * 65, "tab ular", "../x"])
def test_kind_rules(consortium: Any, kind: str) -> None:
    consortium.rejected(consortium.user("plant1"), *register(kind=kind), fragment="data set kind")


@pytest.mark.parametrize("sensitivity", ["", "secret", "PUBLIC", "x" * 1000])
def test_sensitivity_rules(consortium: Any, sensitivity: str) -> None:
    message = consortium.rejected(consortium.user("plant1"), *register(sensitivity=sensitivity),
                                  fragment="is not one of: confidential, internal, public, restricted")
    assert len(message) < 300  # a long value is cut short


@pytest.mark.parametrize("args", [("ai4i-2020", "tabular", "{}", SHA), ("ai4i-2020", "tabular", "{}", SHA, "public", "x")])
def test_argument_count(consortium: Any, args: tuple[str, ...]) -> None:
    consortium.rejected(consortium.user("plant1"), "data:RegisterDataset", *args,
                        fragment="incorrect number of params. Expected 5")


def test_total_argument_size_is_bounded(consortium: Any) -> None:
    consortium.rejected(consortium.user("plant1"), *register(kind="k" * MAX_ARGUMENT_BYTES),
                        fragment=f"the arguments are 8287 bytes together; the limit is {MAX_ARGUMENT_BYTES}")


def test_read_and_list(consortium: Any) -> None:
    for dataset_id, org in (("b-set", "plant2"), ("a-set", "plant1"), ("c-set", "hospital1")):
        consortium.ok(consortium.user(org), *register(dataset_id=dataset_id))
    reader = consortium.user("hospital2", role="client")
    response, stub = consortium.call(reader, "data:ReadDataset", "b-set")
    assert response.status == 200 and json.loads(response.payload)["owner"] == "plant2"
    assert not stub.has_writes()
    listed = consortium.ok(reader, "data:ListDatasets")
    assert [d["id"] for d in listed] == ["a-set", "b-set", "c-set"]


def test_read_errors(consortium: Any) -> None:
    consortium.rejected(consortium.user("plant1", role="client"), "data:ReadDataset", "nope",
                        fragment="data set 'nope' is not registered")
    consortium.rejected(consortium.user("plant1", role=None), "data:ReadDataset", "nope",
                        fragment="ReadDataset needs a role (admin, client, operator, steward)")
    consortium.rejected(consortium.user("plant1", msp_id="Lab9MSP"), "data:ListDatasets",
                        fragment="has no org in the consortium registry")


def test_read_functions_are_tagged_evaluate(consortium: Any) -> None:
    metadata = json.loads(consortium.chaincode._system_contract.get_metadata())
    tags = {tx["name"]: tx["tag"] for tx in metadata["contracts"]["data"]["transactions"]}
    for name in ("ReadDataset", "ListDatasets", "ListGrants", "CheckReadOnly", "Audit"):
        assert "EVALUATE" in tags[name], name
    for name in ("RegisterDataset", "Grant", "Revoke", "Check"):
        assert "SUBMIT" in tags[name], name
    assert "BeforeTransaction" not in tags
