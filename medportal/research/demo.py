"""Demo research: Northwind filed "Hypertension outcomes 2020-2025" (rows);
alpha and beta approved it; Li Wei and a few seeded patients opted in; alpha
released its part, ready to download. An aggregate-only request ("Diabetes and
hypertension, secure count") has results from both hospitals.

Safe to run again: each request is made once (by title). Seeded patients are
fictional and have portal accounts (they sign their opt-ins) whose logins are
not printed.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.models import ResearchInvitation
from medportal.research.models import ResearchRequest
from medportal.research.services import (
    aggregate_advance,
    invitations_make,
    participation_decide,
    release_make,
    request_save,
    request_submit,
    research_answer,
)
from records.models import Patient
from records.services import PatientIdentity, patient_create, record_create

ROWS_TITLE = "Hypertension outcomes 2020-2025"
AGGREGATE_TITLE = "Diabetes and hypertension, secure count"
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

# (hospital, username, given, family, sex, age, ICD-10 code); all fictional.
SEEDED = (
    ("alpha", "alpha-research-1", "Aisha", "Khan", "female", 41, "I10"),
    ("alpha", "alpha-research-2", "Grace", "Okoye", "female", 43, "I10"),
    ("alpha", "alpha-research-3", "Hannah", "Berg", "female", 42, "I10"),
    ("alpha", "alpha-research-4", "Priya", "Nair", "female", 44, "I11.9"),
    ("alpha", "alpha-research-5", "Sofia", "Rossi", "female", 40, "I10"),
    ("alpha", "alpha-research-6", "David", "Cohen", "male", 62, "I10"),
    ("beta", "beta-research-1", "Elena", "Petrova", "female", 42, "I10"),
    ("beta", "beta-research-2", "Omar", "Haddad", "male", 55, "E11.9"),
)


def _born(age: int) -> date:
    today = timezone.localdate()
    return date(today.year - age - (1 if (today.month, today.day) < (1, 15) else 0), 1, 15)


def _seed_patients(tenants: dict, password: str) -> None:
    for number, (slug, username, given, family, sex, age, code) in enumerate(SEEDED, start=1):
        with tenant_context(tenants[slug]):
            if Patient.objects.filter(user__username=username).exists():
                continue
            patient = patient_create(
                actor=None,
                identity=PatientIdentity(
                    given_name=given,
                    family_name=family,
                    sex=sex,
                    birth_date=_born(age),
                    record_number=f"{slug[0].upper()}-R{number:04d}",
                ),
                username=username,
                password=password,
                must_change_password=False,
            )
            visit = timezone.localdate() - timedelta(days=30 + age)
            record_create(
                author=User.objects.get(username=f"{slug}-doctor"),
                patient=patient,
                content={
                    "encounter": {
                        "visit_date": visit.isoformat(),
                        "department": "General medicine",
                        "chief_complaint": "Blood pressure check",
                    },
                    "diagnoses": [{"code": code, "text": "Seen in clinic"}],
                    "medications": [
                        {
                            "drug": "Metformin" if code.startswith("E11") else "Amlodipine",
                            "dose": "5 mg",
                            "route": "oral",
                            "frequency": "once daily",
                            "start": visit.isoformat(),
                        }
                    ],
                    "vitals": [
                        {"kind": "systolic_bp", "value": str(130 + age % 20), "unit": "mm[Hg]"},
                        {"kind": "diastolic_bp", "value": str(80 + age % 10), "unit": "mm[Hg]"},
                    ],
                },
            )


def _file(northwind, title: str, **data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    with tenant_context(northwind):
        researcher = User.objects.get(username="northwind-researcher")
        draft = request_save(
            user=researcher,
            data={
                "title": title,
                "investigator": "Dr Nora North",
                "ethics_reference": "NW-REC-2026-014",
                "expires_at": (timezone.localdate() + timedelta(days=365)).isoformat(),
                **data,
            },
            document=SimpleUploadedFile("approval.pdf", PDF, content_type="application/pdf"),
        )
        return request_submit(user=researcher, request=draft)


def _take_part(tenant, request, usernames, password: str) -> None:
    with tenant_context(tenant):
        participation_decide(
            admin=User.objects.get(username=f"{tenant.slug}-admin"),
            request=request,
            approve=True,
            reason="Ethics approval and data protection review checked.",
        )
        invitations_make(request=request)
        invited = set(
            ResearchInvitation.objects.filter(
                request_id=request.id, patient__user__username__in=usernames
            ).values_list("patient__user__username", flat=True)
        )
        for username in sorted(invited):
            research_answer(
                user=User.objects.get(username=username),
                password=password,
                request_id=request.id,
                take_part=True,
            )


def research_demo_seed(*, tenants: dict, password: str) -> None:
    northwind, alpha, beta = tenants["northwind"], tenants["alpha"], tenants["beta"]
    _seed_patients(tenants, password)
    if not ResearchRequest.objects.filter(organisation=northwind, title=ROWS_TITLE).exists():
        request = _file(
            northwind,
            ROWS_TITLE,
            purpose=(
                "How blood pressure and treatment change after a diagnosis of "
                "hypertension, across hospitals."
            ),
            categories=["encounters", "diagnoses", "medications", "allergies", "vitals", "labs"],
            codes="I10, I11",
            period_from="2020-01-01",
            answer="rows",
            k="5",
        )
        alpha_people = ["alpha-patient", *(u for s, u, *_ in SEEDED if s == "alpha")]
        _take_part(alpha, request, alpha_people, password)
        _take_part(beta, request, [], password)  # Li Wei answered already, at alpha
        with tenant_context(alpha):
            release_make(admin=User.objects.get(username="alpha-admin"), request=request)
    if not ResearchRequest.objects.filter(organisation=northwind, title=AGGREGATE_TITLE).exists():
        request = _file(
            northwind,
            AGGREGATE_TITLE,
            purpose="How many adults are treated for diabetes and for hypertension.",
            categories=["encounters", "diagnoses", "medications", "vitals"],
            codes="I10, E11",
            answer="aggregate",
            k="2",
        )
        _take_part(alpha, request, [u for s, u, *_ in SEEDED if s == "alpha"], password)
        _take_part(beta, request, [u for s, u, *_ in SEEDED if s == "beta"], password)
        for tenant in (alpha, beta):
            with tenant_context(tenant):
                release_make(
                    admin=User.objects.get(username=f"{tenant.slug}-admin"), request=request
                )
        aggregate_advance(request_id=str(request.id))
