"""Entries are hash-chained, append-only and free of record content."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import threading

import pytest
from django.db import IntegrityError, connection, models, transaction
from django_tenants.utils import tenant_context

from chain.encoding import GENESIS_PREVIOUS_HASH, format_time
from consent.models import AccessLogAnchor, AccessLogEntry
from consent.selectors import access_log_verify
from consent.services import AccessLogError, access_log_anchor, access_log_append
from tests.consent.helpers import append_entries, raw_sql


def _entries(tenant) -> list[AccessLogEntry]:
    with tenant_context(tenant):
        return list(AccessLogEntry.objects.order_by("id"))


def test_each_entry_links_to_the_one_before(alpha):
    before = _entries(alpha)
    appended = append_entries(alpha, 3)
    after = _entries(alpha)
    assert [entry.id for entry in after] == [entry.id for entry in before + appended]
    chain = after[len(before) - 1 :] if before else after
    if not before:
        assert chain[0].previous_hash == GENESIS_PREVIOUS_HASH
    for earlier, later in itertools.pairwise(chain):
        assert later.previous_hash == earlier.hash
        assert later.id > earlier.id


def test_the_hash_is_sha256_over_the_canonical_fields(alpha):
    [entry] = append_entries(alpha, 1, sections=["summary"], is_emergency=True, purpose="emergency")
    with tenant_context(alpha):
        stored = AccessLogEntry.objects.get(id=entry.id)
    body = {
        "id": stored.id,
        "created_at": format_time(stored.created_at),
        "reader_name": "Dr Ada Alpha",
        "reader_role": "doctor",
        "reader_tenant": "beta",
        "reader_tenant_name": "Beta University Hospital",
        "reader_pseudonym": "",
        "patient_pseudonym": stored.patient_pseudonym,
        "record_id": stored.record_id,
        "sections": ["summary"],
        "purpose": "emergency",
        "decision": "allow",
        "reason": stored.reason,
        "is_emergency": True,
        "previous_hash": stored.previous_hash,
    }
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert stored.hash == hashlib.sha256(encoded.encode()).hexdigest()
    assert stored.hash == entry.hash


def test_the_first_entry_starts_from_the_genesis_hash(beta):
    with tenant_context(beta):
        had_entries = AccessLogEntry.objects.exists()
    [entry] = append_entries(beta, 1)
    if not had_entries:
        assert entry.previous_hash == GENESIS_PREVIOUS_HASH


def test_update_and_delete_are_refused_by_the_trigger(alpha):
    [entry] = append_entries(alpha, 1)
    with tenant_context(alpha):
        for attempt in (
            lambda: AccessLogEntry.objects.filter(id=entry.id).update(reason="grant:other"),
            lambda: AccessLogEntry.objects.filter(id=entry.id).delete(),
        ):
            with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
                attempt()
        stored = AccessLogEntry.objects.get(id=entry.id)
        assert (stored.reason, stored.hash) == (entry.reason, entry.hash)


def test_truncate_and_anchor_changes_are_refused_by_the_trigger(alpha):
    append_entries(alpha, 2)
    anchor = access_log_anchor(tenant=alpha)
    with tenant_context(alpha):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            AccessLogAnchor.objects.filter(id=anchor.id).update(root="0" * 64)
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            AccessLogAnchor.objects.filter(id=anchor.id).delete()
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE consent_accesslogentry CASCADE")
        assert AccessLogAnchor.objects.get(id=anchor.id).root == anchor.root


def test_a_second_first_entry_is_refused_by_the_database(alpha):
    """The chain cannot fork: each hash has at most one successor."""
    [entry] = append_entries(alpha, 1)
    with tenant_context(alpha):
        with pytest.raises(IntegrityError), transaction.atomic():
            AccessLogEntry.objects.create(
                reader_name="x",
                reader_role="doctor",
                reader_tenant="alpha",
                reader_tenant_name="Alpha General Hospital",
                patient_pseudonym="p",
                purpose="treatment",
                decision="allow",
                previous_hash=entry.previous_hash,
                hash="f" * 64,
            )


def test_only_a_hospital_keeps_an_access_log(northwind, hub):
    fields = {
        "reader_name": "Nora North",
        "reader_role": "researcher",
        "reader_tenant": "northwind",
        "reader_tenant_name": "Northwind Research Institute",
        "patient_pseudonym": "a" * 64,
        "purpose": "research",
        "decision": "deny",
        "reason": "no-grant",
    }
    with tenant_context(northwind), pytest.raises(AccessLogError):
        access_log_append(**fields)
    with tenant_context(hub), pytest.raises(AccessLogError):
        access_log_append(**fields)
    with pytest.raises(AccessLogError):
        access_log_anchor(tenant=northwind)


def test_an_unknown_purpose_or_decision_is_refused_and_nothing_is_written(alpha):
    before = len(_entries(alpha))
    for bad in ({"purpose": "curiosity"}, {"decision": "maybe"}, {"sections": [1]}):
        with pytest.raises(AccessLogError):
            append_entries(alpha, 1, **bad)
    assert len(_entries(alpha)) == before


def test_an_entry_cannot_hold_record_content(alpha):
    """The service takes identifiers only, and the one free-text column is the
    reason, which the read path fills with identifiers (as these tests do)."""
    parameters = set(inspect.signature(access_log_append).parameters)
    assert parameters == {
        "reader_name",
        "reader_role",
        "reader_tenant",
        "reader_tenant_name",
        "reader_pseudonym",
        "patient_pseudonym",
        "record_id",
        "sections",
        "purpose",
        "decision",
        "reason",
        "is_emergency",
    }
    text_fields = [
        field.name
        for field in AccessLogEntry._meta.get_fields()
        if isinstance(field, models.TextField)
    ]
    assert text_fields == ["reason"]
    bounded = {
        field.name: field.max_length
        for field in AccessLogEntry._meta.get_fields()
        if isinstance(field, models.CharField)
    }
    assert all(length <= 200 for length in bounded.values())
    [entry] = append_entries(alpha, 1, reason="default:own-hospital")
    assert entry.reason == "default:own-hospital"


def test_concurrent_appends_form_one_chain(committed, django_db_blocker):
    """Writers on separate connections at once: every entry links to the one
    before, in id order, with no fork. Commits, so cleans up after itself."""
    alpha = committed["alpha"]
    with django_db_blocker.unblock():
        with tenant_context(alpha):
            start = AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first()
        start = start or 0
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                append_entries(alpha, 5)
            except BaseException as error:
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=writer) for _ in range(4)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            with tenant_context(alpha):
                new = list(AccessLogEntry.objects.filter(id__gt=start).order_by("id"))
            assert len(new) == 20
            for earlier, later in itertools.pairwise(new):
                assert later.previous_hash == earlier.hash
            report = access_log_verify(tenant=alpha)
            assert (report.ok, report.reason) == (True, "")
        finally:
            raw_sql(alpha.schema_name, "DELETE FROM consent_accesslogentry WHERE id > %s", [start])
            connection.set_schema_to_public()


def test_a_batch_is_appended_in_order_linked_like_single_entries(alpha):
    from consent.services import access_log_append_many

    [first] = append_entries(alpha, 1)
    fields = {
        "reader_name": "Dr Ada Alpha",
        "reader_role": "doctor",
        "reader_tenant": "alpha",
        "reader_tenant_name": "Alpha General Hospital",
        "patient_pseudonym": "b" * 64,
        "purpose": "treatment",
        "decision": "allow",
    }
    with tenant_context(alpha):
        batch = access_log_append_many(
            [{**fields, "record_id": f"rec-batch-{n}", "reason": f"r{n}"} for n in range(3)]
        )
        assert access_log_append_many([]) == []
        with pytest.raises(AccessLogError):
            access_log_append_many([fields | {"reason": "x"}, fields | {"purpose": "curiosity"}])
    [last] = append_entries(alpha, 1)
    chain = [first, *batch, last]
    stored = {entry.id: entry for entry in _entries(alpha)}
    for earlier, later in itertools.pairwise(chain):
        assert later.id > earlier.id
        assert stored[later.id].previous_hash == stored[earlier.id].hash
    assert [stored[entry.id].record_id for entry in batch] == [f"rec-batch-{n}" for n in range(3)]
    assert access_log_verify(tenant=alpha).ok
