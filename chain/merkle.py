"""Merkle trees as in RFC 6962 (Certificate Transparency), over SHA-256.

Leaves and inner nodes are hashed with different prefixes (0x00, 0x01), and an
odd node is never duplicated, so no two different lists share a root
(the flaw of Bitcoin's tree, CVE-2012-2459). Also used for access-log anchors,
whose entries need proofs of inclusion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").hexdigest()


def _leaf(item: bytes) -> bytes:
    return _sha256(b"\x00" + item).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(count: int) -> int:
    """The largest power of two smaller than ``count``."""
    split = 1
    while split * 2 < count:
        split *= 2
    return split


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = _split(len(leaves))
    return _node(_root(leaves[:split]), _root(leaves[split:]))


def merkle_root(items_hex: Sequence[str]) -> str:
    """Root of the tree whose leaves are the given hashes (hex)."""
    if len(items_hex) == 1:  # most blocks: the root is the leaf hash
        return _sha256(b"\x00" + bytes.fromhex(items_hex[0])).hexdigest()
    if not items_hex:
        return EMPTY_ROOT
    return _root([_leaf(bytes.fromhex(item)) for item in items_hex]).hex()


def inclusion_proof(items_hex: Sequence[str], index: int) -> list[str]:
    """The audit path for leaf ``index`` (RFC 6962 section 2.1.1), leaf to root."""
    if not 0 <= index < len(items_hex):
        raise IndexError("leaf index out of range")
    leaves = [_leaf(bytes.fromhex(item)) for item in items_hex]

    def path(nodes: Sequence[bytes], position: int) -> list[bytes]:
        if len(nodes) == 1:
            return []
        split = _split(len(nodes))
        if position < split:
            return [*path(nodes[:split], position), _root(nodes[split:])]
        return [*path(nodes[split:], position - split), _root(nodes[:split])]

    return [node.hex() for node in path(leaves, index)]


def verify_inclusion(item_hex: str, index: int, size: int, proof: Sequence[str], root: str) -> bool:
    """Check an audit path (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    node = _leaf(bytes.fromhex(item_hex))
    position, last = index, size - 1
    for sibling_hex in proof:
        sibling = bytes.fromhex(sibling_hex)
        if last == 0:
            return False
        if position % 2 == 1 or position == last:
            node = _node(sibling, node)
            if position % 2 == 0:
                while position % 2 == 0 and position != 0:
                    position //= 2
                    last //= 2
        else:
            node = _node(node, sibling)
        position //= 2
        last //= 2
    return last == 0 and node.hex() == root
