"""The canonical array serialization and its SHA-256: one definition, deterministic, order-independent."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from federated.hashing import (
    CanonicalFormError,
    arrays_from_canonical,
    arrays_sha256,
    arrays_to_record,
    canonical_bytes,
    record_sha256,
    record_to_arrays,
)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"net.0.weight": rng.normal(size=(4, 3)).astype(np.float32), "net.0.bias": np.arange(4, dtype=np.float32)}


def test_hash_matches_the_documented_format_computed_by_hand():
    a = {"b": np.array([1.0, 2.0], dtype=np.float32), "a": np.array([[7]], dtype=np.int64)}
    header = json.dumps(
        [{"dtype": "<i8", "name": "a", "shape": [1, 1]}, {"dtype": "<f4", "name": "b", "shape": [2]}],
        sort_keys=True, separators=(",", ":"),
    ).encode()
    expected = (
        b"TLARRAYS1\n" + struct.pack(">Q", len(header)) + header
        + struct.pack("<q", 7) + struct.pack("<2f", 1.0, 2.0)
    )  # fmt: skip
    assert canonical_bytes(a) == expected
    assert arrays_sha256(a) == hashlib.sha256(expected).hexdigest()


def test_independent_of_dict_order_memory_layout_and_byte_order():
    a = _arrays()
    reordered = dict(reversed(list(a.items())))
    fortran = {k: np.asfortranarray(v) for k, v in a.items()}
    big_endian = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in a.items()}
    h = arrays_sha256(a)
    assert arrays_sha256(reordered) == h
    assert arrays_sha256(fortran) == h
    assert arrays_sha256(big_endian) == h
    assert arrays_sha256({k: v.copy() for k, v in a.items()}) == h  # deterministic across calls


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a["net.0.bias"].__setitem__(0, np.float32(0.5)),  # one value
        lambda a: a.__setitem__("net.0.bias", a["net.0.bias"].astype(np.float64)),  # dtype
        lambda a: a.__setitem__("net.0.weight", a["net.0.weight"].reshape(3, 4)),  # shape
        lambda a: a.__setitem__("renamed", a.pop("net.0.bias")),  # name
    ],
)
def test_any_change_changes_the_hash(change):
    a = _arrays()
    before = arrays_sha256(a)
    change(a)
    assert arrays_sha256(a) != before


def test_round_trip_and_bad_input():
    a = _arrays()
    back = arrays_from_canonical(canonical_bytes(a))
    assert sorted(back) == sorted(a)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k])
    data = canonical_bytes(a)
    with pytest.raises(CanonicalFormError):
        arrays_from_canonical(b"nope" + data)
    with pytest.raises(CanonicalFormError):
        arrays_from_canonical(data[:-1])
    with pytest.raises(CanonicalFormError):
        arrays_from_canonical(data + b"\0")
    with pytest.raises(CanonicalFormError):
        canonical_bytes({})
    with pytest.raises(CanonicalFormError):
        canonical_bytes({"s": np.array(["text"])})


def test_flower_arrayrecord_hashes_like_its_arrays():
    a = _arrays()
    rec = arrays_to_record(a)
    assert record_sha256(rec) == arrays_sha256(a)
    assert arrays_sha256(record_to_arrays(rec)) == arrays_sha256(a)
