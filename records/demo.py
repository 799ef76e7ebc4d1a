"""Demo patients and records: Li Wei at alpha and beta (linked), one more patient
at each hospital, a few entries each. Safe to run again: a patient is made
once (by username) and gets entries only while they have none."""

from __future__ import annotations

from datetime import date, timedelta

from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from records.models import Patient
from records.services import (
    PatientIdentity,
    link_code_create,
    link_code_redeem,
    patient_create,
    record_create,
)

# username -> identity (all fictional)
DEMO_PATIENTS = {
    "alpha-patient": PatientIdentity(
        given_name="Li",
        family_name="Wei",
        sex="female",
        birth_date=date(1984, 3, 14),
        record_number="A-100234",
        phone="+44 20 7946 0018",
        email="li.wei@example.org",
    ),
    "alpha-patient-2": PatientIdentity(
        given_name="Maria",
        family_name="Garcia",
        sex="female",
        birth_date=date(1957, 9, 2),
        record_number="A-100871",
    ),
    "beta-patient": PatientIdentity(
        given_name="Li",
        family_name="Wei",
        sex="female",
        birth_date=date(1984, 3, 14),
        record_number="B-55012",
        email="li.wei@example.org",
    ),
    "beta-patient-2": PatientIdentity(
        given_name="Tom",
        family_name="Jensen",
        sex="male",
        birth_date=date(1979, 6, 30),
        record_number="B-55190",
    ),
}


def _days_ago(days: int) -> str:
    return (timezone.localdate() - timedelta(days=days)).isoformat()


def _entries(username: str) -> list[dict]:
    if username == "alpha-patient":
        return [
            {
                "encounter": {
                    "visit_date": _days_ago(60),
                    "department": "General medicine",
                    "chief_complaint": "Headaches and tiredness for three weeks",
                },
                "diagnoses": [{"code": "I10", "text": "Blood pressure high on three readings"}],
                "medications": [
                    {
                        "drug": "Amlodipine",
                        "dose": "5 mg",
                        "route": "oral",
                        "frequency": "once daily",
                        "start": _days_ago(60),
                    }
                ],
                "allergies": [
                    {"substance": "Penicillin", "reaction": "Hives", "severity": "moderate"}
                ],
                "vitals": [
                    {"kind": "systolic_bp", "value": "152", "unit": "mm[Hg]"},
                    {"kind": "diastolic_bp", "value": "96", "unit": "mm[Hg]"},
                    {"kind": "heart_rate", "value": "78", "unit": "/min"},
                ],
                "notes": [{"text": "Lifestyle advice given. Review in six weeks."}],
            },
            {
                "encounter": {
                    "visit_date": _days_ago(14),
                    "department": "General medicine",
                    "chief_complaint": "Blood pressure review",
                },
                "vitals": [
                    {"kind": "systolic_bp", "value": "134", "unit": "mm[Hg]"},
                    {"kind": "diastolic_bp", "value": "84", "unit": "mm[Hg]"},
                ],
                "labs": [
                    {
                        "test": "HbA1c",
                        "value": "44",
                        "unit": "mmol/mol",
                        "reference_range": "20-41",
                    }
                ],
                "diagnoses": [{"code": "R73.0", "text": "Borderline HbA1c; repeat in 3 months"}],
            },
        ]
    if username == "beta-patient":
        return [
            {
                "encounter": {
                    "visit_date": _days_ago(30),
                    "department": "Respiratory clinic",
                    "chief_complaint": "Wheeze at night",
                },
                "diagnoses": [{"code": "J45.9", "text": "Asthma, mild intermittent"}],
                "medications": [
                    {
                        "drug": "Salbutamol",
                        "dose": "100 micrograms, 2 puffs",
                        "route": "inhaled",
                        "frequency": "as needed",
                        "start": _days_ago(30),
                    }
                ],
                "vitals": [
                    {"kind": "oxygen_saturation", "value": "97", "unit": "%"},
                    {"kind": "temperature", "value": "36.8", "unit": "Cel"},
                ],
                "notes": [{"text": "Inhaler technique checked. Peak flow diary started."}],
            }
        ]
    if username == "alpha-patient-2":
        return [
            {
                "encounter": {
                    "visit_date": _days_ago(7),
                    "department": "Diabetes clinic",
                    "chief_complaint": "Annual diabetes review",
                },
                "diagnoses": [{"code": "E11.9", "text": "Type 2 diabetes, stable"}],
                "medications": [
                    {
                        "drug": "Metformin",
                        "dose": "500 mg",
                        "route": "oral",
                        "frequency": "twice daily",
                        "start": "2019-05-01",
                    }
                ],
                "vitals": [{"kind": "weight", "value": "71.5", "unit": "kg"}],
            }
        ]
    return [
        {
            "encounter": {
                "visit_date": _days_ago(3),
                "department": "Emergency",
                "chief_complaint": "Twisted ankle playing football",
            },
            "diagnoses": [{"code": "S93.4", "text": "Sprain of the right ankle"}],
            "notes": [{"category": "imaging", "text": "X-ray: no fracture."}],
        }
    ]


def demo_patient_ensure(*, username: str, password: str) -> tuple[Patient, bool]:
    """The demo patient with this username at the current hospital (made once)."""
    patient = Patient.objects.filter(user__username=username).first()
    if patient is not None:
        return patient, False
    patient = patient_create(
        actor=None,
        identity=DEMO_PATIENTS[username],
        username=username,
        password=password,
        must_change_password=False,
    )
    return patient, True


def demo_records_seed(*, tenants: dict, password: str) -> None:
    """Link Li Wei's two accounts, then write each demo patient's entries."""
    with tenant_context(tenants["alpha"]):
        alpha_li = Patient.objects.get(user__username="alpha-patient")
    with tenant_context(tenants["beta"]):
        beta_li = Patient.objects.get(user__username="beta-patient")
        if beta_li.pseudonym != alpha_li.pseudonym:
            with tenant_context(tenants["alpha"]):
                issued = link_code_create(user=alpha_li.user, password=password)
            link_code_redeem(user=beta_li.user, code=issued.code, password=password)
    for slug, doctor in (("alpha", "alpha-doctor"), ("beta", "beta-doctor")):
        with tenant_context(tenants[slug]):
            author = User.objects.get(username=doctor)
            for patient in Patient.objects.filter(user__username__in=DEMO_PATIENTS):
                if patient.records.exists():
                    continue
                for content in _entries(patient.user.username):
                    record_create(author=author, patient=patient, content=content)
