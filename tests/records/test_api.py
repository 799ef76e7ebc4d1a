"""The records API: patients and records at a hospital's host, who may do what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from records.models import Patient, Record
from tests.conftest import client_for, login_client

pytestmark = pytest.mark.django_db


def _patient(tenant, username) -> Patient:
    with tenant_context(tenant):
        return Patient.objects.get(user__username=username)


def _record_of(tenant, username) -> Record:
    with tenant_context(tenant):
        return Record.objects.filter(patient__user__username=username).order_by("created_at")[0]


def _counts(tenant) -> tuple[int, int, int]:
    with tenant_context(tenant):
        return Patient.objects.count(), Record.objects.count(), User.objects.count()


def _content(**overrides) -> dict:
    content = {
        "encounter": {
            "visit_date": (timezone.localdate() - timedelta(days=1)).isoformat(),
            "department": "Cardiology",
            "chief_complaint": "Palpitations",
        },
        "diagnoses": [{"code": "i48.0", "text": "Paroxysmal AF"}],
        "vitals": [{"kind": "heart_rate", "value": "118", "unit": "/min"}],
    }
    content.update(overrides)
    return content


NEW_PATIENT = {
    "given_name": "Ada",
    "family_name": "Okafor",
    "sex": "female",
    "birth_date": "1990-01-31",
    "record_number": "A-900001",
    "email": "ada@example.org",
}


# --- Patients ---------------------------------------------------------------------


def test_staff_list_patients_with_identity(alpha):
    response = login_client(alpha, "alpha-admin").get("/api/v1/patients/")
    assert response.status_code == 200
    rows = {row["record_number"]: row for row in response.json()}
    assert {"A-100234", "A-100871"} <= set(rows)
    li = rows["A-100234"]
    assert (li["given_name"], li["family_name"], li["sex"], li["birth_date"]) == (
        "Li",
        "Wei",
        "female",
        "1984-03-14",
    )
    assert li["id"] == str(_patient(alpha, "alpha-patient").id)
    assert li["pseudonym"]
    assert not any(row["record_number"].startswith("B-") for row in rows.values())


@pytest.mark.parametrize("query", ["A-100871", "Maria Garcia"])
def test_staff_search_patients_by_exact_number_or_name(alpha, query):
    response = login_client(alpha, "alpha-doctor").post(
        "/api/v1/patients/search", {"q": query}, content_type="application/json"
    )
    assert response.status_code == 200
    assert [row["record_number"] for row in response.json()] == ["A-100871"]


def test_search_is_exact_only(alpha):
    client = login_client(alpha, "alpha-doctor")
    response = client.post(
        "/api/v1/patients/search", {"q": "Maria"}, content_type="application/json"
    )
    assert response.json() == []
    # An empty query is a 400, and a GET query string filters nothing.
    empty = client.post("/api/v1/patients/search", {"q": ""}, content_type="application/json")
    assert empty.status_code == 400
    everyone = client.get("/api/v1/patients/", {"q": "Maria"}).json()
    assert len(everyone) > 1


def test_staff_create_a_patient_with_an_account(alpha):
    client = login_client(alpha, "alpha-doctor")
    payload = {**NEW_PATIENT, "username": "ada-okafor", "password": "a-long-pass-phrase-42"}
    response = client.post("/api/v1/patients/", payload, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["given_name"], body["record_number"], body["birth_date"]) == (
        "Ada",
        "A-900001",
        "1990-01-31",
    )
    assert "password" not in body
    with tenant_context(alpha):
        patient = Patient.objects.get(pk=body["id"])
        assert patient.user.username == "ada-okafor"
        assert patient.user.role == "patient"
    found = client.post(
        "/api/v1/patients/search", {"q": "Ada Okafor"}, content_type="application/json"
    ).json()
    assert [row["id"] for row in found] == [body["id"]]
    detail = client.get(f"/api/v1/patients/{body['id']}/")
    assert detail.status_code == 200
    assert detail.json()["family_name"] == "Okafor"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"given_name": "  "}, "given_name"),
        ({"sex": "robot"}, "sex"),
        ({"birth_date": "31/01/1990"}, "birth_date"),
        ({"birth_date": "1850-01-01"}, "birth_date"),
        ({"record_number": "A-100234"}, "record_number"),  # already Li Wei's
        ({"username": "alpha-doctor", "password": "a-long-pass-phrase-42"}, "username"),
        ({"username": "new-one", "password": "x"}, "password"),
    ],
)
def test_create_patient_rejects_bad_input_and_creates_nothing(alpha, change, field):
    client = login_client(alpha, "alpha-admin")
    before = _counts(alpha)
    response = client.post(
        "/api/v1/patients/", {**NEW_PATIENT, **change}, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert isinstance(response.json()[field], list)
    assert _counts(alpha) == before


def test_patients_cannot_list_or_create_patients(alpha):
    client = login_client(alpha, "alpha-patient")
    assert client.get("/api/v1/patients/").status_code == 403
    before = _counts(alpha)
    response = client.post("/api/v1/patients/", NEW_PATIENT, content_type="application/json")
    assert response.status_code == 403
    assert _counts(alpha) == before


def test_anonymous_gets_401(alpha):
    client = client_for(alpha)
    li = _patient(alpha, "alpha-patient")
    for url in ("/api/v1/patients/", f"/api/v1/patients/{li.id}/", "/api/v1/records/"):
        assert client.get(url).status_code == 401
    assert client.get(f"/api/v1/patients/{li.id}/fhir").status_code == 401


def test_patient_reads_own_profile_but_not_anothers(alpha):
    li = _patient(alpha, "alpha-patient")
    maria = _patient(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-patient")
    own = client.get(f"/api/v1/patients/{li.id}/")
    assert own.status_code == 200
    assert own.json()["record_number"] == "A-100234"
    other = client.get(f"/api/v1/patients/{maria.id}/")
    assert other.status_code == 404
    assert "Garcia" not in other.content.decode()


def test_beta_doctor_gets_404_for_an_alpha_patient(alpha, beta):
    li = _patient(alpha, "alpha-patient")
    record = _record_of(alpha, "alpha-patient")
    client = login_client(beta, "beta-doctor")
    assert client.get(f"/api/v1/patients/{li.id}/").status_code == 404
    assert client.get("/api/v1/records/", {"patient": str(li.id)}).status_code == 404
    assert client.get(f"/api/v1/records/{record.id}/").status_code == 404
    assert client.get(f"/api/v1/patients/{li.id}/fhir").status_code == 404


# --- Records ----------------------------------------------------------------------


RECORD_KEYS = {
    "id",
    "origin",
    "origin_name",
    "created_at",
    "author",
    "amends",
    "amended_by",
    "categories",
    "withheld",
    "block_height",
    "tx_hash",
    "erased",
    "errors",
    "content",
    "attachments",
}


def test_staff_list_a_patients_records(alpha):
    li = _patient(alpha, "alpha-patient")
    response = login_client(alpha, "alpha-doctor").get("/api/v1/records/", {"patient": str(li.id)})
    assert response.status_code == 200
    records = response.json()
    # Her two alpha entries, and beta's, listed as existing but withheld (not shared).
    assert all(set(record) == RECORD_KEYS for record in records)
    elsewhere = [record for record in records if record["origin"] != "alpha"]
    assert all(record["content"] is None and record["withheld"] for record in elsewhere)
    records = [record for record in records if record["origin"] == "alpha"]
    assert len(records) == 2
    assert all(not record["errors"] and not record["erased"] for record in records)
    codes = {d["code"] for record in records for d in record["content"]["diagnoses"]}
    assert codes == {"I10", "R73.0"}
    first = next(r for r in records if r["content"]["encounter"]["chief_complaint"].startswith("H"))
    assert first["author"] == "Ana Alvarez"
    assert first["content"]["allergies"][0]["substance"] == "Penicillin"
    assert first["block_height"] is not None


def test_staff_list_needs_a_patient(alpha):
    client = login_client(alpha, "alpha-doctor")
    missing = client.get("/api/v1/records/")
    assert missing.status_code == 400
    assert "patient" in missing.json()
    assert client.get("/api/v1/records/", {"patient": "not-a-uuid"}).status_code == 400


def test_record_detail_for_staff(alpha):
    record = _record_of(alpha, "alpha-patient-2")
    response = login_client(alpha, "alpha-admin").get(f"/api/v1/records/{record.id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(record.id)
    assert body["tx_hash"] == record.tx_hash
    assert body["content"]["diagnoses"][0]["code"] == "E11.9"


def test_linked_patient_reads_own_history_from_both_hospitals(alpha):
    li = _patient(alpha, "alpha-patient")
    client = login_client(alpha, "alpha-patient")
    for params in ({}, {"patient": str(li.id)}):
        response = client.get("/api/v1/records/", params)
        assert response.status_code == 200
        records = response.json()
        assert {record["origin"] for record in records} == {"alpha", "beta"}
        codes = {d["code"] for record in records for d in record["content"]["diagnoses"]}
        assert {"I10", "J45.9"} <= codes
    beta_record = next(record for record in records if record["origin"] == "beta")
    detail = client.get(f"/api/v1/records/{beta_record['id']}/")
    assert detail.status_code == 200
    assert detail.json()["origin_name"] == beta_record["origin_name"]


def test_token_authentication_works_for_records(alpha):
    with tenant_context(alpha):
        token = Token.objects.create(user=User.objects.get(username="alpha-patient"))
    response = client_for(alpha).get("/api/v1/records/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert {record["origin"] for record in response.json()} == {"alpha", "beta"}


def test_other_patient_gets_404_for_li_weis_data(alpha):
    li = _patient(alpha, "alpha-patient")
    record = _record_of(alpha, "alpha-patient")
    client = login_client(alpha, "alpha-patient-2")
    responses = [
        client.get(f"/api/v1/patients/{li.id}/"),
        client.get("/api/v1/records/", {"patient": str(li.id)}),
        client.get(f"/api/v1/records/{record.id}/"),
        client.get(f"/api/v1/patients/{li.id}/fhir"),
        client.get(f"/api/v1/patients/{li.id}/fhir", {"download": "1"}),
    ]
    assert [response.status_code for response in responses] == [404] * len(responses)
    for response in responses:
        text = response.content.decode()
        assert "Wei" not in text and "A-100234" not in text and "I10" not in text
    # and her own list holds only her own record
    own = client.get("/api/v1/records/").json()
    assert [r["content"]["diagnoses"][0]["code"] for r in own] == ["E11.9"]


def test_doctor_creates_a_record(alpha):
    maria = _patient(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-doctor")
    response = client.post(
        "/api/v1/records/",
        {"patient": str(maria.id), "content": _content()},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["origin"] == "alpha"
    assert body["author"] == "Ana Alvarez"
    assert body["content"]["diagnoses"][0]["code"] == "I48.0"  # normalised
    assert body["content"]["diagnoses"][0]["title"]
    assert body["content"]["vitals"] == [{"kind": "heart_rate", "value": "118", "unit": "/min"}]
    assert set(body["categories"]) >= {"encounters", "diagnoses", "vitals"}
    assert body["tx_hash"]
    listed = client.get("/api/v1/records/", {"patient": str(maria.id)}).json()
    assert body["id"] in {record["id"] for record in listed}
    # Maria sees it too.
    mine = login_client(alpha, "alpha-patient-2").get(f"/api/v1/records/{body['id']}/")
    assert mine.status_code == 200


@pytest.mark.parametrize(
    ("content", "path"),
    [
        (_content(diagnoses=[{"code": "X99.99"}]), "diagnoses.0.code"),
        (_content(diagnoses=[{"code": "hello"}]), "diagnoses.0.code"),
        (
            _content(vitals=[{"kind": "temperature", "value": "375", "unit": "Cel"}]),
            "vitals.0.value",
        ),
        (_content(vitals=[{"kind": "heart_rate", "value": "70", "unit": "kg"}]), "vitals.0.unit"),
        (_content(encounter={"department": "x", "chief_complaint": "y"}), "encounter.visit_date"),
        ("not an object", "content"),
    ],
)
def test_create_record_rejects_bad_content_and_creates_nothing(alpha, content, path):
    maria = _patient(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-doctor")
    before = _counts(alpha)
    response = client.post(
        "/api/v1/records/",
        {"patient": str(maria.id), "content": content},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert path in errors
    assert all(isinstance(messages, list) and messages for messages in errors.values())
    assert _counts(alpha) == before


def test_create_record_without_or_with_unknown_patient(alpha, beta):
    client = login_client(alpha, "alpha-doctor")
    missing = client.post(
        "/api/v1/records/", {"content": _content()}, content_type="application/json"
    )
    assert missing.status_code == 400
    assert "patient" in missing.json()
    bad = client.post(
        "/api/v1/records/",
        {"patient": "nope", "content": _content()},
        content_type="application/json",
    )
    assert bad.status_code == 400
    beta_li = _patient(beta, "beta-patient")
    before = _counts(alpha)
    unknown = client.post(
        "/api/v1/records/",
        {"patient": str(beta_li.id), "content": _content()},
        content_type="application/json",
    )
    assert unknown.status_code == 404
    assert _counts(alpha) == before


@pytest.mark.parametrize("username", ["alpha-patient", "alpha-admin"])
def test_only_doctors_write_records(alpha, username):
    li = _patient(alpha, "alpha-patient")
    record = _record_of(alpha, "alpha-patient")
    client = login_client(alpha, username)
    before = _counts(alpha)
    created = client.post(
        "/api/v1/records/",
        {"patient": str(li.id), "content": _content()},
        content_type="application/json",
    )
    amended = client.post(
        f"/api/v1/records/{record.id}/amend",
        {"content": _content()},
        content_type="application/json",
    )
    assert (created.status_code, amended.status_code) == (403, 403)
    assert _counts(alpha) == before


def test_doctor_amends_a_record(alpha):
    original = _record_of(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-doctor")
    corrected = _content(diagnoses=[{"code": "E11.8", "text": "Corrected code"}])
    response = client.post(
        f"/api/v1/records/{original.id}/amend",
        {"content": corrected},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["amends"] == str(original.id)
    assert body["content"]["diagnoses"][0]["code"] == "E11.8"
    listed = client.get("/api/v1/records/", {"patient": str(original.patient_id)}).json()
    by_id = {record["id"]: record for record in listed}
    assert by_id[str(original.id)]["amended_by"] == [body["id"]]


def test_amend_rejects_bad_content_and_unknown_records(alpha, beta):
    original = _record_of(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-doctor")
    before = _counts(alpha)
    bad = client.post(
        f"/api/v1/records/{original.id}/amend",
        {"content": _content(vitals=[{"kind": "oxygen_saturation", "value": "140", "unit": "%"}])},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert "vitals.0.value" in bad.json()["errors"]
    beta_record = _record_of(beta, "beta-patient")
    unknown = client.post(
        f"/api/v1/records/{beta_record.id}/amend",
        {"content": _content()},
        content_type="application/json",
    )
    assert unknown.status_code == 404
    assert _counts(alpha) == before
