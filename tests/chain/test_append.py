"""Submitting to the hub: what is accepted, what is refused, how blocks are cut."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError, InternalError
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from chain.keys import KeyUnavailable, open_private_key
from chain.models import Block, ChainState, Outbox, PendingTransaction, SigningKey
from chain.selectors import chain_verify_schema
from chain.services import (
    TransactionRejected,
    block_seal,
    envelope_sign,
    signing_key_ensure,
    transaction_accept,
    transaction_submit,
)
from tests.chain.helpers import anchor_payload, counts


def test_a_signed_transaction_is_sealed_into_a_block_with_one_outbox_row_per_tenant(alpha):
    before = counts("public")
    pending = transaction_submit(tenant=alpha, kind="anchor", payload=anchor_payload("alpha"))
    assert counts("public") == (before[0], before[1], before[2] + 1)
    [height] = block_seal(force=True)
    with schema_context("public"):
        block = Block.objects.get(height=height)
        assert [t.hash for t in block.transactions.all()] == [pending.hash]
        assert block.proposer == "hub"
        assert ChainState.objects.get(id=1).head_hash == block.hash
        outbox = set(Outbox.objects.filter(block=block).values_list("tenant__slug", flat=True))
    assert {"alpha", "beta", "northwind"} <= outbox
    assert "hub" not in outbox
    assert counts("public") == (before[0] + 1, before[1] + 1, before[2])
    assert chain_verify_schema(schema_name="public").ok


@override_settings(CHAIN_MAX_TRANSACTIONS_PER_BLOCK=10, CHAIN_MAX_BLOCK_WAIT_MS=60_000)
def test_blocks_are_cut_at_the_maximum_size_and_the_rest_waits(alpha):
    for _ in range(25):
        transaction_submit(tenant=alpha, kind="anchor", payload=anchor_payload("alpha"))
    heights = block_seal()
    with schema_context("public"):
        assert [Block.objects.get(height=h).transaction_count for h in heights] == [10, 10]
        assert PendingTransaction.objects.count() == 5


@override_settings(CHAIN_MAX_TRANSACTIONS_PER_BLOCK=10, CHAIN_MAX_BLOCK_WAIT_MS=200)
def test_a_partial_block_is_sealed_once_its_oldest_transaction_waited_long_enough(alpha):
    for _ in range(3):
        transaction_submit(tenant=alpha, kind="anchor", payload=anchor_payload("alpha"))
    assert block_seal() == []
    with schema_context("public"):
        PendingTransaction.objects.update(received_at=timezone.now() - timedelta(seconds=1))
    [height] = block_seal()
    with schema_context("public"):
        assert Block.objects.get(height=height).transaction_count == 3


def envelope_for(tenant, payload=None, kind="anchor"):
    with tenant_context(tenant):
        key = signing_key_ensure(owner=tenant.slug)
        return envelope_sign(kind=kind, payload=payload or anchor_payload(tenant.slug), key=key)


def assert_refused(envelope, submitted_by: str, reason: str) -> None:
    before = counts("public")
    with pytest.raises(TransactionRejected) as refused:
        transaction_accept(envelope=envelope, submitted_by=submitted_by)
    assert reason in str(refused.value)
    assert counts("public") == before


def test_a_bad_signature_is_refused_and_nothing_is_appended(alpha):
    envelope = envelope_for(alpha)
    forged = dataclasses.replace(envelope, payload={**envelope.payload, "last_entry": 999})
    assert_refused(forged, "alpha", "the signature does not match the transaction")


def test_an_unknown_key_is_refused(alpha):
    with tenant_context(alpha):
        stranger = signing_key_ensure(owner="not-registered")
        envelope = envelope_sign(kind="anchor", payload=anchor_payload("alpha"), key=stranger)
    assert_refused(envelope, "alpha", "unknown or revoked author key")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 1}, "'root' is a required property"),
        ({"tenant": "alpha", "first_entry": 1, "last_entry": 1, "root": "xyz"}, "root: 'xyz'"),
        (
            {
                "tenant": "alpha",
                "first_entry": 1,
                "last_entry": 1,
                "root": "ab" * 32,
                "patient_name": "Li Wei",
            },
            "Additional properties are not allowed",
        ),
        (
            {"tenant": "alpha", "first_entry": 0, "last_entry": 1, "root": "ab" * 32},
            "first_entry: 0 is less than the minimum of 1",
        ),
    ],
)
def test_a_malformed_payload_is_refused(alpha, payload, reason):
    assert_refused(envelope_for(alpha, payload), "alpha", reason)


def test_an_unknown_kind_is_refused(alpha):
    envelope = dataclasses.replace(envelope_for(alpha), kind="gossip")
    assert_refused(envelope, "alpha", "unknown transaction kind 'gossip'")


def test_a_research_organisation_may_not_author_data(northwind):
    payload = {
        "patient": "p" * 16,
        "record": "r1",
        "origin": "northwind",
        "categories": ["labs"],
        "levels": ["normal"],
        "ciphertexts": {"normal": "ab" * 32},
        "author": "d" * 16,
    }
    assert_refused(
        envelope_for(northwind, payload, kind="data"),
        "northwind",
        "may not author 'data' transactions",
    )


def test_a_tenant_cannot_submit_another_tenants_transaction(alpha):
    assert_refused(envelope_for(alpha), "beta", "does not belong to the submitting tenant")


def test_the_same_transaction_twice_is_refused(alpha):
    envelope = envelope_for(alpha)
    transaction_accept(envelope=envelope, submitted_by="alpha")
    assert_refused(envelope, "alpha", "already submitted")


def test_only_the_hub_registers_tenants(alpha):
    from chain.services import identity_payload

    with tenant_context(alpha):
        own = signing_key_ensure(owner="alpha")
        sneaky = signing_key_ensure(owner="sneaky")
        payload = identity_payload(
            subject_type="tenant",
            subject="sneaky",
            tenant="alpha",
            tenant_kind="hospital",
            key=sneaky,
        )
        envelope = envelope_sign(kind="identity", payload=payload, key=own)
    assert_refused(envelope, "alpha", "only the hub registers tenants")


@pytest.mark.parametrize("schema", ["public", "alpha"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE chain_block SET proposer = 'mallory' WHERE height = 0",
        "DELETE FROM chain_transaction",
        "DELETE FROM chain_block WHERE height = 0",
        "TRUNCATE chain_block CASCADE",
    ],
)
def test_the_database_refuses_to_change_blocks(db, schema, statement):
    with schema_context(schema):
        before = (Block.objects.count(), Block.objects.get(height=0).proposer)
        with pytest.raises((IntegrityError, InternalError)) as refused:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement)
        assert "the ledger is append-only" in str(refused.value)
        assert (Block.objects.count(), Block.objects.get(height=0).proposer) == before


def test_private_keys_are_stored_encrypted_and_need_the_master_key(alpha, settings):
    from chain.keys import private_key_raw
    from chain.services import signing_key_private

    with tenant_context(alpha):
        key = SigningKey.objects.get(owner="alpha", is_active=True)
    raw = private_key_raw(signing_key_private(key))
    assert raw.hex() not in key.sealed_private_key
    assert raw not in key.sealed_private_key.encode()
    import base64

    assert raw not in base64.b64decode(key.sealed_private_key)
    settings.MEDPORTAL_MASTER_KEY = base64.b64encode(b"another-master-key-of-32-bytes!!").decode()
    with pytest.raises(KeyUnavailable):
        open_private_key(
            sealed=key.sealed_private_key, owner="alpha", key_id=key.key_id, version=key.key_version
        )
