"""Demo consent: Li Wei lets Beta read her normal entries from Alpha for
treatment, both hospitals' doctors have read her chart, so the access logs
have something to show, and Beta's doctor declared one emergency (for Tom
Jensen) for beta-admin to review. Safe to run again: the grant is made once, the reads
only into empty logs."""

from __future__ import annotations

from django_tenants.utils import tenant_context

from accounts.models import User
from consent.emergency import emergency_declare
from consent.grants import consent_grant
from consent.models import AccessLogEntry, EmergencyAccess
from consent.policy import grants_current
from records.models import Patient
from records.selectors import records_elsewhere_for_staff, records_for_staff


def consent_demo_seed(*, tenants: dict, password: str) -> None:
    alpha, beta = tenants["alpha"], tenants["beta"]
    with tenant_context(alpha):
        li = Patient.objects.select_related("user").get(user__username="alpha-patient")
        granted = any(
            grant.grantee_type == "tenant" and grant.grantee_id == "beta" and grant.categories
            for grant in grants_current(patient_pseudonyms=li.pseudonyms)
        )
        if not granted:
            consent_grant(
                user=li.user,
                password=password,
                grantee_type="tenant",
                grantee_id="beta",
                categories=["normal"],
            )
        if not AccessLogEntry.objects.exists():
            records_for_staff(user=User.objects.get(username="alpha-doctor"), patient=li)
    with tenant_context(beta):
        if not EmergencyAccess.objects.exists():
            # Tom Jensen came in through Beta's emergency department: the review
            # queue (beta-admin) and his notifications have something to show.
            emergency_declare(
                doctor=User.objects.get(username="beta-doctor"),
                patient=Patient.objects.get(user__username="beta-patient-2"),
                reason="Brought in unconscious after a fall; checking allergies and medication.",
            )
        if not AccessLogEntry.objects.exists():
            doctor = User.objects.get(username="beta-doctor")
            li_at_beta = Patient.objects.get(user__username="beta-patient")
            records_for_staff(user=doctor, patient=li_at_beta)
            records_elsewhere_for_staff(user=doctor, patient=li_at_beta)
