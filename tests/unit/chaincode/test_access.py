"""Access checks (contract "data"): allow or deny with the reason, for the caller's own org, recorded."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from chaincode.data_access import EVENT_ACCESS_CHECKED

NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # conftest's FIXED_TIME
PURPOSE = "train:maintenance-v1"


@pytest.fixture
def c(consortium: Any) -> Any:
    consortium.ok(consortium.user("plant1"), "data:RegisterDataset", "ai4i-2020", "tabular", "{}", "ab" * 32, "internal")
    return consortium


def check(c: Any, org: str, purpose: str = PURPOSE, role: str = "client", at: dt.datetime | None = None,
          function: str = "data:Check") -> tuple[dict[str, Any], Any]:
    response, stub = c.call(c.user(org, role=role), function, "ai4i-2020", purpose, at=at)
    assert response.status == 200, response.message
    return json.loads(response.payload), stub


def test_a_granted_org_is_allowed_and_the_check_is_recorded(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "2025-06-01T00:00:00Z")
    answer, stub = check(c, "hospital1")
    assert answer == {
        "dataset": "ai4i-2020", "org": "hospital1", "purpose": PURPOSE, "allowed": True, "reason": "granted",
        "detail": "org 'hospital1' may use 'ai4i-2020' for 'train:maintenance-v1' until 2025-06-01T00:00:00Z",
        "expires_at": "2025-06-01T00:00:00Z", "tx_id": stub.txid, "at": "2025-03-01T12:00:00Z",
    }
    key = f"\x00access\x00ai4i-2020\x00{stub.txid}\x00"
    # The only write is the access event's own key: checks never touch grant or data set keys (no MVCC conflicts).
    assert list(stub.writes) == [key] and not stub.metadata_writes and not stub.private_writes
    event = json.loads(c.ledger.state[key])
    assert event == {
        "dataset": "ai4i-2020", "org": "hospital1", "msp_id": "Hospital1MSP",
        "caller": "x509::CN=client.hospital1,OU=client::CN=ca.test,O=test", "role": "client",
        "purpose": PURPOSE, "allowed": True, "reason": "granted", "tx_id": stub.txid, "at": "2025-03-01T12:00:00Z",
    }
    [chain_event] = stub.events
    assert chain_event.event_name == EVENT_ACCESS_CHECKED and json.loads(chain_event.payload) == event


def test_owner_needs_no_grant(c: Any) -> None:
    answer, _ = check(c, "plant1", purpose="read:anything")
    assert (answer["allowed"], answer["reason"]) == (True, "owner")


def test_no_grant_is_denied_and_still_recorded(c: Any) -> None:
    answer, stub = check(c, "plant2")
    assert (answer["allowed"], answer["reason"]) == (False, "no_grant")
    assert answer["detail"] == "org 'plant2' has no grant of data set 'ai4i-2020'"
    assert json.loads(c.ledger.state[f"\x00access\x00ai4i-2020\x00{stub.txid}\x00"])["allowed"] is False


def test_wrong_purpose(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", "read:aggregates", "")
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", "eval:risk", "")
    answer, _ = check(c, "hospital1")
    assert (answer["allowed"], answer["reason"]) == (False, "wrong_purpose")
    assert answer["detail"].endswith("for purpose 'train:maintenance-v1'; it holds: eval:risk, read:aggregates")


def test_revoked(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "")
    c.ok(c.user("plant1"), "data:Revoke", "ai4i-2020", "hospital1", PURPOSE)
    answer, _ = check(c, "hospital1")
    assert (answer["allowed"], answer["reason"]) == (False, "revoked")
    assert "was revoked at 2025-03-01T12:00:00Z" in answer["detail"]


def test_expiry_is_judged_by_the_transaction_time(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "2025-03-02T00:00:00Z")
    just_before = dt.datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    assert check(c, "hospital1", at=just_before)[0]["allowed"] is True
    at_expiry = dt.datetime(2025, 3, 2, tzinfo=dt.timezone.utc)
    answer, _ = check(c, "hospital1", at=at_expiry)
    assert (answer["allowed"], answer["reason"], answer["expires_at"]) == (False, "expired", "2025-03-02T00:00:00Z")


def test_the_org_is_the_callers_never_an_argument(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "")
    # plant2 cannot borrow hospital1's grant: there is no org argument, only plant2's certificate.
    answer, _ = check(c, "plant2")
    assert (answer["org"], answer["allowed"]) == ("plant2", False)


@pytest.mark.parametrize("role", ["admin", "steward", "operator", "client"])
def test_every_role_may_check(c: Any, role: str) -> None:
    assert check(c, "plant1", role=role)[0]["allowed"] is True


def test_concurrent_checks_write_disjoint_keys(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "")
    _, first = check(c, "hospital1")
    _, second = check(c, "hospital1")
    assert set(first.writes).isdisjoint(second.writes)
    access_keys = [k for k in c.ledger.state if k.startswith("\x00access\x00ai4i-2020\x00")]
    assert len(access_keys) == 2


def test_read_only_check_gives_the_same_answer_and_records_nothing(c: Any) -> None:
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "2025-06-01T00:00:00Z")
    for org, purpose in (("hospital1", PURPOSE), ("hospital1", "read:x"), ("plant2", PURPOSE), ("plant1", PURPOSE)):
        before = c.ledger.world()
        quiet, stub = check(c, org, purpose, function="data:CheckReadOnly")
        assert not stub.has_writes() and c.ledger.world() == before
        recorded, _ = check(c, org, purpose)
        assert {k: v for k, v in quiet.items() if k != "tx_id"} == {k: v for k, v in recorded.items() if k != "tx_id"}


@pytest.mark.parametrize("function", ["data:Check", "data:CheckReadOnly"])
def test_check_errors_change_nothing(c: Any, function: str) -> None:
    name = function.split(":")[1]
    c.rejected(c.user("hospital1", role="client"), function, "nope", PURPOSE, fragment="data set 'nope' is not registered")
    c.rejected(c.user("hospital1", role="client"), function, "ai4i-2020", "train", fragment="is not of the form verb:object")
    c.rejected(c.user("hospital1", role="client"), function, "ai4i 2020", PURPOSE, fragment="data set ID 'ai4i 2020' is not valid")
    c.rejected(c.user("hospital1", role=None), function, "ai4i-2020", PURPOSE,
               fragment=f"access denied: {name} needs a role (admin, client, operator, steward) in the caller's certificate, found None")
    c.rejected(c.user("hospital1", role="superuser"), function, "ai4i-2020", PURPOSE, fragment="found 'superuser'")
    c.rejected(c.user("hospital1", msp_id="Lab9MSP"), function, "ai4i-2020", PURPOSE,
               fragment="MSP 'Lab9MSP' has no org in the consortium registry")
    c.rejected(None, function, "ai4i-2020", PURPOSE, fragment="access denied")
    c.rejected(c.user("hospital1"), function, "ai4i-2020", fragment="incorrect number of params. Expected 2, received 1")
