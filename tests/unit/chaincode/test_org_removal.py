"""Removing an org from the consortium (registry RemoveOrg) and what it means for the data contract.

RemoveOrg is a vote of the caller's org (from the certificate, never an argument); the org is removed once a
majority of the registered orgs that are not removed voted. Then its members are refused everywhere, its data
sets are denied to everyone with the reason, and its history stays readable in the audit trail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaincode.registry import EVENT_ORG_REMOVAL_VOTED, EVENT_ORG_REMOVED

PURPOSE = "train:maintenance-v1"
AT = "2025-03-01T12:00:00Z"  # conftest's FIXED_TIME


def admin(c: Any, org: str) -> dict[str, Any]:
    return c.user(org, role="admin")


@pytest.fixture
def c(consortium: Any) -> Any:
    """plant2 owns a data set granted to plant1 for PURPOSE, and plant1 has checked it once."""
    consortium.ok(consortium.user("plant2"), "data:RegisterDataset", "p2-line", "tabular", "{}", "cd" * 32, "internal")
    consortium.ok(consortium.user("plant2"), "data:Grant", "p2-line", "plant1", PURPOSE, "")
    assert consortium.ok(consortium.user("plant1", role="operator"), "data:Check", "p2-line", PURPOSE)["allowed"]
    return consortium


def remove(c: Any, target: str = "plant2", voters: tuple[str, ...] = ("hospital1", "hospital2", "plant1")) -> dict:
    record = {}
    for voter in voters:
        record = c.ok(admin(c, voter), "RemoveOrg", target)
    return record


def test_a_majority_of_votes_removes_the_org(c: Any) -> None:
    response, stub = c.call(admin(c, "hospital1"), "RemoveOrg", "plant2")
    assert response.status == 200, response.message
    first = json.loads(response.payload)
    assert "removed_at" not in first and [v["org"] for v in first["removal_votes"]] == ["hospital1"]
    [event] = stub.events
    assert event.event_name == EVENT_ORG_REMOVAL_VOTED
    assert json.loads(event.payload) == {"name": "plant2", "msp_id": "Plant2MSP", "voter": "hospital1", "votes": 1,
                                         "needed": 3, "of": 4}
    assert "removed_at" not in c.ok(admin(c, "hospital2"), "RemoveOrg", "plant2")  # 2 of 4: no majority yet
    response, stub = c.call(admin(c, "plant1"), "RemoveOrg", "plant2")
    record = json.loads(response.payload)
    assert record["removed_at"] == AT and record["removed_tx"] == stub.txid
    assert record["removed_by"] == ["hospital1", "hospital2", "plant1"]
    assert record["msp_id"] == "Plant2MSP" and record["kind"] == "plant"  # the record stays, with its history
    [event] = stub.events
    assert event.event_name == EVENT_ORG_REMOVED and json.loads(event.payload)["removed_at"] == AT
    assert c.ok(admin(c, "hospital1"), "ReadOrg", "plant2")["removed_at"] == AT


def test_the_voter_is_the_callers_org_and_votes_once(c: Any) -> None:
    c.ok(admin(c, "hospital1"), "RemoveOrg", "plant2")
    c.rejected(admin(c, "hospital1"), "RemoveOrg", "plant2", fragment="org 'hospital1' has already voted to remove org 'plant2'")
    # Another certificate of the same MSP is the same org: still one vote.
    c.rejected(c.user("hospital1", role="admin", cn="admin2.hospital1"), "RemoveOrg", "plant2",
               fragment="has already voted")


@pytest.mark.parametrize("role", ["steward", "operator", "client", None])
def test_only_an_admin_votes(c: Any, role: str | None) -> None:
    c.rejected(c.user("hospital1", role=role), "RemoveOrg", "plant2", fragment="RemoveOrg needs role 'admin'")


def test_bad_input_and_unknown_orgs_change_nothing(c: Any) -> None:
    c.rejected(admin(c, "hospital1"), "RemoveOrg", "Plant 2!", fragment="org name")
    c.rejected(admin(c, "hospital1"), "RemoveOrg", "plant9", fragment="org 'plant9' is not registered")
    c.rejected(c.make_creator("Plant9MSP", role="admin"), "RemoveOrg", "plant2",
               fragment="MSP 'Plant9MSP' has no org in the consortium registry")


def test_a_removed_org_is_removed_once_and_no_longer_votes(c: Any) -> None:
    remove(c)
    c.rejected(admin(c, "hospital1"), "RemoveOrg", "plant2",
               fragment="org 'plant2' was removed from the consortium at 2025-03-01T12:00:00Z; there is nothing to vote on")
    c.rejected(admin(c, "plant2"), "RemoveOrg", "plant1", fragment="access denied: org 'plant2' was removed")
    # Three orgs are left: two of them now make the majority.
    c.ok(admin(c, "hospital1"), "RemoveOrg", "plant1")
    assert c.ok(admin(c, "hospital2"), "RemoveOrg", "plant1")["removed_by"] == ["hospital1", "hospital2"]


def test_its_data_sets_are_denied_to_everyone_with_the_reason(c: Any) -> None:
    remove(c)
    for function in ("data:Check", "data:CheckReadOnly"):
        answer = c.ok(c.user("plant1", role="operator"), function, "p2-line", PURPOSE)
        assert answer["allowed"] is False and answer["reason"] == "owner_removed"
        assert answer["detail"] == f"owner org 'plant2' was removed from the consortium at {AT}"
    # The denied recorded check is in the audit trail, after the history from before the removal.
    entries = c.ok(c.user("hospital1", role="client"), "data:Audit", "p2-line")["entries"]
    assert [e["action"] for e in entries] == ["registered", "granted", "access", "access"]
    assert [e.get("allowed") for e in entries[2:]] == [True, False]


@pytest.mark.parametrize(("function", "args"), [
    ("data:Check", ("p2-line", PURPOSE)), ("data:CheckReadOnly", ("p2-line", PURPOSE)), ("data:Audit", ("p2-line",)),
    ("data:ListDatasets", ()), ("data:RegisterDataset", ("p2-new", "tabular", "{}", "ef" * 32, "internal")),
    ("data:Grant", ("p2-line", "hospital1", PURPOSE, "")), ("data:Revoke", ("p2-line", "plant1", PURPOSE)),
])
def test_its_members_are_refused_everywhere(c: Any, function: str, args: tuple[str, ...]) -> None:
    remove(c)
    c.rejected(c.user("plant2"), function, *args, fragment="access denied: org 'plant2' was removed from the consortium at")


def test_it_can_no_longer_be_granted_to(c: Any) -> None:
    c.ok(c.user("plant1"), "data:RegisterDataset", "p1-line", "tabular", "{}", "ab" * 32, "internal")
    remove(c)
    c.rejected(c.user("plant1"), "data:Grant", "p1-line", "plant2", PURPOSE, "",
               fragment="access denied: org 'plant2' was removed from the consortium at")
