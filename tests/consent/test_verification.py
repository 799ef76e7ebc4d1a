"""A changed, deleted or rewritten access-log entry is found and named."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chain.merkle import merkle_root, verify_inclusion
from chain.models import PendingTransaction, Transaction
from chain.services import block_seal
from consent.models import AccessLogAnchor, AccessLogEntry, access_log_entry_hash
from consent.selectors import access_log_inclusion_proof, access_log_verify
from consent.services import access_log_anchor, access_log_anchor_hospitals
from consent.tasks import access_log_anchor_task
from tests.consent.helpers import append_entries, raw_sql


def _verify_command(**options) -> str:
    out = StringIO()
    call_command("verify_access_log", stdout=out, **options)
    return out.getvalue()


def test_an_intact_log_verifies(alpha):
    append_entries(alpha, 4)
    access_log_anchor(tenant=alpha)
    append_entries(alpha, 2)
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.first_bad_entry, report.reason) == (True, None, "")
    with tenant_context(alpha):
        assert report.entries_checked == AccessLogEntry.objects.count()
        assert report.anchors_checked == AccessLogAnchor.objects.count()
    output = _verify_command()
    assert "alpha" in output and "beta" in output and "northwind" not in output


def test_a_changed_entry_is_found_by_id_and_by_the_command(alpha):
    entries = append_entries(alpha, 5)
    target = entries[2]
    raw_sql(
        "alpha",
        "UPDATE consent_accesslogentry SET decision = 'deny' WHERE id = %s",
        [target.id],
    )
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.first_bad_entry, report.reason) == (
        False,
        target.id,
        "entry hash does not match its contents",
    )
    assert access_log_verify(tenant=alpha).anchor_problems == []  # nothing anchored yet
    with pytest.raises(CommandError) as raised:
        _verify_command()
    assert raised.value.returncode == 1
    assert str(raised.value) == (
        f"alpha: first bad entry {target.id}: entry hash does not match its contents"
    )


def test_a_deleted_entry_is_found_at_the_entry_after_it(alpha):
    entries = append_entries(alpha, 4)
    raw_sql("alpha", "DELETE FROM consent_accesslogentry WHERE id = %s", [entries[1].id])
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.first_bad_entry) == (False, entries[2].id)
    assert report.reason.startswith("previous_hash does not link to the entry before it")


def test_deleting_the_first_entries_is_found(alpha):
    entries = append_entries(alpha, 3)
    raw_sql("alpha", "DELETE FROM consent_accesslogentry WHERE id <= %s", [entries[0].id])
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.first_bad_entry) == (False, entries[1].id)
    assert report.reason.startswith("the first entry does not start the chain")


def test_a_gap_in_ids_from_a_rolled_back_append_is_not_an_error(alpha):
    from django.db import transaction

    append_entries(alpha, 1)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        append_entries(alpha, 1)
        raise Rollback
    append_entries(alpha, 1)
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.reason) == (True, "")


def test_an_anchor_submits_the_merkle_root_of_its_entries(alpha):
    with tenant_context(alpha):
        last = AccessLogAnchor.objects.order_by("-last_entry").first()
    entries = append_entries(alpha, 5)
    anchor = access_log_anchor(tenant=alpha)
    if last is None:
        with tenant_context(alpha):
            expected = list(AccessLogEntry.objects.order_by("id").values_list("hash", flat=True))
    else:
        expected = [entry.hash for entry in entries]
    assert (anchor.last_entry, anchor.root) == (entries[-1].id, merkle_root(expected))
    with schema_context(get_public_schema_name()):
        pending = PendingTransaction.objects.get(hash=anchor.tx_hash)
    assert pending.kind == "anchor"
    assert pending.payload == {
        "tenant": "alpha",
        "first_entry": anchor.first_entry,
        "last_entry": anchor.last_entry,
        "root": anchor.root,
    }
    assert access_log_anchor(tenant=alpha) is None  # nothing new to anchor


def test_the_beat_service_anchors_every_hospital(alpha, beta):
    append_entries(alpha, 2)
    append_entries(beta, 1)
    assert access_log_anchor_task() == 2  # run in this process, as beat's worker would
    assert access_log_anchor_hospitals() == 0


def test_a_tampered_entry_is_reported_against_its_anchor(alpha):
    entries = append_entries(alpha, 6)
    anchor = access_log_anchor(tenant=alpha)
    block_seal(force=True)
    raw_sql(
        "alpha",
        "UPDATE consent_accesslogentry SET sections = '[\"summary\"]' WHERE id = %s",
        [entries[3].id],
    )
    report = access_log_verify(tenant=alpha)
    assert (report.ok, report.first_bad_entry) == (False, entries[3].id)
    [problem] = report.anchor_problems
    assert (problem.first_entry, problem.last_entry) == (anchor.first_entry, anchor.last_entry)
    assert problem.reason == (
        "the entries do not give the anchored root; "
        f"the entries do not match anchor transaction {anchor.tx_hash}"
    )


def test_a_rewrite_that_rehashes_every_later_entry_is_caught_by_the_anchor(alpha):
    """Links and hashes all check out after such a rewrite; only the root on the
    chain (which the attacker cannot re-sign) gives it away."""
    entries = append_entries(alpha, 4)
    anchor = access_log_anchor(tenant=alpha)
    block_seal(force=True)
    with tenant_context(alpha):
        rows = list(AccessLogEntry.objects.filter(id__gte=entries[1].id).order_by("id"))
    previous_hash = entries[0].hash
    for row in rows:
        if row.id == entries[1].id:
            row.decision = "deny"
        row.previous_hash = previous_hash
        row.hash = access_log_entry_hash(row.hashed_values())
        previous_hash = row.hash
    # Unique hashes and links: move every rewritten row out of the way first.
    raw_sql(
        "alpha",
        "UPDATE consent_accesslogentry SET hash = md5(id::text) || md5(id::text), "
        "previous_hash = md5(id::text || 'p') || md5(id::text || 'p') WHERE id >= %s",
        [entries[1].id],
    )
    for row in rows:
        raw_sql(
            "alpha",
            "UPDATE consent_accesslogentry SET decision = %s, previous_hash = %s, hash = %s "
            "WHERE id = %s",
            [row.decision, row.previous_hash, row.hash, row.id],
        )
    report = access_log_verify(tenant=alpha)
    assert report.first_bad_entry is None
    assert not report.ok
    [problem] = report.anchor_problems
    assert (problem.first_entry, problem.last_entry) == (anchor.first_entry, anchor.last_entry)
    with pytest.raises(CommandError) as raised:
        _verify_command(tenant="alpha")
    assert raised.value.returncode == 1
    assert str(raised.value).startswith(
        f"alpha: anchor mismatch: anchor {anchor.first_entry}-{anchor.last_entry}: "
    )


def test_a_changed_anchor_row_is_found(alpha):
    append_entries(alpha, 2)
    anchor = access_log_anchor(tenant=alpha)
    raw_sql(
        "alpha",
        "UPDATE consent_accessloganchor SET root = %s WHERE id = %s",
        ["e" * 64, anchor.id],
    )
    report = access_log_verify(tenant=alpha)
    [problem] = report.anchor_problems
    assert problem.reason == "the entries do not give the anchored root"


def test_an_inclusion_proof_verifies_against_the_root_on_the_chain(alpha):
    entries = append_entries(alpha, 7)
    anchor = access_log_anchor(tenant=alpha)
    assert access_log_inclusion_proof(tenant=alpha, entry_id=entries[4].id).block_height is None
    [height] = block_seal(force=True)
    proof = access_log_inclusion_proof(tenant=alpha, entry_id=entries[4].id)
    assert (proof.entry_hash, proof.tx_hash, proof.block_height) == (
        entries[4].hash,
        anchor.tx_hash,
        height,
    )
    with schema_context(get_public_schema_name()):
        on_chain = Transaction.objects.get(hash=anchor.tx_hash).payload["root"]
    assert proof.root == on_chain
    assert verify_inclusion(proof.entry_hash, proof.index, proof.size, proof.path, on_chain)
    assert not verify_inclusion(entries[3].hash, proof.index, proof.size, proof.path, on_chain)
    [unanchored] = append_entries(alpha, 1)
    assert access_log_inclusion_proof(tenant=alpha, entry_id=unanchored.id) is None


def test_the_command_names_an_unknown_or_non_hospital_tenant(db):
    with pytest.raises(CommandError, match="no tenant with slug 'nowhere'") as raised:
        _verify_command(tenant="nowhere")
    assert raised.value.returncode == 2
    with pytest.raises(CommandError, match="'northwind' is not a hospital"):
        _verify_command(tenant="northwind")
