"""Grants: the owner org lets a grantee org use one of its data sets for one purpose.

One key per (data set, grantee org, purpose): re-granting, revoking and renewing overwrite the same
key, so the key's history is the grant's whole life and a purpose-specific lookup is one read, while a
range query over (data set, grantee) lists every purpose a grantee holds. Grant records are never
deleted. Their state at a given instant is derived, never stored: a grant is "expired" from its
expiry instant on without any transaction having to mark it.
"""

from __future__ import annotations

from typing import Any

from chaincode.errors import ContractError
from chaincode.state import list_records
from chaincode.timestamps import parse_utc

GRANT_OBJECT = "grant"
#: One key per data set, created with the owner's key-level policy when the data set is registered.
GRANT_REGISTER_OBJECT = "grantregister"
ACTIVE = "active"
REVOKED = "revoked"
EXPIRED = "expired"
#: The "action" field of each stored version; the audit trail reads it back from the key history.
ACTION_GRANTED = "granted"
ACTION_REVOKED = "revoked"


def grant_key(stub: Any, dataset_id: str, grantee: str, purpose: str) -> str:
    return stub.create_composite_key(GRANT_OBJECT, [dataset_id, grantee, purpose])


def grant_state(record: dict[str, Any], now_nanos: int) -> str:
    """active, revoked or expired at the instant now_nanos (expiry is exclusive: at expires_at it is over)."""
    if record.get("status") == REVOKED:
        return REVOKED
    expires_at = record.get("expires_at")
    if expires_at is not None and parse_utc("expires_at", expires_at) <= now_nanos:
        return EXPIRED
    return ACTIVE


def grant_register_key(stub: Any, dataset_id: str) -> str:
    """The data set's grant register: counts the grant keys ever created for it.

    Why it exists: a key-level endorsement policy guards a key only once the key exists, so a grant of
    a (grantee, purpose) never granted before -- a new key -- would be validated by the chaincode's
    MAJORITY policy alone, and peers of three other orgs could commit it without the owner's peer.
    Every transaction that creates a grant key also writes this register, which carries the owner's
    policy from RegisterDataset on, so no grant of a data set commits without its owner's endorsement.
    Access checks never read it, so they do not conflict with grants.
    """
    return stub.create_composite_key(GRANT_REGISTER_OBJECT, [dataset_id])


async def grants_of(stub: Any, dataset_id: str, grantee: str | None = None) -> list[dict[str, Any]]:
    """Every grant record of a data set (optionally of one grantee), in key order."""
    attributes = [dataset_id] if grantee is None else [dataset_id, grantee]
    return await list_records(stub, GRANT_OBJECT, attributes)


class GrantStateError(ContractError):
    """The grant's current state forbids the operation (already active, already revoked, expired)."""
