"""Known-answer vectors for encoding version 1 (README, "Block format").

If one of these fails, the encoding changed and every stored block would stop
verifying: add a new version instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain import encoding, keys
from chain.merkle import merkle_root

SEED = bytes(range(32))
PRIVATE = Ed25519PrivateKey.from_private_bytes(SEED)
PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KEY_ID = "ed25519:56475aa75463474c0285df5dbf2bcab7"
TIMESTAMP = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
PAYLOAD = {"tenant": "alpha", "first_entry": 1, "last_entry": 2, "root": "ab" * 32}
BODY = (
    '{"author":"ed25519:56475aa75463474c0285df5dbf2bcab7","kind":"anchor","payload":'
    '{"first_entry":1,"last_entry":2,"root":"' + "ab" * 32 + '","tenant":"alpha"},'
    '"timestamp":"2026-01-02T03:04:05.000006Z","v":1}'
)
SIGNATURE = (
    "zuMD51Ll/OtubPnboE0bxPLzJLqsBHSredwHmdtuQ0jImcEfe3OU9ucImTnA2ByCZSojp4dLxRE5affSKQ4YBQ=="
)
TRANSACTION_HASH = "9df935c6453cdcf94864b6b65848d32b637932ed176c74f32f7d0024bc7212bf"
MERKLE_ROOT = "77611a266d960ffcd1dface7bb578026df7820e2e89288679acafa2e211887ff"
HEADER = {
    "height": 1,
    "previous_hash": "11" * 32,
    "created_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    "proposer": "hub",
    "merkle_root": MERKLE_ROOT,
    "transaction_count": 1,
}
HEADER_BYTES = (
    '{"created_at":"2026-01-02T03:04:06.000000Z","height":1,"merkle_root":"'
    + MERKLE_ROOT
    + '","previous_hash":"'
    + "11" * 32
    + '","proposer":"hub","transaction_count":1,"v":1}'
)
BLOCK_SIGNATURE = (
    "dv7FHQ50bmM1Oq25muT8b9CNOE82GnXT74ctAlhLex1c1uI6gxhpRUqITMktkwvgTQOi/04bsfG+sy/QVtv+Dg=="
)
BLOCK_HASH = "22db4347546b7d78b70a01b10e5e3c6ddcf9deae149bbe4f28b7505c097317c8"


def test_key_id_of_the_fixed_key():
    raw = keys.public_key_raw(PRIVATE)
    assert encoding.b64(raw) == PUBLIC
    assert keys.key_id_for(raw) == KEY_ID


def test_transaction_signing_bytes_are_sorted_compact_utf8():
    body = encoding.transaction_signing_bytes(
        kind="anchor", author=KEY_ID, payload=PAYLOAD, timestamp=TIMESTAMP
    )
    assert body.decode("utf-8") == BODY


def test_transaction_signature_and_hash_known_answers():
    body = encoding.transaction_signing_bytes(
        kind="anchor", author=KEY_ID, payload=PAYLOAD, timestamp=TIMESTAMP
    )
    assert keys.sign(PRIVATE, body) == SIGNATURE  # Ed25519 is deterministic
    assert keys.verify(PUBLIC, SIGNATURE, body)
    assert (
        encoding.transaction_hash(
            kind="anchor", author=KEY_ID, payload=PAYLOAD, timestamp=TIMESTAMP, signature=SIGNATURE
        )
        == TRANSACTION_HASH
    )


def test_block_known_answers():
    assert merkle_root([TRANSACTION_HASH]) == MERKLE_ROOT
    assert encoding.block_signing_bytes(**HEADER).decode() == HEADER_BYTES
    assert keys.sign(PRIVATE, encoding.block_signing_bytes(**HEADER)) == BLOCK_SIGNATURE
    assert encoding.block_hash(hub_signature=BLOCK_SIGNATURE, **HEADER) == BLOCK_HASH


def test_the_same_moment_in_another_zone_encodes_the_same():
    other_zone = TIMESTAMP.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert encoding.format_time(other_zone) == "2026-01-02T03:04:05.000006Z"


def test_non_ascii_is_utf8_not_escaped():
    assert encoding.canonical_json({"b": "é", "a": [1, True, None]}) == (
        '{"a":[1,true,null],"b":"é"}'.encode()
    )


@pytest.mark.parametrize("value", [{"x": 1.5}, {"x": float("nan")}, {1: "a"}, {"x": object()}])
def test_values_without_a_canonical_form_are_refused(value):
    with pytest.raises(encoding.EncodingError):
        encoding.canonical_json(value)


def test_naive_times_are_refused():
    with pytest.raises(encoding.EncodingError):
        encoding.format_time(datetime(2026, 1, 1))
