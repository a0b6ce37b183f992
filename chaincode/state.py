"""How contracts store records in the world state.

Values are canonical JSON (sorted keys, no spaces, UTF-8) so that every endorsing peer produces the
same bytes for the same record and their read-write sets match. Keys are composite keys
(``\\x00objectType\\x00attr\\x00...``): each record type has its own object type, so all TwinLedger
contracts can share one chaincode namespace and still list one type by a prefix range query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_record(key: str, raw: bytes | bytearray) -> dict[str, Any]:
    try:
        record = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RuntimeError(f"ledger value under {key!r} is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise RuntimeError(f"ledger value under {key!r} is not a JSON object")
    return record


async def get_record(stub: Any, key: str) -> dict[str, Any] | None:
    """The record under key, or None when the key has no value (the peer answers empty bytes)."""
    raw = await stub.get_state(key)
    if not raw:
        return None
    return decode_record(key, raw)


async def put_record(stub: Any, key: str, record: dict[str, Any]) -> None:
    await stub.put_state(key, canonical_json(record))


async def list_records(stub: Any, object_type: str, attributes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """All records whose composite key starts with object_type (and attributes), in key order."""
    iterator = await stub.get_state_by_partial_composite_key(object_type, list(attributes))
    records = []
    async for kv in iterator:
        records.append(decode_record(kv.key, kv.value))
    return records


def tx_timestamp(stub: Any) -> str:
    """The proposal's timestamp (set by the client, identical on every endorser) as RFC 3339 UTC."""
    ts = stub.get_tx_timestamp()
    if ts is None:
        raise RuntimeError("the transaction has no timestamp")
    return ts.ToJsonString()
