"""The one canonical serialization of a model's arrays, and its SHA-256.

Every hash that crosses a boundary (announced by the ServerApp, committed on the ledger, checked by a
ClientApp, used as a file name in the model store) is ``sha256(canonical_bytes(arrays))``. It depends only
on the arrays' names, dtypes, shapes and values -- not on dict order, memory layout, byte order of the
machine, or on how Flower happened to serialize the arrays on the wire.

Format (version 1)::

    b"TLARRAYS1\\n"
    8-byte big-endian length N of the header
    N bytes of header: JSON, no spaces, keys sorted:
        [{"dtype": "<f4", "name": "fc1.weight", "shape": [32, 12]}, ...]   (entries sorted by name)
    then, for each entry in header order, the array's values in C order, little-endian

The store writes exactly these bytes, so a stored file's SHA-256 equals its name and its ledger record.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping

import numpy as np

MAGIC = b"TLARRAYS1\n"
#: Only plain numeric and boolean dtypes have a canonical byte form.
_KINDS = frozenset("biuf")


class CanonicalFormError(ValueError):
    """Bytes that are not a canonical array serialization, or arrays that cannot be serialized."""


def _normalise(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in _KINDS:
        raise CanonicalFormError(f"array {name!r} has dtype {arr.dtype}, not a numeric or boolean one")
    # Little-endian, C-contiguous; bool and 1-byte types have no byte order ("|").
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def canonical_bytes(arrays: Mapping[str, object]) -> bytes:
    """The canonical serialization of named arrays (see the module docstring)."""
    if not arrays:
        raise CanonicalFormError("no arrays to serialize")
    names = sorted(arrays)
    if any(not isinstance(n, str) or not n for n in names):
        raise CanonicalFormError("array names must be non-empty strings")
    normalised = [(n, _normalise(n, arrays[n])) for n in names]
    header = [{"dtype": a.dtype.str, "name": n, "shape": list(a.shape)} for n, a in normalised]
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [MAGIC, struct.pack(">Q", len(header_bytes)), header_bytes]
    parts.extend(a.tobytes(order="C") for _, a in normalised)
    return b"".join(parts)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def arrays_sha256(arrays: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical serialization."""
    return sha256_hex(canonical_bytes(arrays))


def arrays_from_canonical(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of ``canonical_bytes`` (names in sorted order); raises CanonicalFormError on bad input."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise CanonicalFormError("not a canonical array serialization (bad magic)")
    pos = len(MAGIC)
    (hlen,) = struct.unpack(">Q", data[pos : pos + 8])
    pos += 8
    try:
        header = json.loads(data[pos : pos + hlen])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CanonicalFormError(f"bad header: {exc}") from exc
    pos += hlen
    out: dict[str, np.ndarray] = {}
    for entry in header:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(int(s) for s in entry["shape"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = count * dtype.itemsize
        if pos + nbytes > len(data):
            raise CanonicalFormError(f"truncated data for array {entry['name']!r}")
        out[entry["name"]] = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape).copy()
        pos += nbytes
    if pos != len(data):
        raise CanonicalFormError(f"{len(data) - pos} trailing bytes after the last array")
    return out


# -- Flower ArrayRecord helpers (imported lazily so this module stays light) ------------------------


def record_to_arrays(record: object) -> dict[str, np.ndarray]:
    """numpy arrays of a ``flwr.app.ArrayRecord`` (name -> array), in the record's order."""
    return {name: arr.numpy() for name, arr in record.items()}  # type: ignore[attr-defined]


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> object:
    """A ``flwr.app.ArrayRecord`` holding the arrays under their names."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})


def record_sha256(record: object) -> str:
    return arrays_sha256(record_to_arrays(record))
