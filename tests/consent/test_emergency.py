"""Emergency access (break-glass): beta-doctor declares one for Li Wei, reads her
normal alpha entries, the patient is told everywhere, beta's admin reviews it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.models import User
from accounts.roles import Role
from accounts.services import user_create
from chain.encoding import sha256_hex
from chain.models import PendingTransaction, RegisteredKey
from consent.emergency import (
    emergency_categories,
    emergency_declare,
    emergency_review,
    emergency_reviews_for_user,
)
from consent.grants import consent_revoke
from consent.models import AccessLogEntry, EmergencyAccess, Notification, ReviewStatus
from consent.policy import Requester, SectionRef, access_decide
from records.categories import Category, categories_at
from records.keys import practitioner_pseudonym
from records.models import Patient
from records.selectors import records_elsewhere_for_staff
from tests.conftest import PASSWORD, login_client

pytestmark = pytest.mark.django_db

REASON = "Unconscious after a fall, suspected intracranial bleed; allergies unknown."


@pytest.fixture(autouse=True)
def _normal_only(settings):
    settings.MEDPORTAL_EMERGENCY_LEVELS = ["normal"]
    settings.MEDPORTAL_EMERGENCY_HOURS = 24


@pytest.fixture
def people(alpha, beta):
    with tenant_context(beta):
        doctor = User.objects.get(username="beta-doctor")
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
        admin = user_create(
            actor=None,
            username="beta-admin-test",
            role=Role.ADMIN,
            password=PASSWORD,
            first_name="Bea",
            last_name="Boss",
            must_change_password=False,
        )
    with tenant_context(alpha):
        li_at_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
        # The demo's grant to beta would open the same sections: withdraw it, so
        # that what opens them here is the emergency.
        consent_revoke(
            user=li_at_alpha.user, password=PASSWORD, grantee_type="tenant", grantee_id="beta"
        )
    return doctor, admin, li_at_beta, li_at_alpha


def _declare(beta, doctor, patient, reason=REASON, capture=None):
    with tenant_context(beta):
        if capture is None:
            return emergency_declare(doctor=doctor, patient=patient, reason=reason)
        with capture(execute=False):
            return emergency_declare(doctor=doctor, patient=patient, reason=reason)


def _latest_notification(tenant) -> int:
    with tenant_context(tenant):
        return Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _counts(alpha, beta):
    with schema_context(get_public_schema_name()):
        pending = PendingTransaction.objects.filter(payload__purpose="emergency").count()
    counts = {"pending": pending}
    for tenant in (alpha, beta):
        with tenant_context(tenant):
            counts[tenant.slug] = (
                EmergencyAccess.objects.count(),
                Notification.objects.count(),
            )
    return counts


def test_declaring_submits_a_hospital_signed_emergency_access_transaction(
    alpha, beta, people, django_capture_on_commit_callbacks
):
    doctor, _, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta, capture=django_capture_on_commit_callbacks)
    pseudonym = practitioner_pseudonym(tenant_slug="beta", user_id=doctor.pk)
    with schema_context(get_public_schema_name()):
        pending = PendingTransaction.objects.get(hash=emergency.tx_hash)
        author = RegisteredKey.objects.get(key_id=pending.author)
    assert (author.owner_type, author.owner) == (RegisteredKey.OwnerType.TENANT, "beta")
    assert pending.kind == "access" and pending.submitted_by == "beta"
    payload = pending.payload
    assert payload["purpose"] == "emergency"
    assert payload["patient"] == li_at_beta.pseudonym
    assert payload["grantee"] == {"type": "practitioner", "id": pseudonym}
    assert (
        payload["categories"]
        == emergency_categories()
        == [category for category in Category.values if category in set(categories_at("normal"))]
    )
    assert payload["reason_hash"] == emergency.reason_sha256
    assert parse_datetime(payload["expires_at"]) == emergency.expires_at
    assert emergency.expires_at - emergency.created_at == timedelta(hours=24)
    assert emergency.review_status == ReviewStatus.PENDING
    assert emergency.practitioner_pseudonym == pseudonym
    # The chain's hash commits to the reason without being the reason's own hash.
    assert payload["reason_hash"] != sha256_hex(REASON.encode())


def test_an_emergency_opens_normal_alpha_sections_logged_as_emergency_and_not_restricted(
    alpha, beta, people
):
    doctor, _, li_at_beta, _ = people
    with tenant_context(alpha):
        before = AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with tenant_context(beta):
        assert all(
            v.content is None for v in records_elsewhere_for_staff(user=doctor, patient=li_at_beta)
        )
    emergency = _declare(beta, doctor, li_at_beta)
    with tenant_context(beta):
        views = records_elsewhere_for_staff(user=doctor, patient=li_at_beta)
    assert views and {view.origin_slug for view in views} == {"alpha"}
    opened = [view for view in views if view.content]
    assert opened, "the emergency opens alpha's normal sections"
    assert any(view.content["diagnoses"] for view in opened)
    # Restricted sections (the clinical note) stay withheld under a normal-only emergency.
    with_note = [view for view in views if "restricted" in view.withheld]
    assert with_note and all(view.content["notes"] == [] for view in with_note)
    with tenant_context(alpha):
        entries = list(AccessLogEntry.objects.filter(id__gt=before, reader_tenant="beta"))
    allowed = [entry for entry in entries if entry.decision == "allow"]
    assert allowed
    assert {(e.reason, e.is_emergency, e.reader_name) for e in allowed} == {
        (f"emergency:{emergency.tx_hash}", True, doctor.display_name)
    }
    denied = [e for e in entries if e.decision == "deny" and e.id > allowed[0].id]
    assert denied and all("restricted" in e.sections for e in denied)
    assert not any(e.is_emergency for e in denied)


def test_li_wei_is_notified_at_alpha_and_at_beta_with_no_reason_in_the_text(
    alpha, beta, people, django_capture_on_commit_callbacks
):
    doctor, _, li_at_beta, li_at_alpha = people
    before = {tenant.slug: _latest_notification(tenant) for tenant in (alpha, beta)}
    _declare(beta, doctor, li_at_beta, capture=django_capture_on_commit_callbacks)
    for tenant, patient in ((alpha, li_at_alpha), (beta, li_at_beta)):
        with tenant_context(tenant):
            notifications = list(Notification.objects.filter(id__gt=before[tenant.slug]))
        assert [n.recipient_id for n in notifications] == [patient.user_id]
        assert [n.kind for n in notifications] == ["emergency_access"]
        text = notifications[0].text
        assert text.startswith(f"{doctor.display_name} at {beta.name} declared an emergency")
        assert "bleed" not in text and "fall" not in text


def test_the_admin_sees_the_emergency_first_in_the_queue_and_marks_it_justified(
    alpha, beta, people
):
    doctor, admin, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    with tenant_context(beta):
        rows = emergency_reviews_for_user(user=admin)
        assert rows[0].id == emergency.id
        assert rows[0].reason == REASON
        assert rows[0].patient_name == "Li Wei"
        reviewed = emergency_review(
            admin=admin, emergency_id=emergency.id, justified=True, note="Confirmed by ED lead."
        )
        assert reviewed.review_status == ReviewStatus.JUSTIFIED
        assert reviewed.reviewed_by == admin and reviewed.reviewed_at is not None
        # Reviewed ones go after those still pending (the demo's, for one).
        row = next(r for r in emergency_reviews_for_user(user=admin) if r.id == emergency.id)
        assert (row.emergency.review_status, row.review_note) == (
            "justified",
            "Confirmed by ED lead.",
        )
        with pytest.raises(ValidationError):
            emergency_review(admin=admin, emergency_id=emergency.id, justified=False)
        assert EmergencyAccess.objects.get(pk=emergency.id).review_status == "justified"


def test_the_review_page_lists_and_records_a_verdict(alpha, beta, people):
    doctor, admin, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    client = login_client(beta, admin.username)
    page = client.get("/consent/emergencies/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "Li Wei" in body and "intracranial bleed" in body and "Ben Brown" in body
    response = client.post(
        "/consent/emergencies/",
        {"emergency": str(emergency.id), "verdict": "unjustified", "note": "No record of a fall."},
    )
    assert response.status_code == 302
    with tenant_context(beta):
        emergency.refresh_from_db()
    assert emergency.review_status == ReviewStatus.UNJUSTIFIED
    assert b"No record of a fall." not in bytes(emergency.review_note_ciphertext)


def test_a_doctor_cannot_review(alpha, beta, people):
    doctor, _, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    with tenant_context(beta):
        with pytest.raises(PermissionDenied):
            emergency_review(admin=doctor, emergency_id=emergency.id, justified=True)
        with pytest.raises(PermissionDenied):
            emergency_reviews_for_user(user=doctor)
        assert EmergencyAccess.objects.get(pk=emergency.id).review_status == "pending"
    client = login_client(beta, "beta-doctor")
    assert client.get("/consent/emergencies/").status_code == 403
    response = client.post(
        "/consent/emergencies/", {"emergency": str(emergency.id), "verdict": "justified"}
    )
    assert response.status_code == 403
    with tenant_context(beta):
        assert EmergencyAccess.objects.get(pk=emergency.id).review_status == "pending"


def test_a_patient_cannot_declare(alpha, beta, people):
    _, _, li_at_beta, _ = people
    before = _counts(alpha, beta)
    with pytest.raises(PermissionDenied):
        _declare(beta, li_at_beta.user, li_at_beta)
    client = login_client(beta, "beta-patient")
    url = f"/consent/patients/{li_at_beta.id}/emergency/"
    assert client.get(url).status_code == 403
    assert client.post(url, {"reason": REASON}).status_code == 403
    assert _counts(alpha, beta) == before


@pytest.mark.parametrize("reason", ["", "   ", "too short", "x" * 2001])
def test_a_missing_short_or_long_reason_is_refused_and_nothing_is_created(
    alpha, beta, people, reason
):
    doctor, _, li_at_beta, _ = people
    before = _counts(alpha, beta)
    with pytest.raises(ValidationError) as error:
        _declare(beta, doctor, li_at_beta, reason=reason)
    assert "reason" in error.value.message_dict
    assert _counts(alpha, beta) == before


def test_the_page_declares_and_returns_to_the_chart_without_phi_in_the_message(alpha, beta, people):
    doctor, _, li_at_beta, _ = people
    client = login_client(beta, "beta-doctor")
    url = f"/consent/patients/{li_at_beta.id}/emergency/"
    form = client.get(url)
    assert form.status_code == 200
    assert "logged" in form.content.decode() and "review" in form.content.decode()
    before = _counts(alpha, beta)
    empty = client.post(url, {"reason": ""})
    assert empty.status_code == 400
    assert _counts(alpha, beta) == before
    response = client.post(url, {"reason": REASON}, follow=True)
    assert response.redirect_chain == [(f"/records/patients/{li_at_beta.id}/", 302)]
    messages = [str(message) for message in response.context["messages"]]
    assert len(messages) == 1 and "Emergency access declared" in messages[0]
    assert "Li Wei" not in messages[0] and "bleed" not in messages[0]
    with tenant_context(beta):
        assert EmergencyAccess.objects.filter(doctor=doctor, patient=li_at_beta).count() == 1


def test_the_reason_is_not_stored_in_plaintext(alpha, beta, people):
    doctor, _, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    with connection.cursor() as cursor:
        cursor.execute(f'SET search_path TO "{beta.schema_name}"')
        cursor.execute(
            "SELECT row_to_json(e)::text, encode(reason_ciphertext, 'escape') "
            "FROM consent_emergencyaccess e WHERE id = %s",
            [emergency.id],
        )
        row_text, ciphertext_text = cursor.fetchone()
    connection.set_schema_to_public()
    for fragment in ("intracranial", "Unconscious", "allergies unknown"):
        assert fragment not in row_text
        assert fragment not in ciphertext_text
    assert sha256_hex(REASON.encode()) not in row_text


def test_the_emergency_expires(alpha, beta, people):
    doctor, _, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    requester = Requester(
        role="doctor", tenant_slug="beta", practitioner=emergency.practitioner_pseudonym
    )
    section = SectionRef(origin="alpha", level="normal", categories=("diagnoses",))
    pseudonyms = frozenset(li_at_beta.pseudonyms)
    now = timezone.now()
    during = access_decide(
        requester=requester, patient_pseudonyms=pseudonyms, section=section, now=now
    )
    assert (during.allowed, during.is_emergency) == (True, True)
    after = access_decide(
        requester=requester,
        patient_pseudonyms=pseudonyms,
        section=section,
        now=emergency.expires_at + timedelta(seconds=1),
    )
    assert (after.allowed, after.reason) == (False, "deny:no-grant")
    # Another doctor of beta is not covered by this doctor's emergency.
    other = Requester(role="doctor", tenant_slug="beta", practitioner="0" * 64)
    assert not access_decide(
        requester=other, patient_pseudonyms=pseudonyms, section=section, now=now
    ).allowed


def test_rotate_keys_rewraps_emergency_reasons_so_they_read_after_retirement(
    alpha, beta, people, settings
):
    from io import StringIO

    from django.core.management import call_command

    doctor, admin, li_at_beta, _ = people
    emergency = _declare(beta, doctor, li_at_beta)
    with tenant_context(beta):
        emergency_review(admin=admin, emergency_id=emergency.id, justified=True, note="Checked.")
    settings.MEDPORTAL_KEK_VERSION = 2
    call_command("rotate_keys", "--tenant", "beta", stdout=StringIO())
    settings.MEDPORTAL_KEK_RETIRED_VERSIONS = [1]
    with tenant_context(beta):
        row = next(r for r in emergency_reviews_for_user(user=admin) if r.id == emergency.id)
        assert (row.reason, row.review_note, row.error) == (REASON, "Checked.", "")
        assert EmergencyAccess.objects.get(pk=emergency.id).kek_version == 2
