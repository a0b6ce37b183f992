"""Consent in the hospital's implicit private data collection (contract "consent")."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from chaincode.consent import EVENT_CONSENT_RECORDED

PSEUDONYM = "pt-7f3a9c"
SCOPE = "train:cardiac-v1"
SALT = "5e" * 16
COLLECTION = "_implicit_org_Hospital1MSP"
KEY = f"\x00consent\x00{PSEUDONYM}\x00{SCOPE}\x00"


def consent(status: str = "given", pseudonym: Any = PSEUDONYM, scope: Any = SCOPE, salt: Any = SALT,
            **extra: Any) -> dict[str, bytes]:
    record = {"pseudonym": pseudonym, "scope": scope, "status": status, "salt": salt, **extra}
    return {"consent": json.dumps(record).encode()}


def record(c: Any, status: str = "given", org: str = "hospital1", **kwargs: Any) -> tuple[Any, Any]:
    return c.call(c.user(org, cn=f"steward.{org}"), "consent:RecordConsent", transient=consent(status, **kwargs))


def assert_no_secret_on_channel(response: Any, stub: Any) -> None:
    """What reaches the channel: arguments, response, event, public writes. None may carry the record."""
    channel = [response.payload, *(e.payload for e in stub.events), *(v or b"" for v in stub.writes.values()),
               *(k.encode() for k in stub.writes), *(a.encode() for a in stub.args)]
    for secret in (PSEUDONYM, SCOPE, SALT, "given", "withdrawn"):
        assert all(secret.encode() not in blob for blob in channel), secret


def test_hospital_steward_records_consent_privately(consortium: Any) -> None:
    response, stub = record(consortium)
    assert response.status == 200, response.message
    stored = consortium.ledger.private[COLLECTION][KEY]
    assert json.loads(stored) == {
        "pseudonym": PSEUDONYM, "scope": SCOPE, "status": "given", "salt": SALT, "hospital": "hospital1",
        "recorded_by": "x509::CN=steward.hospital1,OU=client::CN=ca.test,O=test",
        "recorded_at": "2025-03-01T12:00:00Z", "tx_id": stub.txid,
    }
    assert json.loads(response.payload) == {
        "hospital": "hospital1", "collection": COLLECTION, "sha256": hashlib.sha256(stored).hexdigest(), "tx_id": stub.txid,
    }
    # Nothing public is written; only the private write (whose hashes Fabric puts on the channel).
    assert stub.writes == {} and list(stub.private_writes) == [(COLLECTION, KEY)] and stub.args == []
    [event] = stub.events
    assert event.event_name == EVENT_CONSENT_RECORDED
    assert json.loads(event.payload) == {"hospital": "hospital1", "collection": COLLECTION}
    assert_no_secret_on_channel(response, stub)


def test_withdraw_then_give_again(consortium: Any) -> None:
    assert record(consortium)[0].status == 200
    response, stub = record(consortium, "withdrawn")
    assert response.status == 200, response.message
    assert json.loads(consortium.ledger.private[COLLECTION][KEY])["status"] == "withdrawn"
    assert_no_secret_on_channel(response, stub)
    assert record(consortium, "given")[0].status == 200


def test_status_must_change(consortium: Any) -> None:
    steward = consortium.user("hospital1")
    consortium.rejected(steward, "consent:RecordConsent", transient=consent("withdrawn"),
                        fragment="no consent is recorded for this pseudonym and scope; there is nothing to withdraw")
    record(consortium)
    consortium.rejected(steward, "consent:RecordConsent", transient=consent("given"),
                        fragment="the consent for this pseudonym and scope is already 'given'")
    # A different scope or pseudonym is a separate record.
    assert record(consortium, scope="read:aggregates")[0].status == 200
    assert record(consortium, pseudonym="pt-other")[0].status == 200


def test_plants_may_not_record_consent(consortium: Any) -> None:
    consortium.rejected(consortium.user("plant1"), "consent:RecordConsent", transient=consent(),
                        fragment="access denied: RecordConsent is for hospitals; org 'plant1' is registered as 'plant'")
    # The certificate's org_kind must agree with the registry too.
    consortium.rejected(consortium.user("plant1", org_kind="hospital"), "consent:RecordConsent", transient=consent(),
                        fragment="certificate says org_kind 'hospital', but org 'plant1' is registered as 'plant'")
    consortium.rejected(consortium.user("hospital1", org_kind="plant"), "consent:RecordConsent", transient=consent(),
                        fragment="certificate says org_kind 'plant', but org 'hospital1' is registered as 'hospital'")


@pytest.mark.parametrize("role", ["admin", "operator", "client", None])
def test_only_stewards_record_consent(consortium: Any, role: str | None) -> None:
    consortium.rejected(consortium.user("hospital1", role=role), "consent:RecordConsent", transient=consent(),
                        fragment="access denied: RecordConsent needs role 'steward'")


def test_unregistered_msp_may_not_record(consortium: Any) -> None:
    consortium.rejected(consortium.user("hospital1", msp_id="Clinic9MSP"), "consent:RecordConsent", transient=consent(),
                        fragment="MSP 'Clinic9MSP' has no org in the consortium registry")


def test_the_record_never_travels_as_an_argument(consortium: Any) -> None:
    consortium.rejected(consortium.user("hospital1"), "consent:RecordConsent", PSEUDONYM, SCOPE, "given",
                        fragment="incorrect number of params. Expected 0, received 3")


@pytest.mark.parametrize(
    ("transient", "fragment"),
    [
        ({}, "takes the record in the transient map under 'consent' and nothing else (found keys: none)"),
        ({"record": b"{}"}, "(found keys: 'record')"),
        ({**consent(), "extra": b"x"}, "(found keys: 'consent', 'extra')"),
        ({"consent": b"\xff\xfe"}, "the consent record is not UTF-8 text"),
        ({"consent": b"not json"}, "the consent record is not JSON"),
        ({"consent": b"[]"}, "the consent record must be a JSON object"),
        ({"consent": b"x" * 5000}, "the consent record is 5000 bytes; the limit is 4096"),
        (consent(note="hi"), "must have exactly the fields pseudonym, salt, scope, status; found 5 field(s)"),
        ({"consent": json.dumps({"pseudonym": PSEUDONYM, "scope": SCOPE, "status": "given"}).encode()},
         "found 3 field(s)"),
        ({"consent": json.dumps({"pseudonym": PSEUDONYM, "scope": SCOPE, "status": "given",
                                 "salt": {"nested": True}}).encode()}, "nested more than 1 levels deep"),
        (consent("maybe"), "the consent status must be one of: given, withdrawn"),
        (consent(salt="00"), "the consent salt must be 32..128 lower-case hexadecimal digits"),
        (consent(salt="AB" * 16), "the consent salt must be"),
        (consent(salt=123), "the consent salt must be"),
        (consent(pseudonym="pt 7f3a9c"), "pseudonym is not valid: expected 1..64 letters"),
        (consent(pseudonym=""), "pseudonym is not valid"),
        (consent(pseudonym=42), "pseudonym is not valid"),
        (consent(scope="cardiac"), "scope is not valid: expected verb:object"),
    ],
)
def test_transient_record_rules(consortium: Any, transient: dict[str, bytes], fragment: str) -> None:
    message = consortium.rejected(consortium.user("hospital1"), "consent:RecordConsent", transient=transient,
                                  fragment=fragment)
    # Peers log endorsement errors: a message never repeats the patient's pseudonym.
    assert "7f3a9c" not in message


def test_read_own_record_and_its_hash(consortium: Any) -> None:
    record(consortium)
    stored = consortium.ledger.private[COLLECTION][KEY]
    response, stub = consortium.call(consortium.user("hospital1", role="client"), "consent:ReadConsent", PSEUDONYM, SCOPE)
    assert response.status == 200, response.message
    answer = json.loads(response.payload)
    assert answer == {"record": stored.decode(), "sha256": hashlib.sha256(stored).hexdigest()}
    assert not stub.has_writes()


def test_other_orgs_never_read_the_record(consortium: Any) -> None:
    record(consortium)
    # hospital2's members read hospital2's collection only: hospital1's record is not there.
    consortium.rejected(consortium.user("hospital2", role="client"), "consent:ReadConsent", PSEUDONYM, SCOPE,
                        fragment="org 'hospital2' has no consent recorded for this pseudonym and scope")
    consortium.rejected(consortium.user("plant1", role="client"), "consent:ReadConsent", PSEUDONYM, SCOPE,
                        fragment="access denied: ReadConsent is for hospitals")
    consortium.rejected(consortium.user("hospital1", role=None), "consent:ReadConsent", PSEUDONYM, SCOPE,
                        fragment="access denied: ReadConsent needs a role")
    consortium.rejected(consortium.user("hospital1", role="client"), "consent:ReadConsent", "pt 1", SCOPE,
                        fragment="pseudonym is not valid")


def test_another_org_verifies_a_record_it_is_shown(consortium: Any) -> None:
    record(consortium)
    # hospital1 shows the exact stored text (from ReadConsent); the verifier hashes it itself.
    shown = consortium.ok(consortium.user("hospital1", role="client"), "consent:ReadConsent", PSEUDONYM, SCOPE)["record"]
    stored = shown.encode("utf-8")
    verifier = consortium.user("plant1", role="operator")
    digest = hashlib.sha256(stored).hexdigest()
    response, stub = consortium.call(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE, digest)
    assert response.status == 200 and not stub.has_writes()
    assert json.loads(response.payload) == {"hospital": "hospital1", "recorded": True, "match": True}
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE, digest.upper())["match"] is True
    # A forged or altered record does not match; an unknown pseudonym has nothing recorded.
    altered = stored.replace(b'"given"', b'"withdrawn"')
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE,
                         hashlib.sha256(altered).hexdigest()) == {"hospital": "hospital1", "recorded": True, "match": False}
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital1", "pt-unknown", SCOPE, digest) == {
        "hospital": "hospital1", "recorded": False, "match": False}
    # The record is another hospital's: verifying against hospital2 finds nothing.
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital2", PSEUDONYM, SCOPE, digest)["recorded"] is False


def test_withdrawal_changes_the_on_chain_hash(consortium: Any) -> None:
    record(consortium)
    old = hashlib.sha256(consortium.ledger.private[COLLECTION][KEY]).hexdigest()
    record(consortium, "withdrawn")
    new = hashlib.sha256(consortium.ledger.private[COLLECTION][KEY]).hexdigest()
    verifier = consortium.user("hospital2", role="client")
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE, old)["match"] is False
    assert consortium.ok(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE, new)["match"] is True


def test_verify_errors(consortium: Any) -> None:
    verifier = consortium.user("plant1", role="client")
    digest = "ab" * 32
    consortium.rejected(verifier, "consent:VerifyConsent", "plant2", PSEUDONYM, SCOPE, digest,
                        fragment="org 'plant2' is registered as 'plant'; only hospitals record consent")
    consortium.rejected(verifier, "consent:VerifyConsent", "hospital9", PSEUDONYM, SCOPE, digest,
                        fragment="org 'hospital9' is not registered in the consortium registry")
    consortium.rejected(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE, "xyz",
                        fragment="record SHA-256 'xyz' is not a SHA-256 digest")
    consortium.rejected(verifier, "consent:VerifyConsent", "hospital1", PSEUDONYM, "cardiac", digest,
                        fragment="scope is not valid")
    consortium.rejected(consortium.user("plant1", msp_id="Lab9MSP"), "consent:VerifyConsent", "hospital1", PSEUDONYM,
                        SCOPE, digest, fragment="has no org in the consortium registry")
    consortium.rejected(consortium.user("plant1", role=None), "consent:VerifyConsent", "hospital1", PSEUDONYM, SCOPE,
                        digest, fragment="access denied: VerifyConsent needs a role")


def test_read_functions_are_tagged_evaluate(consortium: Any) -> None:
    metadata = json.loads(consortium.chaincode._system_contract.get_metadata())
    tags = {tx["name"]: tx["tag"] for tx in metadata["contracts"]["consent"]["transactions"]}
    assert "EVALUATE" in tags["ReadConsent"] and "EVALUATE" in tags["VerifyConsent"]
    assert "SUBMIT" in tags["RecordConsent"]
