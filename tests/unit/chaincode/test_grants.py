"""Grants and revocations (contract "data"): who may grant what to whom, for how long."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from chaincode.data_access import EVENT_GRANT_ISSUED, EVENT_GRANT_REVOKED
from chaincode.endorsement import policy_orgs

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # conftest's FIXED_TIME
LATER = "2025-06-01T00:00:00Z"
GRANT_KEY = "\x00grant\x00ai4i-2020\x00hospital1\x00train:maintenance-v1\x00"


@pytest.fixture
def c(consortium: Any) -> Any:
    consortium.ok(consortium.user("plant1"), "data:RegisterDataset", "ai4i-2020", "tabular", "{}", "ab" * 32, "internal")
    return consortium


def grant(c: Any, who: Any = None, grantee: str = "hospital1", purpose: str = "train:maintenance-v1",
          expires: str = LATER, **kwargs: Any) -> Any:
    return c.call(who or c.user("plant1", cn="sam"), "data:Grant", "ai4i-2020", grantee, purpose, expires, **kwargs)


def test_owner_steward_grants(c: Any) -> None:
    response, stub = grant(c)
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record == {
        "dataset": "ai4i-2020", "owner": "plant1", "grantee": "hospital1", "grantee_msp": "Hospital1MSP",
        "purpose": "train:maintenance-v1", "expires_at": LATER, "status": "active", "action": "granted",
        "granted_by": "x509::CN=sam,OU=client::CN=ca.test,O=test", "granted_at": "2025-03-01T12:00:00Z",
        "tx_id": stub.txid,
    }
    assert json.loads(c.ledger.state[GRANT_KEY]) == record
    # The grant key needs the owner's peer to change: key-level endorsement policy.
    assert policy_orgs(c.ledger.metadata[GRANT_KEY]) == {"Plant1MSP": "PEER"}
    [event] = stub.events
    assert event.event_name == EVENT_GRANT_ISSUED
    assert json.loads(event.payload) == {"dataset": "ai4i-2020", "grantee": "hospital1",
                                         "purpose": "train:maintenance-v1", "expires_at": LATER}


def test_grant_without_expiry(c: Any) -> None:
    response, _ = grant(c, expires="")
    assert response.status == 200 and json.loads(response.payload)["expires_at"] is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2025-06-01T00:00:00+00:00", "2025-06-01T00:00:00Z"),
        ("2025-06-01T00:00:00.5Z", "2025-06-01T00:00:00.500Z"),
        ("2025-06-01T00:00:00.000000001Z", "2025-06-01T00:00:00.000000001Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ],
)
def test_expiry_is_stored_in_canonical_form(c: Any, given: str, stored: str) -> None:
    response, _ = grant(c, expires=given)
    assert response.status == 200, response.message
    assert json.loads(response.payload)["expires_at"] == stored


@pytest.mark.parametrize(
    ("expires", "fragment"),
    [
        ("2025-03-01T12:00:00Z", "expires_at 2025-03-01T12:00:00Z is not in the future (the transaction's time is 2025-03-01T12:00:00Z)"),
        ("2025-03-01T11:59:59.999Z", "is not in the future"),
        ("2001-01-01T00:00:00Z", "is not in the future"),
        ("2025-06-01T00:00:00+01:00", "is not an RFC 3339 UTC timestamp like '2026-01-31T23:59:59Z'"),
        ("2025-06-01T00:00:00", "is not an RFC 3339 UTC timestamp"),
        ("2025-06-01", "is not an RFC 3339 UTC timestamp"),
        ("2025-06-01 00:00:00Z", "is not an RFC 3339 UTC timestamp"),
        ("2025-06-01t00:00:00z", "is not an RFC 3339 UTC timestamp"),
        ("2025-06-01T00:00:00.1234567890Z", "is not an RFC 3339 UTC timestamp"),
        ("２０２５-06-01T00:00:00Z", "is not an RFC 3339 UTC timestamp"),  # full-width digits
        ("2025-02-30T00:00:00Z", "is not a valid date and time"),
        ("2025-06-01T24:00:00Z", "is not a valid date and time"),
        ("2025-06-30T23:59:60Z", "is not a valid date and time"),  # no leap seconds
        ("0000-01-01T00:00:00Z", "is not a valid date and time"),
        ("tomorrow", "is not an RFC 3339 UTC timestamp"),
        ("9" * 500, "is not an RFC 3339 UTC timestamp"),
    ],
)
def test_expiry_rules(c: Any, expires: str, fragment: str) -> None:
    message = c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", "train:x", expires, fragment=fragment)
    assert len(message) < 300


@pytest.mark.parametrize("role", ["admin", "operator", "client", None])
def test_only_stewards_grant(c: Any, role: str | None) -> None:
    c.rejected(c.user("plant1", role=role), "data:Grant", "ai4i-2020", "hospital1", "train:x", LATER,
               fragment="access denied: Grant needs role 'steward' in the caller's certificate")


@pytest.mark.parametrize("org", ["plant2", "hospital1"])
def test_steward_of_another_org_may_not_grant(c: Any, org: str) -> None:
    # Including the would-be grantee granting itself.
    c.rejected(c.user(org), "data:Grant", "ai4i-2020", "hospital1", "train:x", LATER,
               fragment=f"access denied: Grant is for stewards of org 'plant1', which owns data set 'ai4i-2020'; "
                        f"the caller is a steward of org '{org}'")


def test_grantee_is_a_registered_org_other_than_the_owner(c: Any) -> None:
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital9", "train:x", LATER,
               fragment="org 'hospital9' is not registered in the consortium registry")
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "plant1", "train:x", LATER,
               fragment="org 'plant1' owns data set 'ai4i-2020' and needs no grant")
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "Hospital1MSP", "train:x", LATER,
               fragment="grantee org 'Hospital1MSP' is not valid")


def test_unknown_data_set(c: Any) -> None:
    c.rejected(c.user("plant1"), "data:Grant", "nope", "hospital1", "train:x", LATER,
               fragment="data set 'nope' is not registered")
    c.rejected(c.user("plant1"), "data:Revoke", "nope", "hospital1", "train:x",
               fragment="data set 'nope' is not registered")


@pytest.mark.parametrize(
    "purpose",
    ["", "train", "train:", ":x", "Train:x", "train:x y", "train::x", "1train:x", "t" * 33 + ":x",
     "train:" + "x" * 59, "train:.x", "train:x\n"],
)
def test_purpose_rules(c: Any, purpose: str) -> None:
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", purpose, LATER, fragment="purpose")


def test_duplicate_active_grant_is_refused(c: Any) -> None:
    assert grant(c)[0].status == 200
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", "train:maintenance-v1", "",
               fragment="data set 'ai4i-2020' is already granted to 'hospital1' for 'train:maintenance-v1' "
                        f"(until {LATER}); revoke it first to change the grant")
    # Another purpose or another grantee is a separate grant.
    assert grant(c, purpose="read:aggregates")[0].status == 200
    assert grant(c, grantee="plant2")[0].status == 200


def test_revoke(c: Any) -> None:
    grant(c)
    response, stub = c.call(c.user("plant1", cn="rita"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1",
                            at=NOW + dt.timedelta(days=1))
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert (record["status"], record["action"], record["revoked_at"]) == ("revoked", "revoked", "2025-03-02T12:00:00Z")
    assert record["revoked_by"] == "x509::CN=rita,OU=client::CN=ca.test,O=test" and record["tx_id"] == stub.txid
    assert record["granted_at"] == "2025-03-01T12:00:00Z"  # the grant's own fields are kept
    assert json.loads(c.ledger.state[GRANT_KEY]) == record
    assert policy_orgs(c.ledger.metadata[GRANT_KEY]) == {"Plant1MSP": "PEER"}
    [event] = stub.events
    assert event.event_name == EVENT_GRANT_REVOKED
    assert json.loads(event.payload) == {"dataset": "ai4i-2020", "grantee": "hospital1", "purpose": "train:maintenance-v1"}


def test_revoke_errors(c: Any) -> None:
    c.rejected(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1",
               fragment="data set 'ai4i-2020' has no grant to 'hospital1' for 'train:maintenance-v1'")
    grant(c)
    for role in ("admin", "operator", "client"):
        c.rejected(c.user("plant1", role=role), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1",
                   fragment="access denied: Revoke needs role 'steward'")
    c.rejected(c.user("hospital1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1",
               fragment="access denied: Revoke is for stewards of org 'plant1'")
    c.ok(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1")
    c.rejected(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1",
               fragment="the grant of 'ai4i-2020' to 'hospital1' for 'train:maintenance-v1' was already revoked at "
                        "2025-03-01T12:00:00Z")


def test_expired_grant_cannot_be_revoked_but_can_be_renewed(c: Any) -> None:
    grant(c, expires="2025-03-02T00:00:00Z")
    after = NOW + dt.timedelta(days=2)
    c.rejected(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1", at=after,
               fragment="expired at 2025-03-02T00:00:00Z; there is nothing to revoke")
    response, _ = grant(c, expires="", at=after)
    assert response.status == 200 and json.loads(response.payload)["expires_at"] is None


def test_revoked_grant_can_be_granted_again(c: Any) -> None:
    grant(c)
    c.ok(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:maintenance-v1")
    response, _ = grant(c, expires="2025-04-01T00:00:00Z")
    record = json.loads(response.payload)
    assert response.status == 200 and record["status"] == "active" and "revoked_at" not in record


def test_list_grants_with_their_state(c: Any) -> None:
    grant(c, purpose="train:a", expires="")
    grant(c, purpose="train:b", expires="2025-03-05T00:00:00Z")
    grant(c, purpose="train:c", expires="")
    c.ok(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:c")
    response, stub = c.call(c.user("hospital2", role="client"), "data:ListGrants", "ai4i-2020",
                            at=NOW + dt.timedelta(days=10))
    assert response.status == 200 and not stub.has_writes()
    states = {g["purpose"]: g["state"] for g in json.loads(response.payload)}
    assert states == {"train:a": "active", "train:b": "expired", "train:c": "revoked"}
    c.rejected(c.user("plant1"), "data:ListGrants", "nope", fragment="data set 'nope' is not registered")


def test_argument_counts(c: Any) -> None:
    c.rejected(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", "train:x",
               fragment="incorrect number of params. Expected 4, received 3")
    c.rejected(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", "train:x", "",
               fragment="incorrect number of params. Expected 3, received 4")
