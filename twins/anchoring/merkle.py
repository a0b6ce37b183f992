"""SHA-256 Merkle trees over reading leaves, with domain separation and inclusion proofs.

Hashes (RFC 6962 / RFC 9162 "Merkle Tree Hash"):

- leaf:  ``H(0x00 || leaf_bytes)``   (``leaf_bytes`` = ``Reading.leaf_bytes()``, see ``twins.readings``)
- inner: ``H(0x01 || left || right)``

The different prefixes keep a leaf from ever being taken for an inner node (second-preimage attacks).
The tree is built level by level; when a level has an odd number of nodes, the last one is promoted to the
next level unchanged (no duplication, so ``[a, b, c]`` and ``[a, b, c, c]`` have different roots). This is
exactly RFC 6962's split-at-the-largest-power-of-two definition, computed bottom-up. The anchor also
carries the leaf count, so a proof is checked against (root, count, index).

An inclusion proof is the list of sibling hashes from the leaf up; whether a sibling is on the left or the
right, and whether a level has no sibling (promotion), follows from ``(index, count)`` alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962: the hash of an empty tree


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def build_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels, ``levels[0]`` = leaf hashes, ``levels[-1] == [root]``."""
    if not leaf_hashes:
        return [[EMPTY_ROOT]]
    levels = [list(leaf_hashes)]
    sha = hashlib.sha256
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [sha(NODE_PREFIX + cur[i] + cur[i + 1]).digest() for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    return build_levels(leaf_hashes)[-1][0]


def proof_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    count = len(levels[0])
    if not 0 <= index < count:
        raise IndexError(f"leaf index {index} outside a tree of {count} leaves")
    proof = []
    i = index
    for level in levels[:-1]:
        sib = i ^ 1
        if sib < len(level):
            proof.append(level[sib])
        i //= 2
    return proof


def root_from_proof(leaf_h: bytes, index: int, count: int, proof: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf hash and its proof; raises ``ValueError`` on a malformed proof."""
    if not 0 <= index < count:
        raise ValueError(f"leaf index {index} outside a tree of {count} leaves")
    h, i, n, k = leaf_h, index, count, 0
    while n > 1:
        sib = i ^ 1
        if sib < n:  # a sibling exists on this level
            if k >= len(proof):
                raise ValueError("proof too short")
            h = node_hash(proof[k], h) if i & 1 else node_hash(h, proof[k])
            k += 1
        # else: the last node of an odd level is promoted unchanged
        i //= 2
        n = (n + 1) // 2
    if k != len(proof):
        raise ValueError("proof too long")
    return h


def verify_proof(leaf: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes) -> bool:
    try:
        return root_from_proof(leaf_hash(leaf), index, count, proof) == root
    except ValueError:
        return False


def pack_levels(levels: Sequence[Sequence[bytes]]) -> bytes:
    """All level hashes concatenated (the level sizes follow from the leaf count)."""
    return b"".join(b"".join(level) for level in levels)


def unpack_levels(blob: bytes, count: int) -> list[list[bytes]]:
    sizes = []
    n = max(count, 1)
    while True:
        sizes.append(n)
        if n == 1:
            break
        n = (n + 1) // 2
    if len(blob) != 32 * sum(sizes):
        raise ValueError(f"stored tree has {len(blob)} bytes, expected {32 * sum(sizes)} for {count} leaves")
    levels, off = [], 0
    for s in sizes:
        levels.append([blob[off + 32 * j: off + 32 * (j + 1)] for j in range(s)])
        off += 32 * s
    return levels
