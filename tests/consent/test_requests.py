"""A doctor asks a patient for access; the patient approves in part or whole, or declines."""

from __future__ import annotations

import pytest
from django.http import Http404
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.policy import grants_current
from consent.requests import access_request_answer, access_request_create
from medportal.exchange.models import AccessRequest
from records.keys import practitioner_pseudonym
from records.models import Patient
from records.selectors import records_elsewhere_for_staff
from tests.conftest import PASSWORD, login_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(alpha, beta):
    with tenant_context(beta):
        doctor = User.objects.get(username="beta-doctor")
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    with tenant_context(alpha):
        li_at_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
        other = User.objects.get(username="alpha-patient-2")
    return doctor, li_at_beta, li_at_alpha, other


def _request(beta, doctor, li_at_beta, categories=("clinical_notes", "mental_health")):
    with tenant_context(beta):
        return access_request_create(
            user=doctor,
            patient=li_at_beta,
            categories=list(categories),
            purpose="treatment",
            reason="Follow-up of blood pressure; need the notes from Alpha.",
        )


def _doctor_grants(li_at_alpha, doctor):
    pseudonym = practitioner_pseudonym(tenant_slug="beta", user_id=doctor.pk)
    return [
        grant
        for grant in grants_current(patient_pseudonyms=li_at_alpha.pseudonyms)
        if grant.grantee_type == "practitioner" and grant.grantee_id == pseudonym
    ]


def test_a_request_made_at_beta_is_shown_to_the_patient_at_alpha_and_at_beta(alpha, beta, people):
    doctor, li_at_beta, _, _ = people
    request = _request(beta, doctor, li_at_beta)
    for tenant, username in ((alpha, "alpha-patient"), (beta, "beta-patient")):
        page = login_client(tenant, username).get("/consent/sharing/").content.decode()
        assert "Requests waiting for you" in page
        assert "Ben Brown</strong>, Beta University Hospital" in page
        assert "need the notes from Alpha" in page
        assert f"/consent/sharing/requests/{request.id}/answer/" in page


def test_partial_approval_grants_the_doctor_exactly_those_categories_and_opens_them(
    alpha, beta, people
):
    doctor, li_at_beta, li_at_alpha, _ = people
    request = _request(beta, doctor, li_at_beta)
    with tenant_context(beta):
        before = records_elsewhere_for_staff(user=doctor, patient=li_at_beta)
    assert any("restricted" in view.withheld for view in before)
    client = login_client(alpha, "alpha-patient")
    response = client.post(
        f"/consent/sharing/requests/{request.id}/answer/",
        {"decision": "approve_selected", "categories": ["clinical_notes"], "password": PASSWORD},
    )
    assert response.status_code == 302 and "receipt=" in response["Location"]
    [grant] = _doctor_grants(li_at_alpha, doctor)
    assert (grant.categories, grant.purpose) == ({"clinical_notes"}, "treatment")
    request.refresh_from_db()
    assert (request.status, request.granted_categories, request.grant_tx_hash) == (
        "partly_approved",
        ["clinical_notes"],
        grant.tx_hash,
    )
    with tenant_context(beta):
        after = records_elsewhere_for_staff(user=doctor, patient=li_at_beta)
    with_notes = [view for view in after if view.content and view.content["notes"]]
    assert with_notes and all("restricted" not in view.withheld for view in with_notes)
    assert any(
        "Lifestyle advice" in note["text"] for view in with_notes for note in view.content["notes"]
    )


def test_approving_a_request_keeps_what_the_doctor_already_held(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha, _ = people
    first = _request(beta, doctor, li_at_beta, categories=["labs"])
    with tenant_context(alpha):
        access_request_answer(
            user=li_at_alpha.user, password=PASSWORD, request_id=first.id, approve_categories=None
        )
    assert _doctor_grants(li_at_alpha, doctor) == []
    second = _request(beta, doctor, li_at_beta, categories=["labs", "imaging"])
    with tenant_context(alpha):
        access_request_answer(
            user=li_at_alpha.user,
            password=PASSWORD,
            request_id=second.id,
            approve_categories=["imaging"],
        )
    third = _request(beta, doctor, li_at_beta, categories=["labs"])
    with tenant_context(alpha):
        answered = access_request_answer(
            user=li_at_alpha.user,
            password=PASSWORD,
            request_id=third.id,
            approve_categories=["labs"],
        )
    assert answered.status == "approved"
    [grant] = _doctor_grants(li_at_alpha, doctor)
    assert grant.categories == {"labs", "imaging"}


def test_declining_grants_nothing(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha, _ = people
    request = _request(beta, doctor, li_at_beta)
    response = login_client(beta, "beta-patient").post(
        f"/consent/sharing/requests/{request.id}/answer/", {"decision": "decline"}
    )
    assert response.status_code == 302
    request.refresh_from_db()
    assert (request.status, request.granted_categories, request.grant_tx_hash) == (
        "declined",
        [],
        "",
    )
    assert request.answered_at is not None
    assert _doctor_grants(li_at_alpha, doctor) == []


def test_approving_more_than_was_asked_is_refused(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha, _ = people
    request = _request(beta, doctor, li_at_beta, categories=["labs"])
    with tenant_context(alpha), pytest.raises(Exception, match="asked for"):
        access_request_answer(
            user=li_at_alpha.user,
            password=PASSWORD,
            request_id=request.id,
            approve_categories=["genetics"],
        )
    request.refresh_from_db()
    assert request.status == "pending" and _doctor_grants(li_at_alpha, doctor) == []


def test_another_patient_can_neither_see_nor_answer_it(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha, other = people
    request = _request(beta, doctor, li_at_beta)
    client = login_client(alpha, "alpha-patient-2")
    page = client.get("/consent/sharing/").content.decode()
    assert "need the notes" not in page and str(request.id) not in page
    response = client.post(
        f"/consent/sharing/requests/{request.id}/answer/", {"decision": "approve_all"}
    )
    assert response.status_code == 404
    with tenant_context(alpha), pytest.raises(Http404):
        access_request_answer(
            user=other, password=PASSWORD, request_id=request.id, approve_categories=["labs"]
        )
    assert client.get("/api/v1/access-requests/").json() == []
    api = client.post(
        f"/api/v1/access-requests/{request.id}/answer",
        {"decision": "decline"},
        content_type="application/json",
    )
    assert api.status_code == 404
    request.refresh_from_db()
    assert request.status == "pending" and _doctor_grants(li_at_alpha, doctor) == []


def test_the_doctor_requests_from_the_chart_and_sees_the_answer_highlighted(alpha, beta, people):
    _, li_at_beta, li_at_alpha, _ = people
    client = login_client(beta, "beta-doctor")
    url = f"/consent/patients/{li_at_beta.id}/request/"
    form = client.get(url)
    assert form.status_code == 200 and "Why you need it" in form.content.decode()
    bad = client.post(url, {"categories": [], "purpose": "treatment", "reason": ""})
    assert bad.status_code == 400
    assert not AccessRequest.objects.filter(patient_pseudonym=li_at_beta.pseudonym).exists()
    response = client.post(
        url, {"categories": ["restricted"], "purpose": "treatment", "reason": "Need the notes."}
    )
    assert response.status_code == 302 and response["Location"] == "/consent/requests/"
    request = AccessRequest.objects.get(patient_pseudonym=li_at_beta.pseudonym)
    assert request.categories == ["clinical_notes"]
    page = client.get("/consent/requests/").content.decode()
    assert "Waiting for the patient" in page and "New answer" not in page
    with tenant_context(alpha):
        access_request_answer(
            user=li_at_alpha.user,
            password=PASSWORD,
            request_id=request.id,
            approve_categories=["clinical_notes"],
        )
    page = client.get("/consent/requests/").content.decode()
    assert "New answer" in page and "answer-new" in page and "Approved" in page
    # Shown as new once.
    assert "New answer" not in client.get("/consent/requests/").content.decode()


def test_patients_and_admins_cannot_request_access(alpha, people):
    _, _, li_at_alpha, _ = people
    url = f"/consent/patients/{li_at_alpha.id}/request/"
    assert login_client(alpha, "alpha-patient").get(url).status_code == 404
    assert login_client(alpha, "alpha-admin").get(url).status_code == 403
    assert login_client(alpha, "alpha-patient").get("/consent/requests/").status_code == 404


# --- API ---------------------------------------------------------------------------


def test_api_request_list_and_answer(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha, _ = people
    doctor_client = login_client(beta, "beta-doctor")
    created = doctor_client.post(
        "/api/v1/access-requests/",
        {
            "patient": str(li_at_beta.id),
            "categories": ["clinical_notes", "genetics"],
            "reason": "Family history of cancer.",
        },
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["categories"], body["practitioner_name"]) == (
        "pending",
        ["clinical_notes", "genetics"],
        "Ben Brown",
    )
    patient_client = login_client(alpha, "alpha-patient")
    listed = patient_client.get("/api/v1/access-requests/").json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert listed[0]["requester_tenant"] == "beta"
    answered = patient_client.post(
        f"/api/v1/access-requests/{body['id']}/answer",
        {"decision": "approve", "password": PASSWORD},
        content_type="application/json",
    )
    assert answered.status_code == 200
    assert answered.json()["status"] == "approved"
    [grant] = _doctor_grants(li_at_alpha, doctor)
    assert grant.categories == {"clinical_notes", "genetics"}
    assert patient_client.get("/api/v1/access-requests/").json() == []  # pending only
    mine = doctor_client.get("/api/v1/access-requests/").json()
    assert [(row["id"], row["status"]) for row in mine] == [(body["id"], "approved")]
    again = patient_client.post(
        f"/api/v1/access-requests/{body['id']}/answer",
        {"decision": "decline"},
        content_type="application/json",
    )
    assert again.status_code == 400


def test_api_bad_request_is_400_and_creates_nothing(beta, people):
    _, li_at_beta, _, _ = people
    client = login_client(beta, "beta-doctor")
    response = client.post(
        "/api/v1/access-requests/",
        {"patient": str(li_at_beta.id), "categories": ["nope"], "purpose": "x", "reason": "r"},
        content_type="application/json",
    )
    assert response.status_code == 400 and "purpose" in response.json()
    response = client.post(
        "/api/v1/access-requests/",
        {"patient": str(li_at_beta.id), "categories": ["nope"], "reason": "r"},
        content_type="application/json",
    )
    assert response.status_code == 400 and "categories" in response.json()
    assert not AccessRequest.objects.exists()
    patient = login_client(beta, "beta-patient")
    assert (
        patient.post(
            "/api/v1/access-requests/",
            {"patient": str(li_at_beta.id), "categories": ["labs"], "reason": "r"},
            content_type="application/json",
        ).status_code
        == 403
    )


def _kinds(tenant, user_id) -> list[str]:
    from consent.models import Notification

    with tenant_context(tenant):
        return list(
            Notification.objects.filter(recipient_id=user_id)
            .order_by("id")
            .values_list("kind", flat=True)
        )


def test_the_patient_is_told_of_a_request_and_the_doctor_of_the_answer(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha = people[:3]
    before_patient = _kinds(alpha, li_at_alpha.user_id)
    before_doctor = _kinds(beta, doctor.pk)
    request = _request(beta, doctor, li_at_beta)
    assert _kinds(alpha, li_at_alpha.user_id) == [*before_patient, "access_request"]
    with tenant_context(alpha):
        access_request_answer(
            user=li_at_alpha.user, password=PASSWORD, request_id=request.pk, approve_categories=None
        )
    assert _kinds(beta, doctor.pk) == [*before_doctor, "request_answered"]


def test_a_requests_purpose_is_shown_in_words():
    assert AccessRequest(purpose="second_opinion").purpose_label == "a second opinion"
    assert AccessRequest(purpose="treatment").purpose_label == "treatment"
