"""A doctor at beta reading Li Wei's entries from alpha: only what she granted."""

from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.grants import consent_grant, consent_revoke
from consent.models import AccessLogEntry
from records.models import Patient
from records.selectors import records_elsewhere_for_staff
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(alpha, beta):
    with tenant_context(beta):
        doctor = User.objects.get(username="beta-doctor")
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    with tenant_context(alpha):
        li_at_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
    return doctor, li_at_beta, li_at_alpha


def _elsewhere(beta, doctor, patient):
    with tenant_context(beta):
        return records_elsewhere_for_staff(user=doctor, patient=patient)


def _alpha_log_after(alpha, after):
    with tenant_context(alpha):
        return list(AccessLogEntry.objects.filter(id__gt=after).order_by("id"))


def _alpha_last(alpha):
    with tenant_context(alpha):
        return AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _revoke_demo_grant(alpha, li_at_alpha):
    """The demo has Li Wei share her normal alpha entries with beta: undo it."""
    with tenant_context(alpha):
        consent_revoke(
            user=li_at_alpha.user, password=PASSWORD, grantee_type="tenant", grantee_id="beta"
        )


def test_without_a_grant_the_doctor_sees_that_entries_exist_and_nothing_of_them(
    alpha, beta, people
):
    doctor, li_at_beta, li_at_alpha = people
    _revoke_demo_grant(alpha, li_at_alpha)
    before = _alpha_last(alpha)
    views = _elsewhere(beta, doctor, li_at_beta)
    assert views and {view.origin_slug for view in views} == {"alpha"}
    assert all(view.content is None and view.withheld and not view.errors for view in views)
    denied = _alpha_log_after(alpha, before)
    assert {(e.decision, e.reason, e.reader_tenant) for e in denied} == {
        ("deny", "deny:no-grant", "beta")
    }


def test_a_grant_to_beta_opens_normal_sections_only_and_revoking_closes_them(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha = people
    with tenant_context(alpha):
        grant = consent_grant(
            user=li_at_alpha.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["normal"],
        )
    before = _alpha_last(alpha)
    views = _elsewhere(beta, doctor, li_at_beta)
    first_visit = next(v for v in views if v.content and v.content["vitals"])
    assert first_visit.content["diagnoses"][0]["code"] in {"I10", "R73.0"}
    # The clinical note (restricted) of the first alpha entry stays withheld.
    with_note = [v for v in views if "restricted" in v.withheld]
    assert with_note and all(v.content["notes"] == [] for v in with_note)
    allowed = [e for e in _alpha_log_after(alpha, before) if e.decision == "allow"]
    assert {e.reason for e in allowed} == {f"grant:{grant.hash}"}
    with tenant_context(alpha):
        consent_revoke(
            user=li_at_alpha.user, password=PASSWORD, grantee_type="tenant", grantee_id="beta"
        )
    after_revoke = _elsewhere(beta, doctor, li_at_beta)
    assert all(view.content is None for view in after_revoke)


def test_the_chart_at_beta_lists_alpha_entries_as_not_shared_until_granted(alpha, beta, people):
    from tests.conftest import PASSWORD, login_client

    _, li_at_beta, li_at_alpha = people
    _revoke_demo_grant(alpha, li_at_alpha)
    client = login_client(beta, "beta-doctor")
    page = client.get(f"/records/patients/{li_at_beta.id}/").content.decode()
    assert "From other hospitals" in page and alpha.name in page
    assert "This entry is not shared with you" in page
    assert "Headaches and tiredness" not in page
    with tenant_context(alpha):
        consent_grant(
            user=li_at_alpha.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["normal"],
        )
    page = client.get(f"/records/patients/{li_at_beta.id}/").content.decode()
    assert "Headaches and tiredness" in page
    assert "Part of this entry is not shared with you (restricted sections)" in page
    assert "Lifestyle advice given" not in page  # the restricted clinical note


def test_an_allowed_read_from_another_hospital_tells_the_patient(alpha, beta, people):
    from consent.models import Notification

    doctor, li_at_beta, li_at_alpha = people
    with tenant_context(alpha):
        Notification.objects.filter(recipient=li_at_alpha.user, kind="external_read").delete()
    _elsewhere(beta, doctor, li_at_beta)  # the demo grant lets beta read normal entries
    with tenant_context(alpha):
        told = list(Notification.objects.filter(recipient=li_at_alpha.user, kind="external_read"))
    assert [n.text for n in told] == [
        "Ben Brown at Beta University Hospital opened your records from "
        "Alpha General Hospital. It is in your access log."
    ]
