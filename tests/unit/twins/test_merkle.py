import hashlib

import pytest

from twins.anchoring import merkle
from twins.readings import Reading, leaf_bytes


def _leaves(n):
    return [Reading("plant1", "plant1.m1", "Torque", i + 1, 1_700_000_000_000_000 + i, 40.0 + i).leaf_bytes() for i in range(n)]


def _rfc6962(leaves):
    """Reference: RFC 6962 MTH, recursive split at the largest power of two < n."""
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_rfc6962(leaves[:k]), _rfc6962(leaves[k:]))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 31, 33, 100])
def test_root_matches_rfc6962_and_every_proof_verifies(n):
    leaves = _leaves(n)
    levels = merkle.build_levels([merkle.leaf_hash(x) for x in leaves])
    root = levels[-1][0]
    assert root == _rfc6962(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle.proof_from_levels(levels, i)
        assert merkle.verify_proof(leaf, i, n, proof, root)
    blob = merkle.pack_levels(levels)
    assert merkle.unpack_levels(blob, n) == levels


def test_domain_separation_and_known_vector():
    a = b"abc"
    assert merkle.leaf_hash(a) == hashlib.sha256(b"\x00abc").digest()
    assert merkle.node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()
    # an inner node presented as a leaf does not verify
    leaves = _leaves(4)
    levels = merkle.build_levels([merkle.leaf_hash(x) for x in leaves])
    fake_leaf = levels[0][0] + levels[0][1]
    assert not merkle.verify_proof(fake_leaf, 0, 2, [levels[1][1]], levels[-1][0])


def test_odd_count_is_not_duplication():
    three = _leaves(3)
    four = three + [three[-1]]
    r3 = merkle.root_of([merkle.leaf_hash(x) for x in three])
    r4 = merkle.root_of([merkle.leaf_hash(x) for x in four])
    assert r3 != r4


def test_tampered_leaf_wrong_index_or_proof_fail():
    leaves = _leaves(7)
    levels = merkle.build_levels([merkle.leaf_hash(x) for x in leaves])
    root = levels[-1][0]
    proof = merkle.proof_from_levels(levels, 5)
    r = Reading("plant1", "plant1.m1", "Torque", 6, 1_700_000_000_000_005, 45.0)
    assert merkle.verify_proof(r.leaf_bytes(), 5, 7, proof, root)
    tampered = Reading("plant1", "plant1.m1", "Torque", 6, 1_700_000_000_000_005, 45.000001)
    assert not merkle.verify_proof(tampered.leaf_bytes(), 5, 7, proof, root)
    assert not merkle.verify_proof(r.leaf_bytes(), 4, 7, proof, root)
    assert not merkle.verify_proof(r.leaf_bytes(), 5, 6, proof, root)  # (the count itself is bound by the anchor)
    assert not merkle.verify_proof(r.leaf_bytes(), 5, 7, proof[:-1], root)
    assert not merkle.verify_proof(r.leaf_bytes(), 5, 7, proof + [root], root)


def test_leaf_encoding_is_canonical_binary():
    b = leaf_bytes("o", "a", "p", 1, 2, 1.5)
    assert b == b"TLR2" + b"\x00\x01o" + b"\x00\x01a" + b"\x00\x01p" + (1).to_bytes(8, "big") + (2).to_bytes(8, "big") \
        + (0).to_bytes(4, "big") + bytes.fromhex("3ff8000000000000")
    with pytest.raises(ValueError):
        leaf_bytes("o", "a", "p", 1, 2, float("nan"))  # a Good reading has a finite value
    # a Bad reading without a value: its status, and NaN as one canonical bit pattern whatever NaN it held
    bad = leaf_bytes("o", "a", "p", 1, 2, -float("nan"), 0x80320000)
    assert bad[-12:] == bytes.fromhex("80320000") + bytes.fromhex("7ff8000000000000")
    with pytest.raises(ValueError):
        leaf_bytes("o", "a", "p", 1, 2, 1.0, 0x80320080)  # info bits (Overflow) are not part of a reading
