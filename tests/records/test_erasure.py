"""Erasure (crypto-shredding): an admin destroys a record's data keys, with a reason."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

import chain.services
from accounts.models import User
from chain.models import PendingTransaction, Transaction
from records.models import Patient, Record, RecordIndex, RecordSection
from records.selectors import patient_history_for_user, record_view_for_user
from records.services import (
    identity_clean,
    patient_create,
    record_create,
    record_erase,
    record_store,
)
from tests.conftest import login_client

pytestmark = pytest.mark.django_db

CONTENT = {
    "encounter": {
        "visit_date": "2024-03-10",
        "department": "Psychiatry",
        "chief_complaint": "Erasure check low mood",
    },
    "diagnoses": [{"code": "F32.1", "text": "Erasure check", "category": "mental_health"}],
    "medications": [
        {
            "drug": "Sertraline",
            "dose": "50 mg",
            "route": "oral",
            "frequency": "daily",
            "start": "2024-03-10",
        }
    ],
}


@pytest.fixture(autouse=True)
def _no_seal_task(monkeypatch):
    """Commit callbacks run in these tests; the hub's seal task is not sent to a worker."""
    monkeypatch.setattr(chain.services, "_schedule_seal", lambda accepted: None)


def _user(username: str) -> User:
    return User.objects.get(username=username)


def _patient_with_record(username: str = "") -> tuple[Patient, Record]:
    doctor = _user("alpha-doctor")
    patient = patient_create(
        actor=doctor,
        identity=identity_clean(
            given_name="Era",
            family_name="Sure",
            sex="male",
            birth_date=date(1975, 6, 7),
            record_number=f"ERA-{uuid.uuid4().hex[:10]}",
        ),
        username=username,
        password="a-long-enough-password-42" if username else "",
    )
    return patient, record_create(author=doctor, patient=patient, content=CONTENT)


def _hub_transaction(tx_hash: str):
    with schema_context(get_public_schema_name()):
        found = PendingTransaction.objects.filter(hash=tx_hash).first()
        return found or Transaction.objects.filter(hash=tx_hash).first()


def _assert_untouched(record: Record) -> None:
    record.refresh_from_db()
    assert not record.is_erased and not record.erasure_reason
    sections = record.sections.all()
    assert all(s.tenant_wrap and s.patient_wrap and s.kek_version for s in sections)
    store = record_store()
    assert all(store.exists(s.sha256) for s in sections)
    assert RecordIndex.objects.filter(record=record).exists()


def test_admin_erases_a_record(alpha, django_capture_on_commit_callbacks):
    with tenant_context(alpha):
        patient, record = _patient_with_record(username=f"erase-{uuid.uuid4().hex[:8]}")
        store = record_store()
        hashes = [section.sha256 for section in record.sections.all()]
        assert hashes and all(store.exists(name) for name in hashes)

        with django_capture_on_commit_callbacks(execute=True):
            record_erase(
                actor=_user("alpha-admin"), record=record, reason="Filed for wrong patient"
            )

        record.refresh_from_db()
        assert record.is_erased
        assert record.erasure_reason == "Filed for wrong patient"
        assert record.erased_by == _user("alpha-admin")
        for section in RecordSection.objects.filter(record=record):
            assert section.tenant_wrap is None
            assert section.patient_wrap is None
            assert section.kek_version is None
        assert not RecordIndex.objects.filter(record=record).exists()
        assert not any(store.exists(name) for name in hashes)

        staff_view = record_view_for_user(user=_user("alpha-doctor"), record_id=record.id)
        assert staff_view.is_erased and staff_view.content is None
        assert staff_view.erasure_reason == "Filed for wrong patient"
        assert not staff_view.errors and not staff_view.attachments
        (own,) = patient_history_for_user(user=patient.user)
        assert own.is_erased and own.content is None
        assert own.erasure_reason == "Filed for wrong patient"

    marker = _hub_transaction(record.erasure_tx_hash)
    assert marker is not None
    assert marker.payload["erased"] is True
    assert marker.payload["record"] == str(record.id)
    assert marker.payload["ciphertexts"] == {}
    original = _hub_transaction(record.tx_hash)
    assert original is not None
    assert sorted(original.payload["ciphertexts"].values()) == sorted(hashes)


def test_a_doctor_cannot_erase(alpha, django_capture_on_commit_callbacks):
    with tenant_context(alpha):
        _, record = _patient_with_record()
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(PermissionDenied):
            record_erase(actor=_user("alpha-doctor"), record=record, reason="I would like to")
        _assert_untouched(record)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_reason_is_required(alpha, django_capture_on_commit_callbacks, reason):
    with tenant_context(alpha):
        _, record = _patient_with_record()
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError):
            record_erase(actor=_user("alpha-admin"), record=record, reason=reason)
        _assert_untouched(record)


def test_a_record_is_erased_once(alpha):
    with tenant_context(alpha):
        _, record = _patient_with_record()
        record_erase(actor=_user("alpha-admin"), record=record, reason="first")
        with pytest.raises(ValidationError, match="already erased"):
            record_erase(actor=_user("alpha-admin"), record=record, reason="second")
        record.refresh_from_db()
        assert record.erasure_reason == "first"


# --- Through the admin site ------------------------------------------------------------

CHANGELIST = "/admin/records/record/"


def test_admin_action_asks_for_a_reason_then_erases(alpha, django_capture_on_commit_callbacks):
    with tenant_context(alpha):
        _, record = _patient_with_record()
        hashes = [section.sha256 for section in record.sections.all()]
    client = login_client(alpha, "alpha-admin")

    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assert str(record.id) in listing.content.decode()
    assert "Erase selected records" in listing.content.decode()

    chosen = {"action": "erase_selected", "_selected_action": [str(record.id)], "index": "0"}
    confirm = client.post(CHANGELIST, chosen)
    assert confirm.status_code == 200
    assert "admin/records/erase_confirmation.html" in [t.name for t in confirm.templates]
    assert str(record.id) in confirm.content.decode()
    with tenant_context(alpha):
        _assert_untouched(record)

    without_reason = {
        "action": "erase_selected",
        "_selected_action": [str(record.id)],
        "post": "yes",
        "reason": "  ",
    }
    refused = client.post(CHANGELIST, without_reason)
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    with tenant_context(alpha):
        _assert_untouched(record)

    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(CHANGELIST, {**without_reason, "reason": "Duplicate entry"})
    assert done.status_code == 302
    with tenant_context(alpha):
        record.refresh_from_db()
        assert record.is_erased and record.erasure_reason == "Duplicate entry"
        assert record.erased_by.username == "alpha-admin"
        assert not any(record_store().exists(name) for name in hashes)
        assert not RecordSection.objects.filter(record=record, tenant_wrap__isnull=False).exists()
    assert "Erased 1 record(s)" in client.get(CHANGELIST).content.decode()


def test_records_are_read_only_in_the_admin(alpha):
    with tenant_context(alpha):
        _, record = _patient_with_record()
    client = login_client(alpha, "alpha-admin")
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    detail = client.get(f"{CHANGELIST}{record.id}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert client.post(f"{CHANGELIST}{record.id}/delete/", {"post": "yes"}).status_code == 403
    with tenant_context(alpha):
        assert Record.objects.filter(pk=record.pk).exists()


def test_patient_admin_shows_no_identity(alpha):
    client = login_client(alpha, "alpha-admin")
    response = client.get("/admin/records/patient/")
    assert response.status_code == 200
    page = response.content.decode()
    with tenant_context(alpha):
        li_wei = Patient.objects.get(user__username="alpha-patient")
    assert li_wei.pseudonym in page
    assert "Wei" not in page
    assert client.get("/admin/records/patient/add/").status_code == 403


def test_a_doctor_cannot_use_the_admin(alpha):
    with tenant_context(alpha):
        _, record = _patient_with_record()
    client = login_client(alpha, "alpha-doctor")
    response = client.post(
        CHANGELIST,
        {
            "action": "erase_selected",
            "_selected_action": [str(record.id)],
            "post": "yes",
            "reason": "not allowed",
        },
    )
    assert response.status_code == 302 and "/login/" in response["Location"]
    with tenant_context(alpha):
        _assert_untouched(record)
