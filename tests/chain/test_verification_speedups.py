"""The fast paths of verification give exactly what the reference paths give.

canonical_json writes through orjson: it must produce the reference encoder's
bytes (json.dumps, sorted keys, compact, UTF-8) for every value it accepts.
The verifier reads rows with raw SQL and decodes payloads with orjson: it must
see the same values Django's JSONField would, and name the same first bad block.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db.models import TextChoices
from django_tenants.utils import schema_context
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import encoding
from chain.encoding import EncodingError
from chain.merkle import merkle_root
from chain.models import Block, Transaction
from chain.selectors import chain_verify_schema
from chain.verification import (
    BlockRow,
    TransactionRow,
    _payload,
    _plain,
    blocks_with_transactions,
)
from tests.chain.helpers import append_blocks, raw_sql

# --- canonical JSON: orjson against the reference encoder ----------------------------

keys = st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: those take the reference encoder
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))  # control characters, quotes
    | st.sampled_from(["\u2028\u2029", "\x7f\x00\x1f", "\ufeff", "\U0001f600", '"\\/'])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_canonical_json_is_the_reference_encoding(value):
    assert encoding.canonical_json(value) == encoding._dumps(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_keys_sort_by_code_point_as_the_reference_does(value):
    assert encoding.canonical_json(value) == encoding._dumps(value)


def test_values_orjson_refuses_take_the_reference_encoder():
    deep: list = []
    for _ in range(400):
        deep = [deep]
    for value in ({"n": 2**64}, {"n": -(2**63) - 1}, {"n": 10**40}, deep):
        assert encoding.canonical_json(value) == encoding._dumps(value)


def test_a_lone_surrogate_fails_as_before():
    with pytest.raises(UnicodeEncodeError):
        encoding._dumps({"a": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        encoding.canonical_json({"a": "\ud800"})


class Colour(TextChoices):
    RED = "red", "Red"


def test_str_and_dict_subclasses_encode_as_their_values():
    from collections import OrderedDict

    value = OrderedDict([("b", Colour.RED), ("a", [Colour.RED, True, None])])
    assert (
        encoding.canonical_json(value)
        == encoding._dumps(value)
        == b'{"a":["red",true,null],"b":"red"}'
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1.5}, "$.a: floats are not allowed"),
        ({"a": [1, {"b": 0.0}]}, "$.a[1].b: floats are not allowed"),
        ({1: "x"}, "$: object keys must be strings"),
        ({"a": (1, 2)}, "$.a: tuple cannot be encoded"),
    ],
)
def test_what_the_reference_rejects_is_still_rejected(value, message):
    with pytest.raises(EncodingError, match=message.replace("$", r"\$").replace("[", r"\[")):
        encoding.canonical_json(value)


# --- transaction and block hashes ----------------------------------------------------

times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


def reference_transaction_hash(**envelope) -> str:
    signature = envelope.pop("signature")
    body = encoding.transaction_body(**envelope)
    return encoding.sha256_hex(encoding._dumps({**body, "signature": signature}))


@settings(max_examples=300, deadline=None)
@given(
    kind=st.text(max_size=12),
    author=st.text(max_size=40),
    payload=json_values,
    timestamp=times,
    signature=st.text(max_size=90),
)
def test_transaction_hashes_match_the_reference(kind, author, payload, timestamp, signature):
    envelope = {
        "kind": kind,
        "author": author,
        "payload": payload,
        "timestamp": timestamp,
        "signature": signature,
    }
    expected = reference_transaction_hash(**envelope)
    assert encoding.transaction_hash(**envelope) == expected
    assert _plain(payload)  # no floats in json_values: the verifier's shortcut applies
    assert (
        encoding.transaction_hash_checked(kind, author, payload, timestamp, signature) == expected
    )


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(min_value=0, max_value=2**63 - 1),
    previous_hash=st.text(max_size=64),
    created_at=times,
    offset=st.integers(min_value=-23 * 60, max_value=23 * 60),
    proposer=st.text(max_size=20),
    root=st.text(max_size=64),
    count=st.integers(min_value=0, max_value=2**31),
    signature=st.text(max_size=90),
)
def test_block_hashes_match_the_reference(
    height, previous_hash, created_at, offset, proposer, root, count, signature
):
    if offset and datetime(2, 1, 1, tzinfo=UTC) < created_at < datetime(9998, 1, 1, tzinfo=UTC):
        created_at = created_at.astimezone(timezone(timedelta(minutes=offset)))
    header = {
        "height": height,
        "previous_hash": previous_hash,
        "created_at": created_at,
        "proposer": proposer,
        "merkle_root": root,
        "transaction_count": count,
    }
    body = {**encoding.block_header(**header), "hub_signature": signature}
    expected = encoding.sha256_hex(encoding._dumps(body))
    assert encoding.block_hash(hub_signature=signature, **header) == expected
    assert encoding.block_hash_of(*header.values(), signature) == expected


def test_block_hash_of_validates_unexpected_types_like_canonical_json():
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(EncodingError, match="floats"):
        encoding.block_hash_of(1.0, "a", moment, "hub", "b", 1, "s")
    with pytest.raises(EncodingError, match=r"list cannot|floats"):
        encoding.block_hash_of(1, "a", moment, "hub", "b", 1, [1.5])
    with pytest.raises(EncodingError, match="timezone-aware"):
        encoding.block_hash_of(1, "a", datetime(2026, 1, 2), "hub", "b", 1, "s")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=9))
def test_merkle_single_leaf_shortcut_matches_the_tree(leaves):
    import hashlib

    items = [leaf.hex() for leaf in leaves]
    if len(items) == 1:
        expected = hashlib.sha256(b"\x00" + leaves[0]).hexdigest()
        assert merkle_root(items) == expected
    assert merkle_root(items) == merkle_root(items[:])


# --- payload decoding: orjson against json.loads --------------------------------------


def typed(value):
    """A value with every type made visible, so 1 and 1.0 and True differ."""
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


json_with_floats = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(json_with_floats)
def test_payloads_decode_as_json_loads_decodes_them(value):
    text = json.dumps(value, ensure_ascii=False)
    decoded, plain = _payload(text)
    assert typed(decoded) == typed(json.loads(text))
    # plain: the verifier may skip _check (never with a float; integers beyond
    # 64 bits are decoded by json.loads and take the checked path).
    assert plain == _plain(decoded) or not plain
    assert not plain or "('float'" not in repr(typed(decoded))


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 18446744073709551616}',
        '{"n": -9223372036854775809}',
        '{"n": [100000000000000000000000000000]}',
        '{"n": 1.0}',
        '{"n": 1e400}',
        "-0",
        '"text"',
        "null",
    ],
)
def test_big_integers_and_floats_decode_exactly(text):
    decoded, plain = _payload(text)
    assert typed(decoded) == typed(json.loads(text))
    assert not plain or "('float'" not in repr(typed(decoded))


def test_no_payload_decodes_as_none():
    assert _payload(None) == (None, True)


# --- reading rows: the raw SQL reader against the ORM reader ---------------------------


def reference_blocks_with_transactions(*, after=-1, until=None, chunk=2000):
    """The ORM reader this module's reader replaced (Django's JSONField decoding)."""
    last = after
    while True:
        query = Block.objects.filter(height__gt=last).order_by("height")
        if until is not None:
            query = query.filter(height__lte=until)
        blocks = [BlockRow._make(row) for row in query.values_list(*BlockRow._fields)[:chunk]]
        if not blocks:
            return
        by_block = {block.id: [] for block in blocks}
        fields = TransactionRow._fields[:-1]
        rows = (
            Transaction.objects.filter(block_id__in=list(by_block))
            .order_by("block_id", "index")
            .values_list(*fields)
        )
        for row in rows:
            by_block[row[0]].append(TransactionRow(*row))
        for block in blocks:
            yield block, by_block[block.id]
        last = blocks[-1].height


def comparable(stream):
    return [
        (tuple(block), [(typed(item.payload), tuple(item)[:4], tuple(item)[5:9]) for item in items])
        for block, items in stream
    ]


def rehash_block(schema: str, height: int, payload_sql: str) -> None:
    """Replace transaction 0's payload and recompute every hash from there on, as
    a forger without the hub's key would: hash-only verification cannot tell."""
    raw_sql(
        schema,
        f"UPDATE chain_transaction SET payload = {payload_sql} "  # noqa: S608 (test SQL)
        "WHERE index = 0 AND block_id = (SELECT id FROM chain_block WHERE height = %s)",
        [height],
    )
    with schema_context(schema):
        blocks = list(Block.objects.filter(height__gte=height).order_by("height"))
        previous = Block.objects.get(height=height - 1).hash
        for block in blocks:
            items = list(block.transactions.order_by("index"))
            for item in items:
                try:
                    item.hash = reference_transaction_hash(**item.envelope())
                except EncodingError:
                    pass  # a float: the verifier must name it, whatever the hash
            root = merkle_root([item.hash for item in items])
            header = {**block.header_fields(), "previous_hash": previous, "merkle_root": root}
            body = {**encoding.block_header(**header), "hub_signature": block.hub_signature}
            new_hash = encoding.sha256_hex(encoding._dumps(body))
            for item in items:
                raw_sql(
                    schema,
                    "UPDATE chain_transaction SET hash = %s WHERE id = %s",
                    [item.hash, item.pk],
                )
            raw_sql(
                schema,
                "UPDATE chain_block SET previous_hash = %s, merkle_root = %s, hash = %s "
                "WHERE id = %s",
                [previous, root, new_hash, block.pk],
            )
            previous = new_hash
    raw_sql(schema, "UPDATE chain_chainstate SET head_hash = %s", [previous])


@pytest.fixture
def hub_chain(alpha):
    heights = append_blocks(alpha, 4, per_block=1) + append_blocks(alpha, 3, per_block=3)
    return heights


def test_the_reader_yields_what_the_orm_reader_yields(hub_chain):
    with schema_context("public"):
        for options in ({}, {"after": 2}, {"after": 1, "until": 5}, {"chunk": 1}, {"chunk": 3}):
            expected = comparable(reference_blocks_with_transactions(**options))
            assert comparable(blocks_with_transactions(**options)) == expected
            assert expected


def test_a_block_without_its_transactions_is_yielded_empty(hub_chain):
    target = hub_chain[-1]
    raw_sql(
        "public",
        "DELETE FROM chain_transaction WHERE block_id = "
        "(SELECT id FROM chain_block WHERE height = %s)",
        [target],
    )
    with schema_context("public"):
        rows = dict((block.height, items) for block, items in blocks_with_transactions())
        assert rows[target] == []
        assert comparable(blocks_with_transactions()) == comparable(
            reference_blocks_with_transactions()
        )
    report = chain_verify_schema(schema_name="public", hash_only=True)
    assert (report.ok, report.first_bad_height) == (False, target)
    assert report.reason == "holds 0 transactions, header says 3"


def test_a_payload_integer_beyond_64_bits_is_read_exactly(hub_chain):
    target = hub_chain[2]
    rehash_block(
        "public", target, "jsonb_set(payload, '{last_entry}', '123456789012345678901234567890')"
    )
    with schema_context("public"):
        assert comparable(blocks_with_transactions()) == comparable(
            reference_blocks_with_transactions()
        )
        [item] = next(
            items for block, items in blocks_with_transactions() if block.height == target
        )
        assert item.payload["last_entry"] == 123456789012345678901234567890
    report = chain_verify_schema(schema_name="public", hash_only=True)
    assert report.ok, report.reason


def test_a_float_in_a_payload_is_named_as_before(hub_chain):
    target = hub_chain[1]
    rehash_block("public", target, "jsonb_set(payload, '{first_entry}', '2.5')")
    report = chain_verify_schema(schema_name="public", hash_only=True)
    assert (report.ok, report.first_bad_height) == (False, target)
    assert report.reason == (
        "transaction 0: $.payload.first_entry: floats are not allowed; "
        "encode the number as a string"
    )


def test_unicode_payloads_verify(hub_chain):
    target = hub_chain[3]
    rehash_block(
        "public", target, """jsonb_set(payload, '{tenant}', '"Zürich \\u2028 😀 \\u0001"')"""
    )
    with schema_context("public"):
        assert comparable(blocks_with_transactions()) == comparable(
            reference_blocks_with_transactions()
        )
    report = chain_verify_schema(schema_name="public", hash_only=True)
    assert report.ok, report.reason


def test_the_reader_jumps_gaps_in_the_heights(hub_chain):
    last = hub_chain[-1]
    raw_sql("public", "UPDATE chain_block SET height = 1000000 WHERE height = %s", [last])
    raw_sql("public", "UPDATE chain_block SET height = 700 WHERE height = %s", [last - 2])
    with schema_context("public"):
        for options in ({}, {"chunk": 2}, {"after": 3, "chunk": 1}, {"until": 700, "chunk": 5}):
            expected = comparable(reference_blocks_with_transactions(**options))
            assert comparable(blocks_with_transactions(**options)) == expected
        heights = [block.height for block, _ in blocks_with_transactions(chunk=2)]
        assert heights[-2:] == [700, 1000000]
    report = chain_verify_schema(schema_name="public", hash_only=True)
    assert (report.ok, report.first_bad_height) == (False, last - 2)
    assert report.reason == f"block missing (next stored is {last - 1})"
