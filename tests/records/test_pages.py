"""The server-rendered record pages: doctors' patient list, chart and entry
forms; patients' records, summary and linking; who gets 404."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tenants.utils import tenant_context

from records.models import Patient, Record
from records.selectors import records_for_staff
from tests.conftest import PASSWORD, login_client, user_at

pytestmark = pytest.mark.django_db


def tiny_png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _patient(tenant, username) -> Patient:
    with tenant_context(tenant):
        return Patient.objects.get(user__username=username)


def _records(tenant, patient) -> list[Record]:
    with tenant_context(tenant):
        return list(Record.objects.filter(patient=patient).order_by("created_at"))


def _entry_post(**extra) -> dict:
    today = timezone.localdate().isoformat()
    data = {
        "encounter-0-visit_date": today,
        "encounter-0-department": "Cardiology",
        "encounter-0-chief_complaint": "Palpitations after coffee",
        "diagnoses-0-code": "i48.0",
        "diagnoses-0-text": "Paroxysmal atrial fibrillation",
        "diagnoses-0-category": "diagnoses",
        "diagnoses-1-category": "diagnoses",
        "diagnoses-2-category": "diagnoses",
        "medications-0-drug": "Bisoprolol",
        "medications-0-dose": "2.5 mg",
        "medications-0-route": "oral",
        "medications-0-frequency": "once daily",
        "medications-0-start": today,
        "vitals-heart_rate-value": "112",
        "vitals-heart_rate-unit": "/min",
        "vitals-temperature-value": "",
        "vitals-temperature-unit": "Cel",
        "notes-0-category": "clinical_notes",
        "notes-0-text": "ECG arranged.",
        "notes-1-category": "clinical_notes",
        "attachments-0-category": "imaging",
        "attachments-1-category": "imaging",
    }
    data.update(extra)
    return data


@pytest.fixture
def doctor(alpha):
    return login_client(alpha, "alpha-doctor")


# --- Doctors: list, search, chart ---------------------------------------------------


def test_doctor_sees_patient_list_and_chart_with_decrypted_content(alpha, doctor):
    response = doctor.get("/records/patients/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Li Wei" in page and "Maria Garcia" in page and "A-100234" in page
    assert "Exact match" in page
    li = _patient(alpha, "alpha-patient")
    assert f"/records/patients/{li.id}/" in page

    chart = doctor.get(f"/records/patients/{li.id}/").content.decode()
    assert "Li Wei" in chart and "A-100234" in chart and "1984-03-14" in chart
    assert "Headaches and tiredness for three weeks" in chart
    assert "I10" in chart and "Blood pressure high on three readings" in chart
    assert "Essential (primary) hypertension" in chart  # the ICD-10 title
    assert "Amlodipine" in chart and "Penicillin" in chart
    assert "Systolic blood pressure" in chart and "mmHg" in chart
    assert "HbA1c" in chart and "Lifestyle advice given" in chart
    assert "/chain/blocks/" in chart
    # newest first
    assert chart.index("Blood pressure review") < chart.index("Headaches and tiredness")


@pytest.mark.parametrize("query", ["A-100234", "li wei", "  Li   Wei "])
def test_search_patients_by_exact_number_or_name(doctor, query):
    page = doctor.post("/records/patients/", {"q": query}).content.decode()
    assert "Li Wei" in page and "Maria Garcia" not in page


def test_search_patients_partial_name_finds_nobody(doctor):
    page = doctor.post("/records/patients/", {"q": "Li"}).content.decode()
    assert "Li Wei" not in page and "Nobody has exactly" in page


def test_searches_are_posted_so_nothing_identifying_reaches_a_url(doctor):
    page = doctor.get("/records/patients/", {"q": "A-100234"}).content.decode()
    # A GET query string is ignored: the list shows everyone, unfiltered.
    assert "Maria Garcia" in page and "Li Wei" in page
    assert page.count('method="post" class="card search-form"') == 2


def test_search_records_by_icd10_and_drug(doctor):
    by_code = doctor.post("/records/patients/", {"icd10": "i10"}).content.decode()
    assert "Records with i10" in by_code
    table = by_code.split("Records with", 1)[1].split("All patients", 1)[0]
    assert "Li Wei" in table and "Maria Garcia" not in table
    by_drug = doctor.post("/records/patients/", {"drug": "metformin"}).content.decode()
    table = by_drug.split("Records with", 1)[1].split("All patients", 1)[0]
    assert "Maria Garcia" in table and "Li Wei" not in table
    none = doctor.post("/records/patients/", {"icd10": "Z99.9"}).content.decode()
    assert "No records match" in none


def test_admin_sees_patients_but_cannot_write_entries(alpha):
    admin = login_client(alpha, "alpha-admin")
    li = _patient(alpha, "alpha-patient")
    assert admin.get("/records/patients/").status_code == 200
    chart = admin.get(f"/records/patients/{li.id}/")
    assert chart.status_code == 200 and "New entry" not in chart.content.decode()
    assert admin.get(f"/records/patients/{li.id}/new/").status_code == 403


# --- New patient --------------------------------------------------------------------


def test_new_patient_form_creates_a_patient_with_an_account(alpha, doctor):
    assert doctor.get("/records/patients/new/").status_code == 200
    response = doctor.post(
        "/records/patients/new/",
        {
            "given_name": "Ada",
            "family_name": "Okafor",
            "sex": "female",
            "birth_date": "1990-02-01",
            "record_number": "A-200001",
            "phone": "",
            "email": "ada@example.org",
            "username": "ada-okafor",
            "password": "A-long-temporary-pass-42",
        },
    )
    assert response.status_code == 302
    with tenant_context(alpha):
        patient = Patient.objects.get(user__username="ada-okafor")
    assert response["Location"] == f"/records/patients/{patient.id}/"
    chart = doctor.get(response["Location"]).content.decode()
    assert "Ada Okafor" in chart and "A-200001" in chart
    found = doctor.post("/records/patients/", {"q": "A-200001"}).content.decode()
    assert "Ada Okafor" in found


def test_new_patient_errors_are_shown_beside_fields_and_nothing_is_created(alpha, doctor):
    with tenant_context(alpha):
        before = Patient.objects.count()
    response = doctor.post(
        "/records/patients/new/",
        {
            "given_name": "Bo",
            "family_name": "",
            "sex": "female",
            "birth_date": "2999-01-01",
            "record_number": "A-100234",  # Li Wei's
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_family_name_errors"' in page
    assert 'id="id_birth_date_errors"' in page
    assert "between 1900 and today" in page
    assert 'value="Bo"' in page
    # the duplicate number is found once the identity itself is valid
    response = doctor.post(
        "/records/patients/new/",
        {
            "given_name": "Bo",
            "family_name": "Ek",
            "sex": "male",
            "birth_date": "1970-01-01",
            "record_number": "A-100234",
        },
    )
    assert response.status_code == 400
    assert "A patient with this record number exists." in response.content.decode()
    with tenant_context(alpha):
        assert Patient.objects.count() == before


# --- Entries ------------------------------------------------------------------------


def test_new_entry_form_creates_a_record_that_decrypts(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    before = _records(alpha, maria)
    form = doctor.get(f"/records/patients/{maria.id}/new/")
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.content.decode()
    response = doctor.post(f"/records/patients/{maria.id}/new/", _entry_post())
    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == f"/records/patients/{maria.id}/"
    after = _records(alpha, maria)
    assert len(after) == len(before) + 1
    with tenant_context(alpha):
        views = records_for_staff(
            user=user_at(alpha, "alpha-doctor"), patient=Patient.objects.get(pk=maria.id)
        )
    newest = views[0]
    assert newest.id == str(after[-1].id) and not newest.errors
    assert newest.content["encounter"]["department"] == "Cardiology"
    assert newest.content["diagnoses"][0]["code"] == "I48.0"
    assert len(newest.content["diagnoses"]) == 1  # empty rows skipped
    assert newest.content["medications"][0]["drug"] == "Bisoprolol"
    assert newest.content["vitals"] == [{"kind": "heart_rate", "value": "112", "unit": "/min"}]
    assert newest.content["notes"][0]["text"] == "ECG arranged."
    chart = doctor.get(response["Location"]).content.decode()
    assert "Palpitations after coffee" in chart and "The entry was saved." in chart


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"diagnoses-0-code": "X99.99"}, "diagnoses-0-code", "X99.99"),
        ({"diagnoses-0-code": "hello"}, "diagnoses-0-code", "Enter an ICD-10 code"),
        (
            {"vitals-temperature-value": "375"},
            "vitals-temperature-value",
            "Body temperature must be between 30 and 45",
        ),
        (
            {"medications-0-stop": "2000-01-01"},
            "medications-0-stop",
            "The stop date is before the start date.",
        ),
    ],
)
def test_bad_entry_is_refused_with_the_message_beside_the_field(
    alpha, doctor, extra, field, message
):
    maria = _patient(alpha, "alpha-patient-2")
    before = len(_records(alpha, maria))
    response = doctor.post(f"/records/patients/{maria.id}/new/", _entry_post(**extra))
    assert response.status_code == 400
    page = response.content.decode()
    errors = page.split(f'id="id_{field}_errors"', 1)[1].split("</ul>", 1)[0]
    assert message in errors
    assert 'value="Palpitations after coffee"' in page or "Palpitations after coffee" in page
    assert 'value="Bisoprolol"' in page  # what the doctor typed is kept
    assert len(_records(alpha, maria)) == before


def test_error_in_a_later_row_maps_to_that_row(alpha, doctor):
    """Row 0 empty, row 2 filled: the error path diagnoses.0 is the third row."""
    maria = _patient(alpha, "alpha-patient-2")
    response = doctor.post(
        f"/records/patients/{maria.id}/new/",
        _entry_post(**{"diagnoses-0-code": "", "diagnoses-0-text": "", "diagnoses-2-code": "Q"}),
    )
    assert response.status_code == 400
    assert 'id="id_diagnoses-2-code_errors"' in response.content.decode()
    assert 'id="id_diagnoses-0-code_errors"' not in response.content.decode()


def test_missing_visit_is_refused(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    response = doctor.post(
        f"/records/patients/{maria.id}/new/", _entry_post(**{"encounter-0-department": ""})
    )
    assert response.status_code == 400
    assert 'id="id_encounter-0-department_errors"' in response.content.decode()


def test_amendment_shows_both_entries(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    original = _records(alpha, maria)[0]
    form = doctor.get(f"/records/entries/{original.id}/amend/")
    assert form.status_code == 200
    assert 'value="E11.9"' in form.content.decode()  # pre-filled from the original
    response = doctor.post(
        f"/records/entries/{original.id}/amend/",
        _entry_post(**{"encounter-0-chief_complaint": "Corrected: annual review"}),
    )
    assert response.status_code == 302
    records = _records(alpha, maria)
    amendment = records[-1]
    assert amendment.amends_id == original.id
    chart = doctor.get(f"/records/patients/{maria.id}/").content.decode()
    assert "Annual diabetes review" in chart and "Corrected: annual review" in chart
    assert f'href="#entry-{original.id}"' in chart  # "amends …"
    assert f'href="#entry-{amendment.id}"' in chart  # "amended by …"
    assert "Amended by" in chart and "Amends" in chart


def test_attachment_upload_and_download(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    png = tiny_png()
    post = _entry_post()
    post["attachments-0-file"] = SimpleUploadedFile(
        'scan "1"/..\\x.png', png, content_type="image/png"
    )
    response = doctor.post(f"/records/patients/{maria.id}/new/", post)
    assert response.status_code == 302, response.content.decode()[:2000]
    record = _records(alpha, maria)[-1]
    chart = doctor.get(f"/records/patients/{maria.id}/").content.decode()
    url = f"/records/entries/{record.id}/attachments/attachment-1/"
    assert url in chart
    download = doctor.get(url)
    assert download.status_code == 200
    assert download.content == png
    assert download["Content-Type"] == "image/png"
    assert download["X-Content-Type-Options"] == "nosniff"
    disposition = download["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert '"' not in disposition.split('filename="', 1)[1][:-1]
    assert "/" not in disposition and "\\" not in disposition
    # Maria herself can download it; Li Wei and another hospital's doctor cannot.
    assert login_client(alpha, "alpha-patient-2").get(url).content == png
    assert login_client(alpha, "alpha-patient").get(url).status_code == 404
    assert doctor.get(f"/records/entries/{record.id}/attachments/attachment-9/").status_code == 404


def test_text_file_renamed_png_is_refused(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    before = len(_records(alpha, maria))
    post = _entry_post()
    post["attachments-1-file"] = SimpleUploadedFile(
        "scan.png", b"just some text, not an image\n", content_type="image/png"
    )
    response = doctor.post(f"/records/patients/{maria.id}/new/", post)
    assert response.status_code == 400
    errors = response.content.decode().split('id="id_attachments-1-file_errors"', 1)[1]
    assert "only PDF, PNG or JPEG" in errors.split("</ul>", 1)[0]
    assert len(_records(alpha, maria)) == before


# --- Patients -----------------------------------------------------------------------


def test_patient_sees_records_from_both_hospitals(alpha, beta):
    client = login_client(alpha, "alpha-patient")
    response = client.get("/records/mine/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Headaches and tiredness" in page and "Wheeze at night" in page
    assert alpha.name in page and beta.name in page
    assert "/chain/blocks/" in page
    li = _patient(alpha, "alpha-patient")
    assert f'href="/api/v1/patients/{li.id}/fhir"' in page
    assert "/records/mine/summary/" in page
    assert "link your accounts" not in page


def test_an_unlinked_patient_is_invited_to_link(alpha):
    page = login_client(alpha, "alpha-patient-2").get("/records/mine/").content.decode()
    assert "link your accounts" in page and "Wheeze at night" not in page


def test_patient_summary(alpha):
    client = login_client(alpha, "alpha-patient")
    response = client.get("/records/mine/summary/")
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("I10", "R73.0", "J45.9", "Amlodipine", "Salbutamol", "Penicillin"):
        assert text in page
    assert "Respiratory clinic" in page and "General medicine" in page
    assert "window.print()" in page


def test_summary_leaves_out_stopped_medications(alpha, doctor):
    maria = _patient(alpha, "alpha-patient-2")
    yesterday = (timezone.localdate() - timezone.timedelta(days=1)).isoformat()
    post = _entry_post(
        **{
            "medications-0-start": "2020-01-01",
            "medications-0-stop": yesterday,
            "medications-1-drug": "Atorvastatin",
            "medications-1-dose": "20 mg",
            "medications-1-route": "oral",
            "medications-1-frequency": "at night",
            "medications-1-start": "2020-01-01",
        }
    )
    assert doctor.post(f"/records/patients/{maria.id}/new/", post).status_code == 302
    page = login_client(alpha, "alpha-patient-2").get("/records/mine/summary/").content.decode()
    assert "Atorvastatin" in page and "Metformin" in page and "Bisoprolol" not in page


def test_other_patient_cannot_open_li_weis_chart_or_attachment(alpha):
    maria = login_client(alpha, "alpha-patient-2")
    li = _patient(alpha, "alpha-patient")
    li_record = _records(alpha, li)[0]
    assert maria.get(f"/records/patients/{li.id}/").status_code == 404
    assert (
        maria.get(f"/records/entries/{li_record.id}/attachments/attachment-1/").status_code == 404
    )


@pytest.mark.parametrize(
    "path",
    [
        "/records/patients/",
        "/records/patients/new/",
        "/records/patients/{li}/",
        "/records/patients/{li}/new/",
        "/records/entries/{record}/amend/",
    ],
)
def test_patients_get_404_on_doctor_pages(alpha, path):
    li = _patient(alpha, "alpha-patient")
    record = _records(alpha, li)[0]
    client = login_client(alpha, "alpha-patient")
    assert client.get(path.format(li=li.id, record=record.id)).status_code == 404


def test_doctor_gets_404_on_patient_pages(doctor):
    assert doctor.get("/records/mine/").status_code == 404
    assert doctor.get("/records/link/").status_code == 404


def test_other_hospitals_doctor_cannot_see_alpha_patients(alpha, beta):
    li = _patient(alpha, "alpha-patient")
    record = _records(alpha, li)[0]
    client = login_client(beta, "beta-doctor")
    assert client.get(f"/records/patients/{li.id}/").status_code == 404
    assert client.get(f"/records/patients/{li.id}/new/").status_code == 404
    assert client.get(f"/records/entries/{record.id}/amend/").status_code == 404
    assert client.get(f"/records/entries/{record.id}/attachments/attachment-1/").status_code == 404
    assert "Li Wei" in client.get("/records/patients/").content.decode()  # beta's own Li Wei
    assert "Maria Garcia" not in client.get("/records/patients/").content.decode()


def test_unknown_and_malformed_ids_are_404(doctor):
    assert doctor.get(f"/records/patients/{uuid.uuid4()}/").status_code == 404
    assert doctor.get(f"/records/entries/{uuid.uuid4()}/amend/").status_code == 404
    assert doctor.get("/records/patients/not-a-uuid/").status_code == 404
    assert doctor.get("/records/entries/123/attachments/x/").status_code == 404


def test_anonymous_is_sent_to_sign_in(alpha):
    from tests.conftest import client_for

    response = client_for(alpha).get("/records/patients/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_posts_need_csrf(alpha):
    client = login_client(alpha, "alpha-patient")
    client.handler.enforce_csrf_checks = True
    assert client.post("/records/link/", {"action": "create"}).status_code == 403
    page = client.get("/records/link/").content.decode()
    assert "csrfmiddlewaretoken" in page


# --- Linking ------------------------------------------------------------------------


def test_link_page_creates_a_code_and_refuses_a_wrong_one(alpha):
    client = login_client(alpha, "alpha-patient-2")
    assert client.get("/records/link/").status_code == 200
    made = client.post("/records/link/", {"action": "create", "password": PASSWORD})
    assert made.status_code == 200
    assert made.context["issued"].code in made.content.decode()
    assert "shown only once" in made.content.decode()
    wrong = client.post(
        "/records/link/", {"action": "redeem", "code": "AAAAA-BBBBB", "password": PASSWORD}
    )
    assert wrong.status_code == 400
    errors = wrong.content.decode().split('id="id_code_errors"', 1)[1].split("</ul>", 1)[0]
    assert "not valid or has expired" in errors
    # a code made at this same hospital is refused too
    own = client.post(
        "/records/link/",
        {"action": "redeem", "code": made.context["issued"].code, "password": PASSWORD},
    )
    assert own.status_code == 400
    assert "made at this hospital" in own.content.decode()


def test_link_across_hospitals_through_the_pages(alpha, beta):
    maria = login_client(alpha, "alpha-patient-2")
    code = (
        maria.post("/records/link/", {"action": "create", "password": PASSWORD})
        .context["issued"]
        .code
    )
    tom = login_client(beta, "beta-patient-2")
    response = tom.post("/records/link/", {"action": "redeem", "code": code, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/records/mine/"
    page = tom.get("/records/mine/").content.decode()
    assert "Annual diabetes review" in page and "Twisted ankle" in page


def test_navigation_shows_record_pages_by_role(alpha, doctor):
    assert 'href="/records/patients/"' in doctor.get("/").content.decode()
    page = login_client(alpha, "alpha-patient").get("/").content.decode()
    assert 'href="/records/mine/"' in page and 'href="/records/link/"' in page
    assert 'href="/records/patients/"' not in page


def test_chart_shows_integrity_error_and_erased_entries(alpha, doctor):
    from records.services import record_erase, record_store

    maria = _patient(alpha, "alpha-patient-2")
    complaint = "Altered entry complaint"
    post = _entry_post(**{"encounter-0-chief_complaint": complaint})
    assert doctor.post(f"/records/patients/{maria.id}/new/", post).status_code == 302
    record = _records(alpha, maria)[-1]
    with tenant_context(alpha):
        section = record.sections.first()
        path = record_store().path_for(section.sha256)
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0x01
        path.write_bytes(bytes(blob))
    chart = doctor.get(f"/records/patients/{maria.id}/").content.decode()
    assert "Integrity error" in chart and complaint not in chart
    assert "Annual diabetes review" in chart  # the others still show

    with tenant_context(alpha):
        record_erase(
            actor=user_at(alpha, "alpha-admin"),
            record=Record.objects.get(pk=record.pk),
            reason="Written for the wrong patient",
        )
    chart = doctor.get(f"/records/patients/{maria.id}/").content.decode()
    assert "This entry was erased." in chart and "Written for the wrong patient" in chart
    assert doctor.get(f"/records/entries/{record.id}/amend/").status_code == 404


def test_a_patients_name_in_the_header_comes_from_their_encrypted_profile(alpha):
    page = login_client(alpha, "alpha-patient").get("/").content.decode()
    assert "Li Wei · Patient" in page
    assert "Welcome, Li Wei" in page
