"""The batched accept and seal paths: the fast schema check agrees with jsonschema,
the shared encoding gives the reference signing bytes and hash, COPY stores the
rows bulk_create would, and one statement seals a block as the ORM did."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context, tenant_context
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.encoding import transaction_hash, transaction_signing_bytes
from chain.merkle import merkle_root
from chain.models import (
    Block,
    ChainState,
    Outbox,
    PendingTransaction,
    RegisteredKey,
    Transaction,
)
from chain.schemas import _FAST_CHECKS, _VALIDATORS, PAYLOAD_SCHEMAS, payload_errors
from chain.selectors import chain_verify_schema
from chain.services import (
    Envelope,
    TransactionRejected,
    _signing_bytes_and_hash,
    block_seal,
    envelope_sign,
    identity_payload,
    signing_key_ensure,
    signing_key_private,
    transactions_accept,
)
from medportal.tenants.selectors import tenant_list_members
from tests.chain.helpers import anchor_payload

# --- The fast schema check -------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.0, 0.0, 2.5, -1.0]),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def _near(schema: dict) -> st.SearchStrategy:
    """Values close to what ``schema`` accepts: valid ones, and ones a step off."""
    options: list[st.SearchStrategy] = [json_values]
    if "pattern" in schema:
        options += [
            st.from_regex(schema["pattern"]),
            st.from_regex(schema["pattern"]).map(str.upper),
        ]
        options.append(st.from_regex(schema["pattern"]).map(lambda text: text + "\n"))
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    if "anyOf" in schema:
        options += [_near(option) for option in schema["anyOf"]]
    if schema.get("type") == "integer":
        options.append(st.integers(min_value=-2, max_value=3))
        options.append(st.sampled_from([True, False, 1.0, 0.0, 1.5]))
    if schema.get("type") == "array":
        options.append(st.lists(_near(schema["items"]), max_size=3))
    if schema.get("type") == "string" and "minLength" in schema:
        options.append(st.text(min_size=schema["minLength"] - 1, max_size=schema["maxLength"] + 1))
    if "properties" in schema:
        options.append(_object_near(schema))
    if isinstance(schema.get("additionalProperties"), dict):
        options.append(
            st.dictionaries(st.text(max_size=4), _near(schema["additionalProperties"]), max_size=3)
        )
    if schema.get("type") == "boolean":
        options.append(st.booleans())
    return st.one_of(options)


def _object_near(schema: dict) -> st.SearchStrategy:
    properties = schema["properties"]
    required = set(schema.get("required", ()))

    @st.composite
    def build(draw):
        value = {}
        for name, sub in properties.items():
            # required ones mostly present, optional ones sometimes
            if draw(st.integers(0, 9)) < (9 if name in required else 3):
                value[name] = draw(_near(sub))
        if draw(st.integers(0, 9)) == 0:
            value[draw(st.text(max_size=5))] = draw(json_scalars)
        return value

    return build()


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SCHEMAS))
def test_every_kind_has_a_fast_check(kind):
    assert kind in _FAST_CHECKS


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SCHEMAS))
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_fast_check_agrees_with_jsonschema(kind, data):
    payload = data.draw(_near(PAYLOAD_SCHEMAS[kind]))
    assert _FAST_CHECKS[kind](payload) is _VALIDATORS[kind].is_valid(payload)


@pytest.mark.parametrize(
    ("payload", "valid"),
    [
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 2, "root": "ab" * 32}, True),
        ({"tenant": "alpha", "first_entry": 1.0, "last_entry": 2, "root": "ab" * 32}, True),
        ({"tenant": "alpha", "first_entry": True, "last_entry": 2, "root": "ab" * 32}, False),
        ({"tenant": "alpha", "first_entry": 1.5, "last_entry": 2, "root": "ab" * 32}, False),
        ({"tenant": "alpha\n", "first_entry": 1, "last_entry": 2, "root": "ab" * 32}, True),
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 2, "root": "AB" * 32}, False),
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 2}, False),
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 2, "root": "ab" * 32, "x": 1}, False),
        (["tenant"], False),
        (None, False),
    ],
)
def test_the_fast_check_on_edge_cases(payload, valid):
    # "alpha\n" matches "^...$" under re.search, as jsonschema decides too.
    assert _VALIDATORS["anchor"].is_valid(payload) is valid
    assert _FAST_CHECKS["anchor"](payload) is valid


def test_a_data_payload_with_repeated_categories_is_refused_with_jsonschemas_words():
    payload = {
        "patient": "p" * 16,
        "record": "r1",
        "origin": "alpha",
        "categories": ["labs", "labs"],
        "levels": ["normal"],
        "ciphertexts": {"normal": "ab" * 32},
        "author": "d" * 16,
    }
    assert not _FAST_CHECKS["data"](payload)
    assert payload_errors("data", payload) == [
        "categories: ['labs', 'labs'] has non-unique elements"
    ]
    payload["categories"] = ["labs"]
    assert payload_errors("data", payload) == []


# --- One encoding for the signing bytes and the hash ------------------------------------

times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
payloads = st.dictionaries(
    st.sampled_from(["timestamp", "v", "signature", "a", "é", "\u2028", '"', "z"]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["timestamp", "v", "x"]), inner, max_size=2)
        ),
        max_leaves=5,
    ),
    max_size=5,
)
signatures = st.from_regex(r"[A-Za-z0-9+/]{86}==", fullmatch=True) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["anchor", "data", 'weird"kind']),
    author=st.text(max_size=10),
    payload=payloads,
    timestamp=times,
    signature=signatures,
)
def test_the_shared_encoding_gives_the_reference_bytes_and_hash(
    kind, author, payload, timestamp, signature
):
    envelope = Envelope(
        kind=kind, author=author, payload=payload, timestamp=timestamp, signature=signature
    )
    message, digest = _signing_bytes_and_hash(envelope)
    assert message == transaction_signing_bytes(
        kind=kind, author=author, payload=payload, timestamp=timestamp
    )
    assert digest == transaction_hash(
        kind=kind, author=author, payload=payload, timestamp=timestamp, signature=signature
    )
    assert digest == envelope.hash


# --- Accepting a batch ---------------------------------------------------------------------


def _sign(tenant, count: int, kind: str = "anchor") -> list[Envelope]:
    with tenant_context(tenant):
        key = signing_key_ensure(owner=tenant.slug)
        private = signing_key_private(key)
        return [
            envelope_sign(kind=kind, payload=anchor_payload(tenant.slug), key=key, private=private)
            for _ in range(count)
        ]


def test_a_batch_is_stored_as_the_rows_bulk_create_would_write(alpha):
    envelopes = _sign(alpha, 30)
    accepted = transactions_accept(envelopes=envelopes, submitted_by="alpha")
    assert [row.hash for row in accepted] == [envelope.hash for envelope in envelopes]
    ids = [row.pk for row in accepted]
    assert ids == sorted(ids) and len(set(ids)) == 30
    with schema_context("public"):
        stored = list(PendingTransaction.objects.filter(id__in=ids).order_by("id"))
    assert [row.pk for row in stored] == ids
    for row, envelope in zip(stored, envelopes, strict=True):
        assert row.envelope() == envelope.fields()
        assert row.hash == envelope.hash
        assert row.submitted_by == "alpha"
        assert abs(row.received_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert all(not row._state.adding for row in accepted)


@pytest.mark.parametrize("position", [0, 17, 29])
def test_one_bad_envelope_refuses_the_batch_naming_its_position(alpha, position):
    envelopes = _sign(alpha, 30)
    envelopes[position] = dataclasses.replace(envelopes[position], signature=envelopes[0].signature)
    if position == 0:
        envelopes[0] = dataclasses.replace(envelopes[0], signature=envelopes[1].signature)
    with schema_context("public"):
        before = PendingTransaction.objects.count()
    with pytest.raises(TransactionRejected, match=f"^transaction {position}: the signature"):
        transactions_accept(envelopes=envelopes, submitted_by="alpha")
    with schema_context("public"):
        assert PendingTransaction.objects.count() == before


def test_a_float_in_a_payload_is_refused_with_the_encoding_reason(alpha):
    [envelope] = _sign(alpha, 1)
    payload = {**envelope.payload, "first_entry": 1.0}  # a valid integer to jsonschema
    bad = dataclasses.replace(envelope, payload=payload)
    with pytest.raises(TransactionRejected, match=r"malformed payload: .*floats are not allowed"):
        transactions_accept(envelopes=[bad], submitted_by="alpha")


def test_duplicates_within_the_batch_pending_or_sealed_are_refused(alpha):
    envelopes = _sign(alpha, 3)
    with pytest.raises(TransactionRejected, match="already submitted"):
        transactions_accept(envelopes=[*envelopes, envelopes[1]], submitted_by="alpha")
    transactions_accept(envelopes=envelopes[:1], submitted_by="alpha")
    with pytest.raises(TransactionRejected, match="already submitted"):  # pending
        transactions_accept(envelopes=envelopes, submitted_by="alpha")
    block_seal(force=True)
    with pytest.raises(TransactionRejected, match="already submitted"):  # sealed
        transactions_accept(envelopes=envelopes[::-1], submitted_by="alpha")
    transactions_accept(envelopes=envelopes[1:], submitted_by="alpha")


# --- Sealing ----------------------------------------------------------------------------


@override_settings(CHAIN_MAX_TRANSACTIONS_PER_BLOCK=100)
def test_a_batch_of_100_is_sealed_in_order_into_one_block(alpha):
    envelopes = _sign(alpha, 100)
    transactions_accept(envelopes=envelopes, submitted_by="alpha")
    [height] = block_seal(force=True)
    with schema_context("public"):
        block = Block.objects.get(height=height)
        rows = list(Transaction.objects.filter(block=block).order_by("index"))
        members = set(tenant_list_members().values_list("id", flat=True))
        outbox = list(Outbox.objects.filter(block=block))
        state = ChainState.objects.get(id=1)
        assert not PendingTransaction.objects.exists()
    assert [row.index for row in rows] == list(range(100))
    assert [row.hash for row in rows] == [envelope.hash for envelope in envelopes]
    assert [row.envelope() for row in rows] == [envelope.fields() for envelope in envelopes]
    assert all(row.encoding_version == 1 for row in rows)
    assert block.transaction_count == 100
    assert block.merkle_root == merkle_root([envelope.hash for envelope in envelopes])
    assert {row.tenant_id for row in outbox} == members and len(outbox) == len(members)
    assert all(row.attempts == 0 and row.sent_at is None for row in outbox)
    assert (state.height, state.head_hash) == (block.height, block.hash)
    assert chain_verify_schema(schema_name="public").ok


def test_identity_transactions_in_a_sealed_batch_update_the_key_registry(alpha):
    with tenant_context(alpha):
        own = signing_key_ensure(owner="alpha")
        private = signing_key_private(own)
        patients = [signing_key_ensure(owner=f"patient-{n}") for n in range(3)]
        envelopes = [
            envelope_sign(
                kind="identity",
                payload=identity_payload(
                    subject_type="patient",
                    subject=f"pseudonym-{n:04d}",
                    tenant="alpha",
                    tenant_kind="hospital",
                    key=key,
                ),
                key=own,
                private=private,
            )
            for n, key in enumerate(patients)
        ]
    transactions_accept(envelopes=[*envelopes, *_sign(alpha, 2)], submitted_by="alpha")
    [height] = block_seal(force=True)
    with schema_context("public"):
        registered = RegisteredKey.objects.filter(key_id__in=[key.key_id for key in patients])
        assert {(key.owner, key.registered_height) for key in registered} == {
            (f"pseudonym-{n:04d}", height) for n in range(3)
        }
    assert chain_verify_schema(schema_name="public").ok
