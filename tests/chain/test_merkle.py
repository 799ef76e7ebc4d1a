from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.merkle import EMPTY_ROOT, inclusion_proof, merkle_root, verify_inclusion


def leaf(hex_item: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(hex_item)).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


ITEMS = [f"{i:02x}" * 32 for i in range(7)]


def test_roots_computed_by_hand():
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()
    assert merkle_root(ITEMS[:1]) == leaf(ITEMS[0]).hex()
    three = node(node(leaf(ITEMS[0]), leaf(ITEMS[1])), leaf(ITEMS[2]))
    assert merkle_root(ITEMS[:3]) == three.hex()
    five = node(
        node(node(leaf(ITEMS[0]), leaf(ITEMS[1])), node(leaf(ITEMS[2]), leaf(ITEMS[3]))),
        leaf(ITEMS[4]),
    )
    assert merkle_root(ITEMS[:5]) == five.hex()


def test_duplicating_the_last_leaf_changes_the_root():
    # Bitcoin's tree gives [a, b, c] and [a, b, c, c] the same root (CVE-2012-2459).
    assert merkle_root(ITEMS[:3]) != merkle_root([*ITEMS[:3], ITEMS[2]])


def test_order_matters():
    assert merkle_root(ITEMS[:2]) != merkle_root(ITEMS[1::-1])


@pytest.mark.parametrize("size", range(1, 18))
def test_every_inclusion_proof_verifies_and_a_wrong_one_does_not(size):
    items = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(size)]
    root = merkle_root(items)
    for index, item in enumerate(items):
        proof = inclusion_proof(items, index)
        assert verify_inclusion(item, index, size, proof, root)
        assert not verify_inclusion("ff" * 32, index, size, proof, root)
        if size > 1:
            assert not verify_inclusion(item, (index + 1) % size, size, proof, root)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40), st.data())
def test_inclusion_proofs_hold_for_random_trees(raw_items, data):
    items = [item.hex() for item in raw_items]
    index = data.draw(st.integers(min_value=0, max_value=len(items) - 1))
    root = merkle_root(items)
    assert verify_inclusion(items[index], index, len(items), inclusion_proof(items, index), root)
