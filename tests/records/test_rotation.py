"""Key rotation: re-wrap every data key under a new KEK version, then retire the old one."""

from __future__ import annotations

import io
import uuid
from datetime import date

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import tenant_context

from accounts.models import User
from records.models import Patient, RecordSection
from records.selectors import (
    patient_history_for_user,
    patient_list_for_user,
    records_for_staff,
)
from records.services import identity_clean, kek_rotate_batch, patient_create, record_create

pytestmark = pytest.mark.django_db

CONTENT = {
    "encounter": {
        "visit_date": "2024-05-01",
        "department": "Cardiology",
        "chief_complaint": "Rotation check palpitations",
    },
    "diagnoses": [{"code": "I10", "text": "Rotation check hypertension"}],
    "notes": [{"category": "mental_health", "text": "Rotation check restricted note"}],
}


def _write(tenant) -> Patient:
    """A new patient at ``tenant`` with one record (the demo patients stay as they are)."""
    with tenant_context(tenant):
        doctor = User.objects.get(username=f"{tenant.slug}-doctor")
        patient = patient_create(
            actor=doctor,
            identity=identity_clean(
                given_name="Rota",
                family_name="Tion",
                sex="female",
                birth_date=date(1980, 2, 3),
                record_number=f"ROT-{uuid.uuid4().hex[:10]}",
            ),
        )
        record_create(author=doctor, patient=patient, content=CONTENT)
    return patient


def _rotate(**options) -> str:
    out = io.StringIO()
    call_command("rotate_keys", stdout=out, **options)
    return out.getvalue()


def _assert_everything_reads(tenant, patient: Patient) -> None:
    with tenant_context(tenant):
        doctor = User.objects.get(username=f"{tenant.slug}-doctor")
        views = records_for_staff(user=doctor, patient=Patient.objects.get(pk=patient.pk))
        assert views and all(not view.errors for view in views), [v.errors for v in views]
        assert views[0].content["encounter"]["chief_complaint"] == "Rotation check palpitations"
        rows = patient_list_for_user(user=doctor)
        assert rows and all(row.identity is not None and not row.error for row in rows)
        # The demo's linked patient reads both hospitals through the exchange.
        li_wei = User.objects.get(username=f"{tenant.slug}-patient")
        history = patient_history_for_user(user=li_wei)
        assert {view.origin_slug for view in history} == {"alpha", "beta"}
        assert all(not view.errors and view.content for view in history)


def test_rotate_then_retire_the_old_version(settings, alpha, beta):
    settings.MEDPORTAL_KEK_VERSION = 1
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = []
    patient = _write(alpha)

    settings.MEDPORTAL_KEK_VERSION = 2
    output = _rotate()
    assert "alpha: done" in output and "beta: done" in output
    for tenant in (alpha, beta):
        with tenant_context(tenant):
            assert (
                not RecordSection.objects.filter(kek_version__isnull=False)
                .exclude(kek_version=2)
                .exists()
            )
            assert not Patient.objects.exclude(kek_version=2).exists()

    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    _assert_everything_reads(alpha, patient)
    _assert_everything_reads(beta, patient=_write(beta))


def test_retiring_without_rotation_fails_reads_cleanly(settings, alpha):
    settings.MEDPORTAL_KEK_VERSION = 1
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = []
    patient = _write(alpha)
    settings.MEDPORTAL_KEK_VERSION = 2
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        views = records_for_staff(user=doctor, patient=Patient.objects.get(pk=patient.pk))
        assert len(views) == 1
        view = views[0]
        assert view.content is None
        assert view.errors and any("retired" in error for error in view.errors)
        assert not any("Rotation check" in error for error in view.errors)
        rows = [row for row in patient_list_for_user(user=doctor) if row.id == patient.id]
        assert rows[0].identity is None
        assert rows[0].error == "The identity does not decrypt."
        history = patient_history_for_user(user=User.objects.get(username="alpha-patient"))
        assert history and all(view.errors and view.content is None for view in history)


def test_interrupted_rotation_resumes(settings, alpha):
    settings.MEDPORTAL_KEK_VERSION = 1
    _write(alpha)
    settings.MEDPORTAL_KEK_VERSION = 2
    with tenant_context(alpha):
        assert kek_rotate_batch(to_version=2, batch=1) == 1
        assert RecordSection.objects.filter(kek_version=2).count() == 1
        remaining = (
            RecordSection.objects.filter(kek_version=1).count()
            + Patient.objects.filter(kek_version=1).count()
        )
    assert remaining > 0

    output = _rotate(tenant="alpha", batch=2)
    assert f"alpha: {remaining} re-wrapped so far" in output
    assert "alpha: 2 re-wrapped so far" in output  # progress, batch by batch
    assert f"alpha: done, {remaining} re-wrapped" in output
    assert "MEDPORTAL_KEK_RETIRED_VERSIONS" in output.splitlines()[-1]
    assert "version(s) 1" in output.splitlines()[-1]
    with tenant_context(alpha):
        assert not RecordSection.objects.filter(kek_version=1).exists()
        assert not Patient.objects.filter(kek_version=1).exists()

    again = _rotate(tenant="alpha")
    assert "alpha: done, 0 re-wrapped" in again
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        for patient in Patient.objects.all():
            assert all(not view.errors for view in records_for_staff(user=doctor, patient=patient))


def test_erased_sections_are_left_alone(settings, alpha):
    settings.MEDPORTAL_KEK_VERSION = 1
    patient = _write(alpha)
    with tenant_context(alpha):
        from records.services import record_erase

        admin = User.objects.get(username="alpha-admin")
        record_erase(actor=admin, record=patient.records.get(), reason="test")
    settings.MEDPORTAL_KEK_VERSION = 2
    _rotate(tenant="alpha")
    with tenant_context(alpha):
        sections = RecordSection.objects.filter(record__patient=patient)
        assert sections and all(s.tenant_wrap is None and s.kek_version is None for s in sections)


def test_unknown_tenant_is_a_command_error():
    with pytest.raises(CommandError, match="no tenant with slug 'nowhere'"):
        _rotate(tenant="nowhere")


def test_hub_is_not_a_hospital():
    with pytest.raises(CommandError, match="not a hospital"):
        _rotate(tenant="hub")


def test_target_above_the_current_version_is_refused(settings):
    settings.MEDPORTAL_KEK_VERSION = 2
    with pytest.raises(CommandError, match="above the current MEDPORTAL_KEK_VERSION 2"):
        _rotate(to_version=3)


def test_target_that_is_retired_is_refused(settings):
    settings.MEDPORTAL_KEK_VERSION = 2
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    with pytest.raises(CommandError, match="RETIRED"):
        _rotate(to_version=1)
