"""Building blocks for the research tests: patients with entries, a filed request."""

from __future__ import annotations

from datetime import date, timedelta

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from medportal.research.services import request_save, request_submit
from records.services import PatientIdentity, patient_create, record_create
from tests.conftest import PASSWORD

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def pdf(name: str = "approval.pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, PDF, content_type="application/pdf")


def born_aged(years: int, today: date | None = None) -> date:
    """A birth date that makes someone ``years`` old today (and not on their birthday)."""
    today = today or timezone.localdate()
    return (
        date(today.year - years - 1, 1, 15) if today.month == 1 else date(today.year - years, 1, 15)
    )


def patient_with_entries(
    tenant,
    *,
    username: str,
    given: str,
    family: str,
    sex: str,
    age: int,
    number: str,
    codes: list[str],
    phone: str = "",
    email: str = "",
    visit: date | None = None,
    drug: str = "Amlodipine",
):
    """A patient with a portal account and one entry per code."""
    with tenant_context(tenant):
        patient = patient_create(
            actor=None,
            identity=PatientIdentity(
                given_name=given,
                family_name=family,
                sex=sex,
                birth_date=born_aged(age),
                record_number=number,
                phone=phone,
                email=email,
            ),
            username=username,
            password=PASSWORD,
            must_change_password=False,
        )
        doctor = User.objects.get(username=f"{tenant.slug}-doctor")
        for code in codes:
            record_create(
                author=doctor,
                patient=patient,
                content={
                    "encounter": {
                        "visit_date": (
                            visit or timezone.localdate() - timedelta(days=40)
                        ).isoformat(),
                        "department": "General medicine",
                        "chief_complaint": f"Review for {given} {family}",
                    },
                    "diagnoses": [{"code": code, "text": f"Seen by {family}'s usual doctor"}],
                    "medications": [
                        {
                            "drug": drug,
                            "dose": "5 mg",
                            "route": "oral",
                            "frequency": "once daily",
                            "start": (timezone.localdate() - timedelta(days=40)).isoformat(),
                        }
                    ],
                    "vitals": [{"kind": "systolic_bp", "value": "148", "unit": "mm[Hg]"}],
                    "notes": [{"text": f"{given} {family} lives alone; phone {phone or 'none'}."}],
                },
            )
    return patient


REQUEST_DATA = {
    "title": "Hypertension outcomes",
    "purpose": "How blood pressure responds to first-line treatment.",
    "investigator": "Dr Nora North",
    "ethics_reference": "NW-REC-2026-014",
    "categories": ["encounters", "diagnoses", "medications", "vitals"],
    "codes": "I10",
    "answer": "rows",
    "k": "2",
}


def filed_request(northwind, **changes):
    """A request filed by northwind-researcher (submitted: an ``opened`` transaction)."""
    data = {
        **REQUEST_DATA,
        "expires_at": (timezone.localdate() + timedelta(days=90)).isoformat(),
        **changes,
    }
    with tenant_context(northwind):
        researcher = User.objects.get(username="northwind-researcher")
        draft = request_save(user=researcher, data=data, document=pdf())
        return request_submit(user=researcher, request=draft)


def run_release_task(tenant, request, username: str):
    """What the worker does after an admin starts a release (pages, API): the
    task's body, in the hospital's schema."""
    from medportal.research.services import release_run

    with tenant_context(tenant):
        admin = User.objects.get(username=username)
        return release_run(request_id=str(request.id), admin_id=admin.pk)
