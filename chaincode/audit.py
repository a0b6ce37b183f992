"""The audit trail of a data set: its registration, every grant and revocation, every access check.

Registrations, grants and revocations are read from the key history (GetHistoryForKey), so a grant
that was issued, revoked and issued again shows all three versions even though the world state only
holds the last. Access checks each have their own key, written once, so a range query returns them
all. The peer returns a key's history newest first; entries are put in time order (the proposals'
timestamps), and versions of one key keep their commit order when timestamps tie.

History reads are not re-validated at commit (no phantom protection), so the trail is for read-only
(evaluate) calls, and the peers must run with core.ledger.history.enableHistoryDatabase=true.
"""

from __future__ import annotations

from typing import Any

from chaincode.access import ACCESS_OBJECT
from chaincode.datasets import dataset_key
from chaincode.grants import ACTION_REVOKED, GRANT_OBJECT
from chaincode.state import decode_record, list_records
from chaincode.timestamps import parse_utc

ACTION_REGISTERED = "registered"
ACTION_ACCESS = "access"


async def key_history(stub: Any, key: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(tx_id, timestamp, record or None when deleted) of each version of key, oldest first."""
    versions = []
    iterator = await stub.get_history_for_key(key)
    async for modification in iterator:
        record = None if modification.is_delete else decode_record(key, modification.value)
        versions.append((modification.tx_id, modification.timestamp.ToJsonString(), record))
    versions.reverse()
    return versions


def _entry(action: str, tx_id: str, at: str, record: dict[str, Any] | None, fields: tuple[str, ...]) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": action, "tx_id": tx_id, "at": at}
    for name in fields:
        if record is not None and name in record:
            entry[name] = record[name]
    return entry


async def trail(stub: Any, dataset_id: str) -> list[dict[str, Any]]:
    """Every event of the data set, oldest first."""
    entries: list[tuple[str, int, dict[str, Any]]] = []

    def add(entry: dict[str, Any]) -> None:
        entries.append((entry["at"], len(entries), entry))

    for tx_id, at, record in await key_history(stub, dataset_key(stub, dataset_id)):
        add(_entry(ACTION_REGISTERED if record is not None else "deleted", tx_id, at, record,
                   ("owner", "kind", "manifest_sha256", "sensitivity", "registered_by")))

    grant_keys = [kv.key async for kv in await stub.get_state_by_partial_composite_key(GRANT_OBJECT, [dataset_id])]
    for key in grant_keys:
        for tx_id, at, record in await key_history(stub, key):
            action = str(record.get("action")) if record is not None else "deleted"
            actor = "revoked_by" if action == ACTION_REVOKED else "granted_by"
            add(_entry(action, tx_id, at, record, ("grantee", "purpose", "expires_at", actor)))

    for event in await list_records(stub, ACCESS_OBJECT, [dataset_id]):
        add(_entry(ACTION_ACCESS, str(event.get("tx_id")), str(event.get("at")), event,
                   ("org", "caller", "role", "purpose", "allowed", "reason")))

    # Compare instants, not strings: timestamps carry 0, 3, 6 or 9 fraction digits, so text order is wrong.
    entries.sort(key=lambda item: (parse_utc("at", item[0]), item[1]))
    return [entry for _, _, entry in entries]
