"""The decision point and the patient's grants, through the real services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from chain.models import TransactionKind
from chain.services import (
    TransactionRejected,
    envelope_sign,
    transaction_submit,
    transactions_accept,
)
from consent.grants import categories_expand, consent_grant, consent_revoke
from consent.policy import Requester, SectionRef, access_decide, grants_current
from records.keys import patient_signing_key, practitioner_pseudonym
from records.models import Patient
from records.selectors import records_for_staff
from records.services import record_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

VISIT = {"visit_date": "2026-01-05", "department": "Psychiatry", "chief_complaint": "Low mood"}


@pytest.fixture
def li(alpha):
    with tenant_context(alpha):
        return Patient.objects.select_related("user").get(user__username="alpha-patient")


@pytest.fixture
def colleague(alpha):
    """A second doctor at alpha, who did not write Li Wei's entries."""
    with tenant_context(alpha):
        return user_create(
            actor=None,
            username="dr-second",
            role="doctor",
            password="a-long-pass-phrase-42",
            first_name="Sam",
            last_name="Second",
        )


@pytest.fixture
def sensitive_record(alpha, li):
    with tenant_context(alpha):
        author = User.objects.get(username="alpha-doctor")
        return record_create(
            author=author,
            patient=li,
            content={
                "encounter": VISIT,
                "diagnoses": [{"code": "F32.9", "category": "mental_health", "text": "x"}],
            },
        )


def _view_of(alpha, user, li, record):
    with tenant_context(alpha):
        views = records_for_staff(user=user, patient=li)
    return next(view for view in views if view.id == str(record.id))


def test_a_very_restricted_section_needs_a_grant_even_at_the_writing_hospital(
    alpha, li, colleague, sensitive_record
):
    view = _view_of(alpha, colleague, li, sensitive_record)
    assert view.withheld == ["very_restricted"]
    assert view.content["diagnoses"] == []  # the normal section (the visit) still shows
    assert view.content["encounter"]["department"] == "Psychiatry"
    with tenant_context(alpha):
        author = User.objects.get(username="alpha-doctor")
    author_view = _view_of(alpha, author, li, sensitive_record)
    assert author_view.withheld == []
    assert author_view.content["diagnoses"][0]["code"] == "F32.9"


def test_a_grant_opens_the_section_and_a_revocation_closes_it_again(
    alpha, li, colleague, sensitive_record
):
    with tenant_context(alpha):
        grant = consent_grant(
            user=li.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="alpha",
            categories=["mental_health"],
        )
    view = _view_of(alpha, colleague, li, sensitive_record)
    assert view.withheld == []
    assert view.content["diagnoses"][0]["code"] == "F32.9"
    assert grant.payload["patient"] == li.pseudonym
    assert grant.author == li.key_id  # signed with the patient's key
    with tenant_context(alpha):
        consent_revoke(user=li.user, password=PASSWORD, grantee_type="tenant", grantee_id="alpha")
    again = _view_of(alpha, colleague, li, sensitive_record)
    assert again.withheld == ["very_restricted"]
    assert again.content["diagnoses"] == []


def test_an_expired_grant_allows_nothing(li):
    section = SectionRef(origin="alpha", level="normal", categories=("diagnoses",))
    requester = Requester(role="doctor", tenant_slug="beta", practitioner="p" * 22)
    later = timezone.now() + timedelta(days=2)
    with tenant_context(_tenant("alpha")):
        consent_grant(
            user=li.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["normal"],
            expires_at=timezone.now() + timedelta(days=1),
        )
    pseudonyms = frozenset({li.pseudonym})
    now_decision = access_decide(
        requester=requester, patient_pseudonyms=pseudonyms, section=section
    )
    assert now_decision.allowed and now_decision.reason.startswith("grant:")
    expired = access_decide(
        requester=requester, patient_pseudonyms=pseudonyms, section=section, now=later
    )
    assert (expired.allowed, expired.reason) == (False, "deny:no-grant")


def _tenant(slug):
    from medportal.tenants.models import Tenant

    return Tenant.objects.get(slug=slug)


def test_levels_expand_to_their_categories():
    assert categories_expand(["restricted", "genetics"]) == ["clinical_notes", "genetics"]
    with pytest.raises(ValidationError):
        categories_expand(["everything"])


def test_a_grant_from_the_linked_account_at_beta_is_accepted(beta):
    with tenant_context(beta):
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
        consent_grant(
            user=li_at_beta.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["normal"],
        )
    grants = grants_current(patient_pseudonyms=[li_at_beta.pseudonym])
    assert [(g.grantee_id, g.purpose) for g in grants if g.grantee_id == "beta"] == [
        ("beta", "treatment")
    ]


def test_the_hub_refuses_consent_not_signed_by_the_patient(alpha, li):
    payload = {
        "patient": li.pseudonym,
        "grantee": {"type": "tenant", "id": "beta"},
        "categories": ["diagnoses"],
        "purpose": "treatment",
        "expires_at": None,
    }
    before = grants_current(patient_pseudonyms=[li.pseudonym])
    with pytest.raises(TransactionRejected, match="signed with the patient's own key"):
        transaction_submit(tenant=alpha, kind=TransactionKind.ACCESS, payload=payload)
    with tenant_context(alpha):
        maria = Patient.objects.get(user__username="alpha-patient-2")
        forged = envelope_sign(
            kind=TransactionKind.ACCESS,
            payload=payload,
            key=maria,
            private=patient_signing_key(maria, PASSWORD),
        )
    with pytest.raises(TransactionRejected, match="their own records only"):
        transactions_accept(envelopes=[forged], submitted_by="alpha")
    assert grants_current(patient_pseudonyms=[li.pseudonym]) == before


def test_a_patient_cannot_declare_an_emergency(alpha, li):
    doctor = practitioner_pseudonym(tenant_slug="alpha", user_id=1)
    with tenant_context(alpha):
        envelope = envelope_sign(
            kind=TransactionKind.ACCESS,
            payload={
                "patient": li.pseudonym,
                "grantee": {"type": "practitioner", "id": doctor},
                "categories": ["diagnoses"],
                "purpose": "emergency",
                "expires_at": "2030-01-01T00:00:00.000000Z",
                "reason_hash": "0" * 64,
            },
            key=li,
            private=patient_signing_key(li, PASSWORD),
        )
    with pytest.raises(TransactionRejected, match="declared by the hospital"):
        transactions_accept(envelopes=[envelope], submitted_by="alpha")


def test_a_patient_registered_a_moment_ago_can_sign_before_her_key_is_sealed(alpha):
    from datetime import date

    from records.services import PatientIdentity, patient_create

    with tenant_context(alpha):
        fresh = patient_create(
            actor=None,
            identity=PatientIdentity(
                given_name="Nia",
                family_name="New",
                sex="female",
                birth_date=date(1992, 2, 2),
                record_number="N-1",
            ),
            username="nia-new",
            password=PASSWORD,
            must_change_password=False,
        )
        grant = consent_grant(
            user=fresh.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["labs"],
        )
    assert grant.author == fresh.key_id
