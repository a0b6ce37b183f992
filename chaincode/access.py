"""Access decisions: may an org use a data set for a purpose, and why (not).

The decision is a pure function of the data set record, the grantee's grant records, the owner org's
removal time (if it was removed from the consortium) and the transaction's timestamp, so the recording check and the read-only check can never disagree. A denial
is an answer, not an error: a recorded check that is denied is exactly what an audit must show. Each
recorded check is its own key (data set, transaction ID): concurrent checks write disjoint keys and
never invalidate each other under MVCC, while a revocation committed first still invalidates a check
that read the grant before it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from chaincode.grants import ACTIVE, EXPIRED, REVOKED, grant_state

ACCESS_OBJECT = "access"
# Reasons, machine-readable; "detail" says the same for a person.
OWNER = "owner"
GRANTED = "granted"
NO_GRANT = "no_grant"
WRONG_PURPOSE = "wrong_purpose"
#: The data set's owner org was removed from the consortium: its data is no one's to use any more (nor the
#: owner's: a removed org's members are refused before any decision, membership.member).
OWNER_REMOVED = "owner_removed"
REASON_REVOKED = REVOKED
REASON_EXPIRED = EXPIRED


@dataclass(frozen=True)
class Decision:
    dataset: str
    org: str
    purpose: str
    allowed: bool
    reason: str
    detail: str
    expires_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def access_key(stub: Any, dataset_id: str, tx_id: str) -> str:
    return stub.create_composite_key(ACCESS_OBJECT, [dataset_id, tx_id])


def decide(dataset: dict[str, Any], org: str, purpose: str, org_grants: list[dict[str, Any]],
           now_nanos: int, owner_removed_at: str | None = None) -> Decision:
    """The answer for org using dataset for purpose, given every grant record of (dataset, org) and when the
    owner org was removed from the consortium (None: it is a member)."""
    dataset_id = str(dataset["id"])

    def answer(allowed: bool, reason: str, detail: str, expires_at: str | None = None) -> Decision:
        return Decision(dataset_id, org, purpose, allowed, reason, detail, expires_at)

    if owner_removed_at:
        # First: no grant the removed owner issued outlives its membership.
        return answer(False, OWNER_REMOVED,
                      f"owner org {dataset.get('owner')!r} was removed from the consortium at {owner_removed_at}")

    if org == dataset.get("owner"):
        return answer(True, OWNER, f"org {org!r} owns data set {dataset_id!r}")
    match = next((g for g in org_grants if g.get("purpose") == purpose), None)
    if match is None:
        others = sorted(str(g.get("purpose")) for g in org_grants if grant_state(g, now_nanos) == ACTIVE)
        if org_grants:
            held = f"; it holds: {', '.join(others)}" if others else ""
            return answer(False, WRONG_PURPOSE,
                          f"org {org!r} has no grant of {dataset_id!r} for purpose {purpose!r}{held}")
        return answer(False, NO_GRANT, f"org {org!r} has no grant of data set {dataset_id!r}")
    state = grant_state(match, now_nanos)
    expires_at = match.get("expires_at")
    if state == REVOKED:
        return answer(False, REASON_REVOKED,
                      f"the grant of {dataset_id!r} to {org!r} for {purpose!r} was revoked at {match.get('revoked_at')}")
    if state == EXPIRED:
        return answer(False, REASON_EXPIRED,
                      f"the grant of {dataset_id!r} to {org!r} for {purpose!r} expired at {expires_at}", expires_at)
    until = f" until {expires_at}" if expires_at else " without expiry"
    return answer(True, GRANTED, f"org {org!r} may use {dataset_id!r} for {purpose!r}{until}", expires_at)
