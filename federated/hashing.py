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
    """Inverse of ``canonical_bytes`` (names in sorted order); raises CanonicalFormError on bad input.

    Bytes from a file are untrusted: every header field is checked, and the result must serialize back to
    exactly these bytes, so that anything accepted here is the one canonical form its hash stands for."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise CanonicalFormError("not a canonical array serialization (bad magic)")
    pos = len(MAGIC)
    (hlen,) = struct.unpack(">Q", data[pos : pos + 8])
    pos += 8
    if hlen > len(data) - pos:
        raise CanonicalFormError(f"header of {hlen} bytes runs past the end of the data ({len(data)} bytes)")
    try:
        header = json.loads(data[pos : pos + hlen])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CanonicalFormError(f"bad header: {exc}") from exc
    pos += hlen
    if not isinstance(header, list) or not header:
        raise CanonicalFormError("bad header: not a non-empty list of arrays")
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(header):
        if not isinstance(entry, dict) or set(entry) != {"dtype", "name", "shape"}:
            raise CanonicalFormError(f"bad header: entry {i} is not {{dtype, name, shape}}")
        name, shape_raw = entry["name"], entry["shape"]
        if not isinstance(name, str) or not name or name in out:
            raise CanonicalFormError(f"bad header: entry {i} has an empty, non-text or repeated name")
        if not isinstance(shape_raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                      for d in shape_raw):
            raise CanonicalFormError(f"bad header: array {name!r} has shape {shape_raw!r}, not a list of sizes")
        try:
            dtype = np.dtype(entry["dtype"])
        except (TypeError, ValueError):
            raise CanonicalFormError(f"bad header: array {name!r} has an unknown dtype {entry['dtype']!r}") from None
        if dtype.kind not in _KINDS or dtype.str != entry["dtype"] or dtype.byteorder == ">":
            raise CanonicalFormError(f"bad header: array {name!r} has dtype {entry['dtype']!r}, not a little-endian "
                                     "numeric or boolean one")
        shape = tuple(shape_raw)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if pos + nbytes > len(data):
            raise CanonicalFormError(f"truncated data for array {name!r}")
        out[name] = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape).copy()
        pos += nbytes
    if pos != len(data):
        raise CanonicalFormError(f"{len(data) - pos} trailing bytes after the last array")
    if canonical_bytes(out) != data:  # e.g. entries out of name order, or a header not written the canonical way
        raise CanonicalFormError("not in canonical form (it would serialize to other bytes)")
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
