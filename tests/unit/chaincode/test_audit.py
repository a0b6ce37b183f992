"""The audit trail (contract "data", Audit): from the key history and the access-event keys."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # conftest's FIXED_TIME
PURPOSE = "train:maintenance-v1"


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


@pytest.fixture
def c(consortium: Any) -> Any:
    consortium.ok(consortium.user("plant1", cn="sam"), "data:RegisterDataset", "ai4i-2020", "tabular", "{}",
                  "ab" * 32, "internal")
    return consortium


def test_full_history_in_time_order(c: Any) -> None:
    steward = c.user("plant1", cn="sam")
    c.ok(steward, "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "2025-04-01T00:00:00Z", at=at(1))
    allowed, first = c.call(c.user("hospital1", role="client", cn="fl-client"), "data:Check", "ai4i-2020", PURPOSE, at=at(2))
    # Committed later but proposed earlier: the trail follows the proposals' times, and compares instants,
    # not strings ("...15:00:00.500Z" sorts before "...15:00:00Z" as text).
    c.ok(c.user("plant2", role="operator"), "data:Check", "ai4i-2020", "read:aggregates", at=at(3.5) + dt.timedelta(milliseconds=500))
    c.ok(c.user("hospital2", role="client"), "data:Check", "ai4i-2020", PURPOSE, at=at(3.5))
    c.ok(steward, "data:Revoke", "ai4i-2020", "hospital1", PURPOSE, at=at(4))
    c.ok(c.user("hospital1", role="client", cn="fl-client"), "data:Check", "ai4i-2020", PURPOSE, at=at(5))
    c.ok(steward, "data:Grant", "ai4i-2020", "hospital1", PURPOSE, "", at=at(6))

    response, stub = c.call(c.user("hospital2", role="client"), "data:Audit", "ai4i-2020", at=at(7))
    assert response.status == 200, response.message
    assert not stub.has_writes()
    trail = json.loads(response.payload)
    assert (trail["dataset"], trail["owner"]) == ("ai4i-2020", "plant1")
    entries = trail["entries"]
    summary = [(e["action"], e["at"], e.get("org") or e.get("grantee"), e.get("reason")) for e in entries]
    assert summary == [
        ("registered", "2025-03-01T12:00:00Z", None, None),
        ("granted", "2025-03-01T13:00:00Z", "hospital1", None),
        ("access", "2025-03-01T14:00:00Z", "hospital1", "granted"),
        ("access", "2025-03-01T15:30:00Z", "hospital2", "no_grant"),
        ("access", "2025-03-01T15:30:00.500Z", "plant2", "no_grant"),
        ("revoked", "2025-03-01T16:00:00Z", "hospital1", None),
        ("access", "2025-03-01T17:00:00Z", "hospital1", "revoked"),
        ("granted", "2025-03-01T18:00:00Z", "hospital1", None),
    ]
    registered = entries[0]
    assert registered["owner"] == "plant1" and registered["registered_by"].startswith("x509::CN=sam,")
    assert registered["manifest_sha256"] == "ab" * 32
    access = entries[2]
    assert access == {
        "action": "access", "tx_id": first.txid, "at": "2025-03-01T14:00:00Z", "org": "hospital1",
        "caller": "x509::CN=fl-client,OU=client::CN=ca.test,O=test", "role": "client", "purpose": PURPOSE,
        "allowed": True, "reason": "granted",
    }
    assert entries[1]["expires_at"] == "2025-04-01T00:00:00Z" and entries[1]["granted_by"].startswith("x509::CN=sam,")
    assert entries[5]["revoked_by"].startswith("x509::CN=sam,") and entries[7]["expires_at"] is None
    # Every entry names its transaction, and the grant's three versions come from its key history.
    assert all(e["tx_id"].startswith("tx-") for e in entries)
    assert len({e["tx_id"] for e in entries}) == len(entries)


def test_versions_of_one_key_keep_commit_order_when_times_tie(c: Any) -> None:
    steward = c.user("plant1")
    c.ok(steward, "data:Grant", "ai4i-2020", "plant2", PURPOSE, "")
    c.ok(steward, "data:Revoke", "ai4i-2020", "plant2", PURPOSE)
    c.ok(steward, "data:Grant", "ai4i-2020", "plant2", PURPOSE, "")
    entries = c.ok(steward, "data:Audit", "ai4i-2020")["entries"]
    assert [e["action"] for e in entries] == ["registered", "granted", "revoked", "granted"]


def test_only_this_data_sets_events(c: Any) -> None:
    c.ok(c.user("plant1"), "data:RegisterDataset", "ai4i-2020x", "tabular", "{}", "cd" * 32, "public")
    c.ok(c.user("hospital1", role="client"), "data:Check", "ai4i-2020x", PURPOSE)
    c.ok(c.user("plant1"), "data:Grant", "ai4i-2020x", "hospital1", PURPOSE, "")
    entries = c.ok(c.user("plant1"), "data:Audit", "ai4i-2020")["entries"]
    assert [e["action"] for e in entries] == ["registered"]


def test_audit_errors(c: Any) -> None:
    c.rejected(c.user("plant1"), "data:Audit", "nope", fragment="data set 'nope' is not registered")
    c.rejected(c.user("plant1"), "data:Audit", "", fragment="data set ID must not be empty")
    c.rejected(c.user("plant1", role=None), "data:Audit", "ai4i-2020", fragment="access denied: Audit needs a role")
    c.rejected(c.user("plant1", msp_id="Lab9MSP"), "data:Audit", "ai4i-2020", fragment="has no org in the consortium registry")
