"""Data set records: what an org declares it holds, without the data.

A record names the data set (ID, kind, a bounded JSON summary of its schema, the SHA-256 of its
manifest, a sensitivity class) and its owner. The owner is the registering steward's org, taken from
the certificate through the registry, never from an argument, so an org can only declare its own
data. IDs are unique across the consortium; a record never changes once registered.
"""

from __future__ import annotations

from typing import Any

from chaincode.errors import NotFound
from chaincode.state import get_record

DATASET_OBJECT = "dataset"
#: How sensitive the data is; the vocabulary of common information-classification schemes.
SENSITIVITIES = frozenset({"public", "internal", "confidential", "restricted"})


def dataset_key(stub: Any, dataset_id: str) -> str:
    return stub.create_composite_key(DATASET_OBJECT, [dataset_id])


async def load_dataset(stub: Any, dataset_id: str) -> dict[str, Any]:
    record = await get_record(stub, dataset_key(stub, dataset_id))
    if record is None:
        raise NotFound(f"data set {dataset_id!r} is not registered")
    return record
