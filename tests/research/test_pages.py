"""The research pages with the Django test client: the researcher's request
form, list and detail; the hospital admin's review; the patient's invitations;
who gets 403 or 404, and that a refused action changes nothing."""

from __future__ import annotations

import csv
import html
import io
import re
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction
from consent.models import InvitationStatus, ResearchInvitation, ResearchPreference
from medportal.research.demo import AGGREGATE_TITLE
from medportal.research.models import (
    Participation,
    ParticipationStatus,
    Release,
    RequestStatus,
    ResearchRequest,
)
from medportal.research.services import invitations_make, participation_decide, research_answer
from records.models import Patient
from tests.conftest import PASSWORD, client_for, login_client
from tests.research.helpers import PDF, filed_request, patient_with_entries, pdf, run_release_task

pytestmark = pytest.mark.django_db

NORTHWIND = "Northwind Research Institute"
ALPHA = "Alpha General Hospital"


def _form(**changes) -> dict:
    """The request form as a researcher fills it in (no file)."""
    data = {
        "title": "Blood pressure after diagnosis",
        "purpose": "How blood pressure responds to first-line treatment.",
        "investigator": "Dr Nora North",
        "ethics_reference": "NW-REC-2026-099",
        "categories": ["encounters", "diagnoses", "medications", "vitals"],
        "codes": "I12",
        "age_min": "",
        "age_max": "",
        "sex": "",
        "period_from": "",
        "period_to": "",
        "answer": "rows",
        "k": "2",
        "expires_at": (timezone.localdate() + timedelta(days=90)).isoformat(),
        "action": "save",
    }
    data.update(changes)
    return data


def field_errors(content: str, field_id: str) -> list[str]:
    """The messages shown beside one field (its ``<ul id="<field>_errors">``)."""
    found = re.search(
        rf'<ul class="field-errors" id="{re.escape(field_id)}_errors"[^>]*>(.*?)</ul>',
        content,
        re.S,
    )
    if found is None:
        return []
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)]


@pytest.fixture
def known(northwind) -> set:
    """The requests that exist before the test (the demo's, and any a live test committed)."""
    return set(ResearchRequest.objects.values_list("id", flat=True))


def _new_requests(known: set) -> list[ResearchRequest]:
    return list(ResearchRequest.objects.exclude(id__in=known).order_by("created_at"))


def _request_transactions(request_id) -> list[dict]:
    with schema_context("public"):
        return list(
            PendingTransaction.objects.filter(kind="request", payload__request=str(request_id))
            .order_by("id")
            .values_list("payload", flat=True)
        )


def _access_transactions() -> int:
    with schema_context("public"):
        return PendingTransaction.objects.filter(kind="access").count()


@pytest.fixture
def researcher(northwind):
    return login_client(northwind, "northwind-researcher")


@pytest.fixture
def alpha_admin(alpha):
    return login_client(alpha, "alpha-admin")


def _approve(alpha, request) -> None:
    with tenant_context(alpha):
        participation_decide(
            admin=User.objects.get(username="alpha-admin"),
            request=request,
            approve=True,
            reason="Ethics approval checked",
        )
        # What the approval's task does after commit (on_commit never runs in
        # a test transaction).
        invitations_make(request=request)


def _two_patients(alpha) -> dict[str, Patient]:
    """Two women aged 42 with one I12.9 entry each: a class of two (k=2)."""
    return {
        username: patient_with_entries(
            alpha,
            username=username,
            given=given,
            family=family,
            sex="female",
            age=42,
            number=number,
            codes=["I12.9"],
        )
        for username, given, family, number in (
            ("page-zelda", "Zelda", "Quixotewright", "RN-PAGE-4471"),
            ("page-fran", "Fran", "Oyelaran", "RN-PAGE-5512"),
        )
    }


# --- The researcher's form ---------------------------------------------------------------


def test_the_form_groups_releasable_categories_by_level_and_explains_k(researcher):
    response = researcher.get("/research/new/")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'enctype="multipart/form-data"' in content and "csrfmiddlewaretoken" in content
    assert 'name="levels" value="normal"' in content
    assert 'name="levels" value="very_restricted"' in content
    assert 'name="levels" value="restricted"' not in content  # notes are never released
    for value in ("encounters", "diagnoses", "medications", "allergies", "vitals", "labs"):
        assert f'name="categories" value="{value}"' in content
    for never in ("clinical_notes", "imaging", "procedures", "demographics"):
        assert f'name="categories" value="{never}"' not in content
    assert "released only when your request covers every category in it" in content
    assert 'name="k" value="5"' in content  # the default
    assert "so nobody can be singled out" in content
    assert "The day an entry was written." in content
    assert 'value="save"' in content and 'value="submit"' in content


def test_a_researcher_saves_a_draft_through_the_form(northwind, researcher, known):
    response = researcher.post("/research/new/", {**_form(), "ethics_document": pdf()})
    assert response.status_code == 302
    [draft] = _new_requests(known)
    assert response["Location"] == f"/research/{draft.id}/"
    assert draft.status == RequestStatus.DRAFT
    assert draft.title == "Blood pressure after diagnosis"
    assert draft.categories == ["encounters", "diagnoses", "medications", "vitals"]
    assert draft.criteria["codes"] == ["I12"] and draft.k == 2 and draft.answer == "rows"
    assert draft.ethics_document_name == "approval.pdf" and draft.ethics_document_sha256
    assert draft.created_by_name == "Nora North"
    assert _request_transactions(draft.id) == []  # nothing leaves before submitting
    page = researcher.get(response["Location"]).content.decode()
    assert "Only you can see this draft." in page
    assert "I12 and the codes under it" in page


def test_a_whole_level_ticks_all_of_its_releasable_categories(northwind, researcher, known):
    data = _form(categories=[], levels=["normal"])
    assert researcher.post("/research/new/", data).status_code == 302
    [draft] = _new_requests(known)
    assert draft.categories == [
        "encounters",
        "diagnoses",
        "medications",
        "allergies",
        "vitals",
        "labs",
    ]


@pytest.mark.parametrize(
    ("changes", "field_id", "message"),
    [
        ({"k": "1"}, "id_k", "Enter a number from 2 to 100."),
        ({"codes": "I10, ZZ9"}, "id_codes", "Not an ICD-10 code or code prefix: ZZ9."),
        ({"age_min": "60", "age_max": "40"}, "id_age_max", "must not be below the lowest"),
        ({"period_from": "2025-01-01", "period_to": "2020-01-01"}, "id_period_to", "must end"),
        ({"expires_at": "2001-01-01"}, "id_expires_at", "The expiry must be after today."),
        ({"title": ""}, "id_title", "This field is required."),
    ],
)
def test_bad_fields_are_shown_beside_the_field_and_nothing_is_saved(
    northwind, researcher, changes, field_id, message, known
):
    response = researcher.post("/research/new/", {**_form(**changes), "ethics_document": pdf()})
    assert response.status_code == 400
    content = response.content.decode()
    errors = field_errors(content, field_id)
    assert len(errors) == 1 and message in errors[0], errors
    assert "Please correct the 1 problem marked below." in content
    assert 'aria-invalid="true"' in content
    assert _new_requests(known) == []
    # What was typed is kept for correcting.
    for name, value in changes.items():
        assert f'name="{name}"' in content and (value == "" or f'value="{value}"' in content)


@pytest.mark.parametrize(
    ("changes", "field_id"),
    [
        ({"categories": ["bogus"], "levels": ["bogus"]}, "id_categories"),
        ({"categories": ["clinical_notes"]}, "id_categories"),
        ({"age_min": "abc"}, "id_age_min"),
        ({"expires_at": "tomorrow"}, "id_expires_at"),
        ({"answer": "everything"}, "id_answer"),
        ({"sex": "robot"}, "id_sex"),
        ({"k": "9" * 30}, "id_k"),
    ],
)
def test_junk_input_is_a_400_with_the_field_named_never_a_500(researcher, changes, field_id, known):
    response = researcher.post("/research/new/", _form(action="submit", **changes))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), field_id)
    assert _new_requests(known) == []


def test_a_file_that_is_not_a_pdf_is_refused_beside_the_upload(northwind, researcher, known):
    fake = SimpleUploadedFile("approval.pdf", b"<html>not a pdf</html>", content_type="text/html")
    response = researcher.post("/research/new/", {**_form(), "ethics_document": fake})
    assert response.status_code == 400
    errors = field_errors(response.content.decode(), "id_ethics_document")
    assert errors == ["The approval document must be a PDF."]
    assert _new_requests(known) == []


def test_editing_a_draft_keeps_its_document_when_no_file_is_chosen(northwind, researcher, known):
    researcher.post("/research/new/", {**_form(), "ethics_document": pdf("ethics-2026.pdf")})
    [draft] = _new_requests(known)
    page = researcher.get(f"/research/{draft.id}/edit/").content.decode()
    assert "Current document:" in page and "ethics-2026.pdf" in page
    assert 'value="Blood pressure after diagnosis"' in page and 'value="I12"' in page
    assert 'value="encounters" checked' in page and 'value="labs" checked' not in page
    refused = researcher.post(f"/research/{draft.id}/edit/", _form(title="Renamed", k="1"))
    assert refused.status_code == 400
    assert "Your draft was saved" not in refused.content.decode()
    assert field_errors(refused.content.decode(), "id_k") == ["Enter a number from 2 to 100."]
    assert ResearchRequest.objects.get(pk=draft.pk).title == "Blood pressure after diagnosis"
    response = researcher.post(f"/research/{draft.id}/edit/", _form(title="Renamed study"))
    assert response.status_code == 302
    edited = ResearchRequest.objects.get(pk=draft.pk)
    assert edited.title == "Renamed study"
    assert edited.ethics_document_name == "ethics-2026.pdf"
    assert edited.ethics_document_sha256 == draft.ethics_document_sha256
    assert len(_new_requests(known)) == 1


def test_submitting_publishes_the_request_on_the_chain(northwind, researcher, known):
    researcher.post("/research/new/", {**_form(), "ethics_document": pdf()})
    [draft] = _new_requests(known)
    response = researcher.post(f"/research/{draft.id}/edit/", _form(action="submit"))
    assert response.status_code == 302 and response["Location"] == f"/research/{draft.id}/"
    submitted = ResearchRequest.objects.get(pk=draft.pk)
    assert submitted.status == RequestStatus.OPENED and submitted.tx_hash
    [payload] = _request_transactions(draft.id)
    assert payload["status"] == "opened" and payload["organisation"] == "northwind"
    assert payload["document_sha256"] == draft.ethics_document_sha256
    page = researcher.get(response["Location"]).content.decode()
    assert "No hospital has answered yet." in page
    # A submitted request cannot be edited any more.
    before = ResearchRequest.objects.get(pk=draft.pk).title
    refused = researcher.post(f"/research/{draft.id}/edit/", _form(title="Changed"))
    assert refused.status_code == 400
    assert "Only a draft can be edited." in refused.content.decode()
    assert ResearchRequest.objects.get(pk=draft.pk).title == before
    assert researcher.get(f"/research/{draft.id}/edit/").status_code == 302


def test_a_refused_submission_keeps_the_draft_and_says_why(northwind, researcher, known):
    response = researcher.post("/research/new/", _form(action="submit"))  # no document
    assert response.status_code == 400
    [draft] = _new_requests(known)
    assert draft.status == RequestStatus.DRAFT
    content = response.content.decode()
    assert "Your draft was saved, but it was not submitted" in content
    assert field_errors(content, "id_ethics_document") == ["Attach the ethics approval (PDF)."]
    # Sending the form again edits that draft rather than making another.
    assert f'action="/research/{draft.id}/edit/"' in content
    assert _request_transactions(draft.id) == []


def test_the_list_shows_the_organisations_requests_with_their_status(northwind, researcher):
    request = filed_request(northwind, title="Listed study")
    researcher.post("/research/new/", _form(title="Unsent study"))
    response = researcher.get("/research/")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'href="/research/new/"' in content and "New request" in content
    assert f'<a href="/research/{request.id}/">Listed study</a>' in content
    assert "Unsent study" in content
    assert '<span class="badge badge-ok">Open</span>' in content
    assert '<span class="badge badge-pending">Draft</span>' in content


# --- Who sees what ---------------------------------------------------------------------


def test_another_organisation_gets_404_for_the_request_and_its_document(northwind, southbank):
    request = filed_request(northwind)
    other = login_client(southbank, "southbank-researcher")
    for path in (f"/research/{request.id}/", f"/research/{request.id}/document/"):
        response = other.get(path)
        assert response.status_code == 404
        assert "Hypertension outcomes" not in response.content.decode()
    before = _request_transactions(request.id)
    assert other.post(f"/research/{request.id}/withdraw/").status_code == 404
    assert other.post(f"/research/{request.id}/close/").status_code == 404
    assert ResearchRequest.objects.get(pk=request.pk).status == RequestStatus.OPENED
    assert _request_transactions(request.id) == before


def test_the_document_is_served_as_a_pdf_to_the_researcher_and_hospital_admins(
    northwind, alpha, researcher, alpha_admin
):
    request = filed_request(northwind)
    for client in (researcher, alpha_admin):
        response = client.get(f"/research/{request.id}/document/")
        assert response.status_code == 200
        assert response["Content-Type"] == "application/pdf"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Disposition"] == 'inline; filename="approval.pdf"'
        assert response.content == PDF
    patient = login_client(alpha, "alpha-patient")
    assert patient.get(f"/research/{request.id}/document/").status_code == 404


def test_a_researcher_reaches_no_hospital_page_and_no_patient(northwind, alpha, researcher):
    for path in ("/records/patients/", "/research/review/", "/research/invitations/"):
        response = researcher.get(path)
        assert response.status_code in (403, 404), path
        assert "Li Wei" not in response.content.decode()
        assert "A-100234" not in response.content.decode()
    api = researcher.get("/api/v1/patients/")
    assert api.status_code in (403, 404)
    assert b"Li Wei" not in api.content and b"A-100234" not in api.content
    # Her session is northwind's: at a hospital's host she is nobody.
    at_alpha = researcher.get("/research/review/", HTTP_HOST=alpha.domain_name)
    assert at_alpha.status_code == 302 and "/accounts/login/" in at_alpha["Location"]
    at_alpha_api = researcher.get("/api/v1/patients/", HTTP_HOST=alpha.domain_name)
    assert at_alpha_api.status_code in (401, 403)
    assert b"Li Wei" not in at_alpha_api.content


def test_hospital_roles_get_404_on_researcher_pages(northwind, alpha, alpha_admin):
    request = filed_request(northwind)
    patient = login_client(alpha, "alpha-patient")
    doctor = login_client(alpha, "alpha-doctor")
    for client in (alpha_admin, patient, doctor):
        for path in ("/research/", "/research/new/", f"/research/{request.id}/"):
            assert client.get(path).status_code == 404, path
    for client in (patient, doctor):
        assert client.get("/research/review/").status_code == 404
    assert doctor.get("/research/invitations/").status_code == 404
    assert client_for(alpha).get("/research/review/").status_code == 302  # sign in first


def test_navigation_offers_research_pages_by_role(northwind, alpha):
    home = login_client(northwind, "northwind-researcher").get("/").content.decode()
    assert '<a href="/research/">Research requests</a>' in home
    admin_home = login_client(alpha, "alpha-admin").get("/").content.decode()
    assert '<a href="/research/review/">Research requests</a>' in admin_home
    assert 'href="/research/invitations/"' not in admin_home
    patient_home = login_client(alpha, "alpha-patient").get("/").content.decode()
    assert '<a href="/research/invitations/">Research</a>' in patient_home
    assert 'href="/research/review/"' not in patient_home
    doctor_home = login_client(alpha, "alpha-doctor").get("/").content.decode()
    assert 'href="/research/' not in doctor_home


# --- Hospitals answer; the researcher follows ---------------------------------------------


def test_an_admin_approves_releases_and_the_researcher_downloads_the_dataset(
    northwind, southbank, alpha, researcher, alpha_admin
):
    people = _two_patients(alpha)
    request = filed_request(northwind, title="Kidney and blood pressure", codes="I12")

    listing = alpha_admin.get("/research/review/")
    assert listing.status_code == 200
    row = re.search(rf'<tr data-request="{request.id}">(.*?)</tr>', listing.content.decode(), re.S)
    assert row is not None
    assert "Kidney and blood pressure" in row.group(1) and NORTHWIND in row.group(1)
    assert "Encounters, Diagnoses, Medications, Vital signs" in row.group(1)
    assert "De-identified rows" in row.group(1) and "Not answered" in row.group(1)

    page = alpha_admin.get(f"/research/review/{request.id}/").content.decode()
    assert f'href="/research/{request.id}/document/"' in page
    assert "NW-REC-2026-014" in page and 'value="approve"' in page
    assert 'value="release"' not in page  # not before approving

    # A reason is required: nothing is decided without one.
    refused = alpha_admin.post(f"/research/review/{request.id}/", {"action": "approve"})
    assert refused.status_code == 400
    assert field_errors(refused.content.decode(), "id_reason") == [
        "Give a reason: the organisation will see it."
    ]
    assert not Participation.objects.filter(request=request).exists()

    too_long = alpha_admin.post(
        f"/research/review/{request.id}/", {"action": "approve", "reason": "x" * 2001}
    )
    assert too_long.status_code == 400
    assert field_errors(too_long.content.decode(), "id_reason") == ["At most 2000 characters."]
    assert not Participation.objects.filter(request=request).exists()

    response = alpha_admin.post(
        f"/research/review/{request.id}/",
        {"action": "approve", "reason": "Ethics approval and data protection checked."},
    )
    assert response.status_code == 302
    participation = Participation.objects.get(request=request)
    assert participation.status == ParticipationStatus.APPROVED
    assert participation.decided_by_name == "Amir Adams"
    # Deciding twice is refused, with the reason, and changes nothing.
    again = alpha_admin.post(
        f"/research/review/{request.id}/", {"action": "decline", "reason": "Changed my mind"}
    )
    assert again.status_code == 400 and "approved it already" in again.content.decode()
    assert Participation.objects.get(request=request).status == ParticipationStatus.APPROVED

    with tenant_context(alpha):
        invitations_make(request=request)
        for username in people:
            research_answer(
                user=User.objects.get(username=username),
                password=PASSWORD,
                request_id=request.id,
                take_part=True,
            )
    page = alpha_admin.get(f"/research/review/{request.id}/").content.decode()
    assert 'value="release"' in page and "de-identified rows" in page

    response = alpha_admin.post(f"/research/review/{request.id}/", {"action": "release"})
    assert response.status_code == 302
    waiting = alpha_admin.get(response["Location"]).content.decode()
    assert "Release being prepared" in waiting and 'value="release"' not in waiting
    assert not Release.objects.filter(request=request).exists()
    run_release_task(alpha, request, "alpha-admin")  # what the worker does
    release = Release.objects.get(request=request)
    assert (release.rows, release.suppressed) == (8, 0)
    assert alpha_admin.get(response["Location"]).content.decode().count(release.sha256) == 1

    # The researcher sees the answer, the totals and the chain check.
    detail = researcher.get(f"/research/{request.id}/")
    assert detail.status_code == 200
    content = detail.content.decode()
    answers = re.search(r'<tr data-hospital="alpha">(.*?)</tr>', content, re.S).group(1)
    assert ALPHA in answers and "Released" in answers
    assert "Ethics approval and data protection checked." in answers
    released = re.search(
        r'<article class="release" data-hospital="alpha">(.*?)</article>', content, re.S
    )
    assert released is not None, content
    assert '<dd data-field="rows">8</dd>' in released.group(1)
    assert '<dd data-field="suppressed">0 ' in released.group(1)
    assert "The file matches the chain" in released.group(1)
    assert f'href="/research/datasets/{release.pk}/"' in released.group(1)
    assert 'data-live-refresh="/research/' in content and "Reload to see changes." in content
    assert "js/events.js" in content

    download = researcher.get(f"/research/datasets/{release.pk}/")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert download["Content-Disposition"] == (
        f'attachment; filename="research-alpha-{str(request.id)[:8]}.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("dataset.csv").decode())))
    assert len(rows) == 8
    assert {row["item"] for row in rows} == {"encounter", "diagnosis", "medication", "vital"}
    assert len({row["pseudonym"] for row in rows}) == 2
    assert {(row["age_band"], row["sex"]) for row in rows} == {("40-44", "female")}
    for name in ("Zelda", "Quixotewright", "Fran", "Oyelaran", "RN-PAGE"):
        assert name.encode() not in download.content

    # Another organisation: 403 for the dataset, 404 for the request.
    other = login_client(southbank, "southbank-researcher")
    refused = other.get(f"/research/datasets/{release.pk}/")
    assert refused.status_code == 403 and b"dataset.csv" not in refused.content
    assert other.get(f"/research/{request.id}/").status_code == 404
    assert researcher.get(f"/research/datasets/{release.pk + 10_000}/").status_code == 404
    assert researcher.get(f"/research/datasets/{'9' * 30}/").status_code == 404

    # Something was released: withdrawing is refused and changes nothing; closing works.
    before = _request_transactions(request.id)
    refused = researcher.post(f"/research/{request.id}/withdraw/")
    assert refused.status_code == 400
    assert "close the request instead" in refused.content.decode()
    assert ResearchRequest.objects.get(pk=request.pk).status == RequestStatus.OPENED
    assert _request_transactions(request.id) == before
    closed = researcher.post(f"/research/{request.id}/close/")
    assert closed.status_code == 302
    assert ResearchRequest.objects.get(pk=request.pk).status == RequestStatus.CLOSED
    assert _request_transactions(request.id)[-1]["status"] == "closed"


def test_a_researcher_withdraws_an_open_request_before_any_release(northwind, researcher):
    request = filed_request(northwind)
    page = researcher.get(f"/research/{request.id}/").content.decode()
    assert f'action="/research/{request.id}/withdraw/"' in page
    assert "Withdraw the request" in page and "It cannot be undone." in page
    assert researcher.get(f"/research/{request.id}/withdraw/").status_code == 405
    response = researcher.post(f"/research/{request.id}/withdraw/")
    assert response.status_code == 302
    assert ResearchRequest.objects.get(pk=request.pk).status == RequestStatus.WITHDRAWN
    assert _request_transactions(request.id)[-1]["status"] == "withdrawn"
    page = researcher.get(f"/research/{request.id}/").content.decode()
    assert "Withdraw the request" not in page and "Close the request" not in page


def test_an_aggregate_result_is_a_table_with_small_cells_shown_as_such(northwind, researcher):
    request = ResearchRequest.objects.get(organisation=northwind, title=AGGREGATE_TITLE)
    cells = request.aggregate_result["cells"]
    content = researcher.get(f"/research/{request.id}/").content.decode()
    assert '<table class="table aggregate-table">' in content
    for key, value in cells.items():
        if value == 0:
            continue
        code, band, sex = key.split("|")
        row = re.search(
            rf'<td data-label="Code">{re.escape(code)}</td>\s*'
            rf'<td data-label="Age band">{re.escape(band)}</td>(.*?)</tr>',
            content,
            re.S,
        )
        assert row is not None, key
        cell = re.search(rf'<td data-label="{sex.capitalize()}"[^>]*>(.*?)</td>', row.group(1))
        assert html.unescape(cell.group(1)) == str(value), key
    assert any(isinstance(value, str) for value in cells.values())  # the demo has a small cell
    assert 'class="small-cell">&lt; 2</td>' in content


# --- Patients ------------------------------------------------------------------------------


def test_a_patient_takes_part_with_her_password_and_withdraws(northwind, alpha):
    people = _two_patients(alpha)
    request = filed_request(northwind, title="Kidney and blood pressure", codes="I12")
    _approve(alpha, request)
    patient = login_client(alpha, "page-zelda")
    page = patient.get("/research/invitations/")
    assert page.status_code == 200
    content = page.content.decode()
    card = re.search(
        rf'<article class="card research-card invitation" id="request-{request.id}"(.*?)</article>',
        content,
        re.S,
    )
    assert card is not None
    text = card.group(1)
    assert "Kidney and blood pressure" in text and NORTHWIND in text
    assert "Not answered yet" in text
    assert "Normal:</strong> Encounters, Diagnoses, Medications, Vital signs" in text
    assert "signs a consent with your own key" in text
    assert 'value="take_part"' in text and 'value="decline"' in text

    # A wrong password: the form again with the reason, nothing signed.
    before = _access_transactions()
    wrong = patient.post(
        "/research/invitations/",
        {"action": "take_part", "request": str(request.id), "password": "not-her-password"},
    )
    assert wrong.status_code == 400
    assert field_errors(wrong.content.decode(), f"password-{request.id}") == [
        "That is not your password."
    ]
    assert _access_transactions() == before
    with tenant_context(alpha):
        invitation = ResearchInvitation.objects.get(
            request_id=request.id, patient=people["page-zelda"]
        )
        assert invitation.status == InvitationStatus.PENDING and not invitation.tx_hash

    taken = patient.post(
        "/research/invitations/",
        {"action": "take_part", "request": str(request.id), "password": PASSWORD},
    )
    assert taken.status_code == 302 and taken["Location"] == "/research/invitations/"
    assert _access_transactions() == before + 1
    with tenant_context(alpha):
        invitation.refresh_from_db()
        assert invitation.status == InvitationStatus.OPTED_IN and invitation.tx_hash
    content = patient.get("/research/invitations/").content.decode()
    assert "Taking part" in content and 'value="withdraw"' in content
    assert (
        'value="take_part"'
        not in content.split(f'id="request-{request.id}"')[1].split("</article>")[0]
    )

    withdrawn = patient.post(
        "/research/invitations/",
        {"action": "withdraw", "request": str(request.id), "password": PASSWORD},
    )
    assert withdrawn.status_code == 302
    assert _access_transactions() == before + 2
    with tenant_context(alpha):
        invitation.refresh_from_db()
        assert invitation.status == InvitationStatus.WITHDRAWN
    assert "Withdrew" in patient.get("/research/invitations/").content.decode()


def test_no_thanks_needs_no_password_and_signs_nothing(northwind, alpha):
    people = _two_patients(alpha)
    request = filed_request(northwind, codes="I12")
    _approve(alpha, request)
    patient = login_client(alpha, "page-fran")
    before = _access_transactions()
    response = patient.post(
        "/research/invitations/", {"action": "decline", "request": str(request.id)}
    )
    assert response.status_code == 302
    assert _access_transactions() == before
    with tenant_context(alpha):
        invitation = ResearchInvitation.objects.get(
            request_id=request.id, patient=people["page-fran"]
        )
    assert invitation.status == InvitationStatus.OPTED_OUT
    assert "Not taking part" in patient.get("/research/invitations/").content.decode()


def test_a_patient_cannot_answer_a_request_she_was_not_asked_about(northwind, alpha):
    _two_patients(alpha)
    request = filed_request(northwind, codes="I12")  # alpha has not approved: no invitation
    patient = login_client(alpha, "page-zelda")
    assert f"request-{request.id}" not in patient.get("/research/invitations/").content.decode()
    before = _access_transactions()
    response = patient.post(
        "/research/invitations/",
        {"action": "take_part", "request": str(request.id), "password": PASSWORD},
    )
    assert response.status_code == 403
    assert _access_transactions() == before
    junk = patient.post("/research/invitations/", {"action": "take_part", "request": "junk"})
    assert junk.status_code == 404


def test_never_ask_me_is_saved(alpha):
    patient = login_client(alpha, "alpha-patient-2")
    page = patient.get("/research/invitations/").content.decode()
    assert 'value="always_ask"' in page and 'value="never_ask"' in page
    assert re.search(r'value="always_ask"[^>]*checked', page)
    refused = patient.post("/research/invitations/", {"action": "preference", "choice": "maybe"})
    assert refused.status_code == 400
    assert field_errors(refused.content.decode(), "id_choice")
    with tenant_context(alpha):
        maria = Patient.objects.get(user__username="alpha-patient-2")
        assert not ResearchPreference.objects.filter(patient=maria).exists()
    response = patient.post(
        "/research/invitations/", {"action": "preference", "choice": "never_ask"}
    )
    assert response.status_code == 302
    with tenant_context(alpha):
        assert ResearchPreference.objects.get(patient=maria).choice == "never_ask"
    page = patient.get("/research/invitations/").content.decode()
    assert re.search(r'value="never_ask"[^>]*checked', page)
