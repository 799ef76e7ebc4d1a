"""Every read of a record, and every refused attempt, lands in the access log of
the hospital that holds the record."""

from __future__ import annotations

import pytest
from django.http import Http404
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.models import AccessLogEntry
from records.models import Patient
from records.selectors import patient_history_for_user, record_view_for_user, records_for_staff
from tests.conftest import login_client

pytestmark = pytest.mark.django_db


def _last_id(tenant) -> int:
    with tenant_context(tenant):
        return AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _new_entries(tenant, after: int) -> list[AccessLogEntry]:
    with tenant_context(tenant):
        return list(AccessLogEntry.objects.filter(id__gt=after).order_by("id"))


def test_a_doctor_reading_a_chart_is_logged_per_record(alpha):
    before = _last_id(alpha)
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        li = Patient.objects.get(user__username="alpha-patient")
        views = records_for_staff(user=doctor, patient=li)
    entries = _new_entries(alpha, before)
    assert sorted(entry.record_id for entry in entries) == sorted(view.id for view in views)
    assert {
        (e.reader_name, e.reader_role, e.reader_tenant, e.purpose, e.decision) for e in entries
    } == {("Ana Alvarez", "doctor", "alpha", "treatment", "allow")}
    assert all(entry.patient_pseudonym == li.pseudonym for entry in entries)
    # alpha-doctor wrote every demo entry of Li Wei at alpha.
    assert all(entry.reason == "default:author" for entry in entries)


def test_an_admin_reads_by_the_own_hospital_rule_for_administration(alpha):
    before = _last_id(alpha)
    with tenant_context(alpha):
        admin = User.objects.get(username="alpha-admin")
        li = Patient.objects.get(user__username="alpha-patient")
        records_for_staff(user=admin, patient=li)
    entries = _new_entries(alpha, before)
    assert entries
    assert {(e.reason, e.purpose, e.decision) for e in entries} == {
        ("default:own-hospital", "administration", "allow")
    }


def test_a_patients_history_from_beta_is_logged_at_each_origin(alpha, beta):
    before_alpha, before_beta = _last_id(alpha), _last_id(beta)
    with tenant_context(beta):
        user = User.objects.get(username="beta-patient")
        views = patient_history_for_user(user=user)
    at_alpha = _new_entries(alpha, before_alpha)
    at_beta = _new_entries(beta, before_beta)
    assert {e.record_id for e in at_alpha} == {v.id for v in views if v.origin_slug == "alpha"}
    assert {e.record_id for e in at_beta} == {v.id for v in views if v.origin_slug == "beta"}
    assert {(e.reader_name, e.reader_tenant, e.purpose) for e in at_alpha + at_beta} == {
        ("the patient", "beta", "patient_access")
    }


def test_a_refused_attempt_is_logged_as_denied_and_shows_nothing(alpha):
    with tenant_context(alpha):
        maria = User.objects.get(username="alpha-patient-2")
        li_record = Patient.objects.get(user__username="alpha-patient").records.first()
    before = _last_id(alpha)
    with tenant_context(alpha), pytest.raises(Http404):
        record_view_for_user(user=maria, record_id=li_record.id)
    denied = [e for e in _new_entries(alpha, before) if e.decision == "deny"]
    assert [(e.record_id, e.reason, e.reader_role) for e in denied] == [
        (str(li_record.id), "deny:not-own-record", "patient")
    ]


def test_a_refused_page_and_api_read_are_logged(alpha):
    with tenant_context(alpha):
        li = Patient.objects.get(user__username="alpha-patient")
    client = login_client(alpha, "alpha-patient-2")
    before = _last_id(alpha)
    assert client.get(f"/api/v1/patients/{li.id}/fhir").status_code == 404
    denied = [e for e in _new_entries(alpha, before) if e.decision == "deny"]
    assert [(e.patient_pseudonym, e.reason) for e in denied] == [
        (li.pseudonym, "deny:not-own-profile")
    ]


def test_a_refused_attempt_at_another_hospitals_record_is_logged_where_it_is_held(alpha, beta):
    with tenant_context(alpha):
        li_record = Patient.objects.get(user__username="alpha-patient").records.first()
    before = _last_id(alpha)
    for username in ("beta-doctor", "beta-patient-2"):
        client = login_client(beta, username)
        assert client.get(f"/api/v1/records/{li_record.id}/").status_code == 404
    denied = [e for e in _new_entries(alpha, before) if e.decision == "deny"]
    assert sorted((e.reader_tenant, e.reader_role, e.reason) for e in denied) == [
        ("beta", "doctor", "deny:other-hospital-record"),
        ("beta", "patient", "deny:not-own-record"),
    ]
    assert all(e.record_id == str(li_record.id) and e.sections == [] for e in denied)
