"""The research API: researchers file and follow requests, hospital admins answer
and release, researchers download their datasets; everyone else is refused and
nothing changes."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from chain.models import PendingTransaction
from consent.models import InvitationStatus, ResearchInvitation
from medportal.research.models import (
    AggregateShare,
    Participation,
    Release,
    RequestStatus,
    ResearchRequest,
)
from medportal.research.services import invitations_make, research_answer
from tests.conftest import PASSWORD, client_for, login_client
from tests.research.helpers import (
    PDF,
    REQUEST_DATA,
    filed_request,
    patient_with_entries,
    run_release_task,
)

pytestmark = pytest.mark.django_db

REQUESTS = "/api/v1/research/requests/"
JSON = "application/json"


def _url(request_id, action: str = "") -> str:
    return f"{REQUESTS}{request_id}/{action + '/' if action else ''}"


def _body(**changes) -> dict:
    return {
        **REQUEST_DATA,
        "k": 2,
        "expires_at": (timezone.localdate() + timedelta(days=90)).isoformat(),
        **changes,
    }


def _token_client(tenant, username):
    with tenant_context(tenant):
        token = Token.objects.create(user=User.objects.get(username=username))
    return client_for(tenant, HTTP_AUTHORIZATION=f"Token {token.key}")


def _post(client, url, data=None):
    return client.post(url, data or {}, content_type=JSON)


def _chain_statuses(request_id) -> list[str]:
    with schema_context("public"):
        return list(
            PendingTransaction.objects.filter(kind="request", payload__request=str(request_id))
            .order_by("id")
            .values_list("payload__status", flat=True)
        )


def _state(request_id) -> tuple:
    """What a refused call must leave as it was."""
    research_request = ResearchRequest.objects.get(pk=request_id)
    return (
        research_request.status,
        research_request.title,
        research_request.updated_at,
        sorted(
            Participation.objects.filter(request_id=request_id).values_list(
                "hospital__slug", "status"
            )
        ),
        Release.objects.filter(request_id=request_id).count(),
        AggregateShare.objects.filter(request_id=request_id).count(),
        _chain_statuses(request_id),
    )


@pytest.fixture
def researcher(northwind):
    return login_client(northwind, "northwind-researcher")


# --- Filing ------------------------------------------------------------------------------


def test_a_researcher_creates_a_draft_and_finds_it_in_the_list_and_detail(northwind, researcher):
    response = _post(researcher, REQUESTS, _body(codes="I10, E11", age_min=40, sex="female"))
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["status"] == "draft"
    assert (created["title"], created["codes"], created["k"]) == (
        "Hypertension outcomes",
        ["I10", "E11"],
        2,
    )
    assert (created["age_min"], created["age_max"], created["sex"]) == (40, None, "female")
    assert created["categories"] == ["encounters", "diagnoses", "medications", "vitals"]
    assert created["organisation"] == "northwind"
    assert created["participations"] == created["releases"] == []
    assert created["ethics_document_url"] is None
    listed = researcher.get(REQUESTS)
    assert listed.status_code == 200
    assert created["id"] in {row["id"] for row in listed.json()}
    detail = researcher.get(_url(created["id"]))
    assert detail.status_code == 200
    assert detail.json() == created
    assert _chain_statuses(created["id"]) == []  # nothing leaves before submission


def test_a_token_client_creates_and_submits_at_once_with_a_base64_pdf(northwind):
    client = _token_client(northwind, "northwind-researcher")
    response = _post(
        client,
        REQUESTS,
        _body(
            submit=True,
            ethics_document_base64=base64.b64encode(PDF).decode(),
            ethics_document_name="rec-approval.pdf",
        ),
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "opened" and body["submitted_at"] and body["tx_hash"]
    assert body["ethics_document_sha256"] == hashlib.sha256(PDF).hexdigest()
    assert body["ethics_document_name"] == "rec-approval.pdf"
    assert _chain_statuses(body["id"]) == ["opened"]
    document = client.get(body["ethics_document_url"])
    assert document.status_code == 200
    assert document["Content-Type"] == "application/pdf"
    assert b"".join(document) == PDF


def test_a_multipart_upload_with_the_document_file(northwind, researcher):
    response = researcher.post(
        REQUESTS,
        {
            **{name: value for name, value in _body().items() if name != "categories"},
            "categories": ["diagnoses", "vitals"],
            "codes": "I10, E11",
            "age_min": "",
            "ethics_document": SimpleUploadedFile("approval.pdf", PDF),
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["categories"], body["codes"], body["age_min"]) == (
        ["diagnoses", "vitals"],
        ["I10", "E11"],
        None,
    )
    assert body["ethics_document_sha256"] == hashlib.sha256(PDF).hexdigest()


def test_a_failed_submission_keeps_the_draft_and_says_so(northwind, researcher):
    before = ResearchRequest.objects.count()
    response = _post(researcher, REQUESTS, _body(submit=True))  # no approval document
    assert response.status_code == 400
    body = response.json()
    assert body["ethics_document"] == ["Attach the ethics approval (PDF)."]
    assert body["draft"]["status"] == "draft"
    assert ResearchRequest.objects.count() == before + 1
    saved = ResearchRequest.objects.get(pk=body["draft"]["id"])
    assert saved.status == RequestStatus.DRAFT and saved.title == "Hypertension outcomes"
    assert _chain_statuses(saved.pk) == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"k": 1}, "k", "from 2 to 100"),
        ({"k": "many"}, "k", "valid integer"),
        ({"codes": "I10, ZZ9"}, "codes", "Not an ICD-10 code"),
        ({"codes": 5}, "codes", "comma-separated string or a list"),
        ({"age_min": 60, "age_max": 40}, "age_max", "must not be below"),
        ({"sex": "robot"}, "sex", "not a valid choice"),
        ({"period_from": "2025-01-01", "period_to": "2020-01-01"}, "period_to", "must end"),
        ({"period_from": "yesterday"}, "period_from", "wrong format"),
        ({"categories": ["clinical_notes"]}, "categories", "cannot carry"),
        ({"expires_at": "2001-01-01"}, "expires_at", "after today"),
        ({"title": ""}, "title", "required"),
        ({"answer": "everything"}, "answer", "not a valid choice"),
        ({"ethics_document_base64": "not base64 at all!"}, "ethics_document_base64", "base64"),
        (
            {"ethics_document_base64": base64.b64encode(b"MZ\x90\x00 an executable").decode()},
            "ethics_document_base64",
            "must be a PDF",
        ),
    ],
)
def test_bad_fields_are_a_400_naming_the_field_and_nothing_is_saved(
    northwind, researcher, changes, field, message
):
    before = ResearchRequest.objects.count()
    response = _post(researcher, REQUESTS, _body(submit=True, **changes))
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert ResearchRequest.objects.count() == before


def test_a_researcher_edits_a_draft_then_submits_it(northwind, researcher):
    created = _post(researcher, REQUESTS, _body(title="First title")).json()
    edited = researcher.patch(_url(created["id"]), {"title": "Better title"}, content_type=JSON)
    assert edited.status_code == 200, edited.json()
    assert edited.json()["title"] == "Better title"
    assert {k: v for k, v in edited.json().items() if k not in ("title", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("title", "updated_at")
    }
    refused = researcher.patch(_url(created["id"]), {"k": 0}, content_type=JSON)
    assert refused.status_code == 400 and "k" in refused.json()
    assert ResearchRequest.objects.get(pk=created["id"]).k == 2
    cleared = researcher.patch(
        _url(created["id"]),
        {"codes": [], "ethics_document_base64": base64.b64encode(PDF).decode()},
        content_type=JSON,
    )
    assert cleared.json()["codes"] == []
    submitted = _post(researcher, _url(created["id"], "submit"))
    assert submitted.status_code == 200, submitted.json()
    assert submitted.json()["status"] == "opened"
    late = researcher.patch(_url(created["id"]), {"title": "Too late"}, content_type=JSON)
    assert late.status_code == 400
    assert late.json() == {"request": ["Only a draft can be edited."]}
    assert ResearchRequest.objects.get(pk=created["id"]).title == "Better title"
    again = _post(researcher, _url(created["id"], "submit"))
    assert again.status_code == 400
    assert _chain_statuses(created["id"]) == ["opened"]


def test_withdrawing_a_draft_deletes_it_and_an_open_request_is_withdrawn(northwind, researcher):
    draft = _post(researcher, REQUESTS, _body()).json()
    assert _post(researcher, _url(draft["id"], "withdraw")).status_code == 204
    assert not ResearchRequest.objects.filter(pk=draft["id"]).exists()
    assert researcher.get(_url(draft["id"])).status_code == 404
    filed = filed_request(northwind)
    withdrawn = _post(researcher, _url(filed.id, "withdraw"))
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    closing = _post(researcher, _url(filed.id, "close"))
    assert closing.status_code == 400
    assert closing.json() == {"request": ["Only an open request can be closed."]}
    other = filed_request(northwind, title="Second")
    closed = _post(researcher, _url(other.id, "close"))
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert _chain_statuses(other.id) == ["opened", "closed"]


def test_another_organisations_request_is_a_404_and_nothing_changes(northwind, southbank):
    draft_id = _post(login_client(northwind, "northwind-researcher"), REQUESTS, _body()).json()[
        "id"
    ]
    filed = filed_request(northwind)
    other = login_client(southbank, "southbank-researcher")
    assert draft_id not in {row["id"] for row in other.get(REQUESTS).json()}
    for request_id in (draft_id, filed.id):
        before = _state(request_id)
        assert other.get(_url(request_id)).status_code == 404
        patched = other.patch(_url(request_id), {"title": "Mine now"}, content_type=JSON)
        assert patched.status_code == 404
        for action in ("submit", "withdraw", "close"):
            assert _post(other, _url(request_id, action)).status_code == 404
        assert other.get(_url(request_id, "ethics-document")).status_code == 404
        assert _state(request_id) == before
    assert other.get(_url("not-a-uuid")).status_code == 404


def test_without_credentials_the_api_is_a_401(northwind):
    client = client_for(northwind)
    assert client.get(REQUESTS).status_code == 401
    assert _post(client, REQUESTS, _body()).status_code == 401


# --- Hospitals ----------------------------------------------------------------------------


def test_an_admin_lists_submitted_requests_and_answers_with_a_reason(northwind, alpha, beta):
    draft = _post(login_client(northwind, "northwind-researcher"), REQUESTS, _body()).json()
    filed = filed_request(northwind, title="Answered by hospitals")
    alpha_admin = login_client(alpha, "alpha-admin")
    listed = {row["id"]: row for row in alpha_admin.get(REQUESTS).json()}
    assert str(filed.id) in listed and draft["id"] not in listed
    assert listed[str(filed.id)]["participations"] == []
    assert alpha_admin.get(_url(draft["id"])).status_code == 404

    beta_admin = _token_client(beta, "beta-admin")
    missing = _post(beta_admin, _url(filed.id, "decline"), {"reason": "  "})
    assert missing.status_code == 400
    assert missing.json() == {"reason": ["Give a reason: the organisation will see it."]}
    assert not Participation.objects.filter(request=filed).exists()
    declined = _post(beta_admin, _url(filed.id, "decline"), {"reason": "No capacity this year"})
    assert declined.status_code == 200
    assert (declined.json()["hospital"], declined.json()["status"]) == ("beta", "declined")
    approved = _post(alpha_admin, _url(filed.id, "approve"), {"reason": "Ethics checked"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    twice = _post(alpha_admin, _url(filed.id, "decline"), {"reason": "Changed my mind"})
    assert twice.status_code == 400
    assert twice.json() == {"request": ["This hospital has approved it already."]}

    seen = login_client(northwind, "northwind-researcher").get(_url(filed.id)).json()
    answers = {(p["hospital"], p["status"], p["reason"]) for p in seen["participations"]}
    assert answers == {
        ("alpha", "approved", "Ethics checked"),
        ("beta", "declined", "No capacity this year"),
    }
    seen_by_alpha = alpha_admin.get(_url(filed.id)).json()
    assert [p["hospital"] for p in seen_by_alpha["participations"]] == ["alpha"]
    assert seen_by_alpha["aggregate"] is None
    assert _chain_statuses(filed.id) == ["opened", "declined", "approved"]


def test_a_doctor_cannot_approve_list_or_release_and_nothing_changes(northwind, alpha):
    filed = filed_request(northwind)
    before = _state(filed.id)
    doctor = login_client(alpha, "alpha-doctor")
    assert _post(doctor, _url(filed.id, "approve"), {"reason": "Looks fine"}).status_code == 403
    assert _post(doctor, _url(filed.id, "release")).status_code == 403
    assert doctor.get(REQUESTS).status_code == 403
    assert doctor.get(_url(filed.id)).status_code == 403
    assert _post(doctor, REQUESTS, _body()).status_code == 403
    assert _state(filed.id) == before


def test_a_researcher_gets_403_on_hospital_apis_and_admin_actions(northwind, alpha):
    filed = filed_request(northwind)
    before = _state(filed.id)
    researcher = _token_client(northwind, "northwind-researcher")
    for path in ("/api/v1/patients/", "/api/v1/consents/", "/api/v1/records/"):
        assert researcher.get(path).status_code == 403, path
    assert _post(researcher, "/api/v1/patients/", {"given_name": "X"}).status_code == 403
    for action in ("approve", "decline", "release"):
        refused = _post(researcher, _url(filed.id, action), {"reason": "I approve myself"})
        assert refused.status_code == 403, action
        assert refused.json() == {"detail": "Your role does not give access to this resource."}
    assert researcher.get("/api/v1/research/invitations/").status_code == 403
    assert _state(filed.id) == before


# --- Releases and datasets ------------------------------------------------------------------


@pytest.fixture
def opted_in(northwind, alpha):
    """A request alpha approved (through the API) and two women of 40-44 with I10
    opted in: a class of two, kept at k=2."""
    for username, given, age in (("api-ria", "Ria", 42), ("api-una", "Una", 43)):
        patient_with_entries(
            alpha,
            username=username,
            given=given,
            family="Apitest",
            sex="female",
            age=age,
            number=f"RN-{username}",
            codes=["I10"],
        )
    filed = filed_request(northwind, codes="I10", age_min="40", age_max="44", sex="female", k="2")
    admin = login_client(alpha, "alpha-admin")
    assert _post(admin, _url(filed.id, "approve"), {"reason": "Ethics checked"}).status_code == 200
    with tenant_context(alpha):
        invitations_make(request=filed)  # the approval's task, run here
    for username in ("api-ria", "api-una"):
        with tenant_context(alpha):
            research_answer(
                user=User.objects.get(username=username),
                password=PASSWORD,
                request_id=filed.id,
                take_part=True,
            )
    return filed


def test_an_admin_releases_and_the_researcher_downloads_the_rows(northwind, alpha, opted_in):
    admin = login_client(alpha, "alpha-admin")
    started = _post(admin, _url(opted_in.id, "release"))
    assert started.status_code == 202, started.json()
    assert started.json() == {"status": "being prepared"}
    again = _post(admin, _url(opted_in.id, "release"))
    assert again.status_code == 400 and "being prepared already" in str(again.json())
    assert not Release.objects.filter(request=opted_in).exists()
    run_release_task(alpha, opted_in, "alpha-admin")  # what the worker does
    summary = admin.get(_url(opted_in.id)).json()["releases"][0]
    assert (summary["hospital"], summary["rows"], summary["suppressed"]) == ("alpha", 8, 0)
    assert summary["download_url"] is None  # the hospital cannot open it
    release = Release.objects.get(pk=summary["id"])
    assert summary["sha256"] == release.sha256 and summary["chain_matches"] is True

    researcher = login_client(northwind, "northwind-researcher")
    detail = researcher.get(_url(opted_in.id)).json()
    (listed,) = detail["releases"]
    assert {k: listed[k] for k in ("id", "hospital", "rows", "suppressed", "sha256")} == {
        "id": release.pk,
        "hospital": "alpha",
        "rows": 8,
        "suppressed": 0,
        "sha256": release.sha256,
    }
    assert listed["chain_matches"] is True and listed["file_matches"] is True
    assert (
        listed["download_url"]
        == f"http://{northwind.domain_name}/api/v1/research/datasets/{release.pk}"
    )
    assert [p["status"] for p in detail["participations"]] == ["released"]

    for url in (listed["download_url"], f"/api/v1/research/datasets/{release.pk}/"):
        download = researcher.get(url, HTTP_ACCEPT="application/zip")
        assert download.status_code == 200
        assert download["Content-Type"] == "application/zip"
        assert download["Content-Disposition"].startswith("attachment; filename=")
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            rows = list(csv.DictReader(io.StringIO(archive.read("dataset.csv").decode())))
        assert len(rows) == 8
        assert len({row["pseudonym"] for row in rows}) == 2
        assert {(row["age_band"], row["sex"], row["hospital"]) for row in rows} == {
            ("40-44", "female", "alpha")
        }
        assert {row["code"] for row in rows if row["item"] == "diagnosis"} == {"I10"}
        assert b"Apitest" not in download.content


def test_a_dataset_is_refused_to_another_organisation_and_to_an_admin(
    northwind, southbank, alpha, opted_in
):
    admin = login_client(alpha, "alpha-admin")
    assert _post(admin, _url(opted_in.id, "release")).status_code == 202
    release_id = run_release_task(alpha, opted_in, "alpha-admin").pk
    with tenant_context(northwind):
        from medportal.research.services import dataset_open

        archive = dataset_open(
            user=User.objects.get(username="northwind-researcher"),
            release=Release.objects.get(pk=release_id),
        )
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        dataset = opened.read("dataset.csv")
    url = f"/api/v1/research/datasets/{release_id}"
    other = login_client(southbank, "southbank-researcher")
    for client, expected in ((other, 403), (admin, 403)):
        for accept in ("application/json", "application/zip", "*/*"):
            refused = client.get(url, HTTP_ACCEPT=accept)
            assert refused.status_code == expected
            assert refused["Content-Type"] == "application/json"
            assert not refused.has_header("Content-Disposition")
            assert b"PK" not in refused.content[:4]
            assert dataset[:40] not in refused.content and b"pseudonym" not in refused.content
    assert other.get(_url(opted_in.id)).status_code == 404
    researcher = login_client(northwind, "northwind-researcher")
    assert researcher.get("/api/v1/research/datasets/999999").status_code == 404
    assert researcher.get("/api/v1/research/datasets/999999/").status_code == 404
    assert researcher.get("/api/v1/research/datasets/99999999999999999999").status_code == 404


def test_releasing_needs_an_approval_and_an_aggregate_release_sends_shares(northwind, alpha, beta):
    rows_request = filed_request(northwind)
    refused = _post(login_client(beta, "beta-admin"), _url(rows_request.id, "release"))
    assert refused.status_code == 400
    assert refused.json() == {"request": ["Approve the request before releasing data."]}
    assert not Release.objects.filter(request=rows_request).exists()

    counted = filed_request(northwind, answer="aggregate", codes="I10", k="2")
    admin = login_client(alpha, "alpha-admin")
    _post(admin, _url(counted.id, "approve"), {"reason": "Counts only: fine"})
    sent = _post(admin, _url(counted.id, "release"))
    assert sent.status_code == 202
    assert sent.json() == {"status": "being prepared"}
    assert run_release_task(alpha, counted, "alpha-admin") is None
    assert AggregateShare.objects.filter(request=counted, sender="alpha").count() == 2
    detail = login_client(northwind, "northwind-researcher").get(_url(counted.id)).json()
    assert detail["aggregate"] == {"parties": ["alpha"], "result": None, "sha256": ""}
    assert detail["releases"] == []


# --- Patients -----------------------------------------------------------------------------


def test_a_patient_lists_invitations_and_answers_through_the_api(northwind, alpha):
    patient_with_entries(
        alpha,
        username="api-vera",
        given="Vera",
        family="Apitest",
        sex="female",
        age=55,
        number="RN-api-vera",
        codes=["E11.9"],
    )
    filed = filed_request(northwind, codes="E11", age_min="50", age_max="60", sex="female")
    uninvited = filed_request(northwind, title="Not for Vera", codes="J45")
    _post(login_client(alpha, "alpha-admin"), _url(filed.id, "approve"), {"reason": "Fine"})
    with tenant_context(alpha):
        invitations_make(request=filed)
    vera = login_client(alpha, "api-vera")
    listed = vera.get("/api/v1/research/invitations/")
    assert listed.status_code == 200
    (invitation,) = [row for row in listed.json() if row["request"] == str(filed.id)]
    assert (invitation["status"], invitation["can_answer"]) == ("pending", True)
    answer = f"/api/v1/research/invitations/{filed.id}/answer/"
    wrong = _post(vera, answer, {"take_part": True, "password": "not her password"})
    assert wrong.status_code == 400 and "password" in wrong.json()
    answered = _post(vera, answer, {"take_part": True, "password": PASSWORD})
    assert answered.status_code == 200
    assert answered.json() == {"status": InvitationStatus.OPTED_IN}
    with tenant_context(alpha):
        assert (
            ResearchInvitation.objects.get(
                request_id=filed.id, patient__user__username="api-vera"
            ).status
            == InvitationStatus.OPTED_IN
        )
    not_asked = _post(
        vera, f"/api/v1/research/invitations/{uninvited.id}/answer/", {"take_part": True}
    )
    assert not_asked.status_code == 404
    assert vera.get(REQUESTS).status_code == 403
