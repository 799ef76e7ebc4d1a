"""The patient's "Who saw my records" page, the proof of one entry, and
``GET /api/v1/access-log/``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from chain.merkle import verify_inclusion
from consent.models import AccessLogEntry, access_log_entry_hash
from consent.selectors import access_log_inclusion_proof, access_log_reason_in_words
from consent.services import access_log_anchor, access_log_append
from records.models import Patient
from records.selectors import record_view_for_user, records_for_staff
from tests.conftest import client_for, login_client

pytestmark = pytest.mark.django_db

EMERGENCY_TX = "e" * 64


def _last_id(tenant) -> int:
    with tenant_context(tenant):
        return AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _new_entries(tenant, after: int) -> list[AccessLogEntry]:
    with tenant_context(tenant):
        return list(AccessLogEntry.objects.filter(id__gt=after).order_by("id"))


@pytest.fixture
def li_at_alpha(alpha) -> Patient:
    with tenant_context(alpha):
        return Patient.objects.get(user__username="alpha-patient")


@pytest.fixture
def reads(alpha, li_at_alpha):
    """alpha-doctor reads Li Wei's chart; Maria is refused one of Li Wei's records.
    Returns (the doctor's entries, the refusal) at alpha."""
    before = _last_id(alpha)
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        maria = User.objects.get(username="alpha-patient-2")
        records_for_staff(user=doctor, patient=li_at_alpha)
        record = li_at_alpha.records.first()
        with pytest.raises(Http404):
            record_view_for_user(user=maria, record_id=record.id)
    # Maria's attempt first reads her own history (logged under her pseudonym).
    entries = [
        entry
        for entry in _new_entries(alpha, before)
        if entry.patient_pseudonym in li_at_alpha.pseudonyms
    ]
    read = [entry for entry in entries if entry.decision == "allow"]
    refused = [entry for entry in entries if entry.decision == "deny"]
    assert read and len(refused) == 1
    assert {entry.reader_name for entry in read} == {"Ana Alvarez"}
    return read, refused[0]


def _emergency_entry(alpha, li_at_alpha) -> AccessLogEntry:
    with tenant_context(alpha):
        return access_log_append(
            reader_name="Ben Becker",
            reader_role="doctor",
            reader_tenant="beta",
            reader_tenant_name="Beta University Hospital",
            patient_pseudonym=li_at_alpha.pseudonym,
            record_id=str(li_at_alpha.records.first().id),
            sections=["normal"],
            purpose="emergency",
            decision="allow",
            reason=f"emergency:{EMERGENCY_TX}",
            is_emergency=True,
        )


def _row_ids(response) -> list[tuple[str, int]]:
    return [(row.hospital, row.entry_id) for row in response.context["page"].rows]


# --- The page -----------------------------------------------------------------------


def test_li_wei_sees_the_alpha_read_and_the_refusal_from_beta(beta, reads):
    read, refused = reads
    response = login_client(beta, "beta-patient").get("/consent/access-log/")
    assert response.status_code == 200
    shown = _row_ids(response)
    for entry in [*read, refused]:
        assert ("alpha", entry.id) in shown
    # Newest first: the refusal came after the reads.
    assert shown.index(("alpha", refused.id)) < shown.index(("alpha", read[0].id))
    html = response.content.decode()
    assert f'class="access-log-row is-denied" id="entry-alpha-{refused.id}"' in html
    assert f'class="access-log-row" id="entry-alpha-{read[0].id}"' in html
    refused_row = next(row for row in response.context["page"].rows if row.entry_id == refused.id)
    assert (refused_row.reader_name, refused_row.reason_text) == (
        "Another patient",
        "refused: not the reader's own record",
    )
    doctor_row = next(row for row in response.context["page"].rows if row.entry_id == read[0].id)
    assert (
        doctor_row.reader_name,
        doctor_row.reader_role_label,
        doctor_row.reader_hospital_name,
        doctor_row.hospital,
        doctor_row.purpose_label,
        doctor_row.reason_text,
        doctor_row.is_anchored,
    ) == (
        "Ana Alvarez",
        "Doctor",
        "Alpha General Hospital",
        "alpha",
        "Treatment",
        "the doctor who wrote it",
        False,
    )
    assert "Refused" in html and "Not anchored yet" in html


def test_emergencies_are_highlighted_and_filterable(alpha, beta, li_at_alpha, reads):
    read, refused = reads
    assert not any(entry.is_emergency for entry in [*read, refused])
    emergency = _emergency_entry(alpha, li_at_alpha)
    client = login_client(beta, "beta-patient")
    html = client.get("/consent/access-log/").content.decode()
    assert f'class="access-log-row is-emergency" id="entry-alpha-{emergency.id}"' in html
    assert '<span class="badge badge-emergency">Emergency</span>' in html
    only = client.get("/consent/access-log/", {"emergencies": "on"})
    assert ("alpha", emergency.id) in _row_ids(only)
    assert all(row.is_emergency for row in only.context["page"].rows)
    assert ("alpha", refused.id) not in _row_ids(only)
    row = only.context["page"].rows[0]
    assert row.reason_text == f"declared emergency (transaction {EMERGENCY_TX[:12]})"


def test_filters_by_decision_hospital_and_date(beta, reads):
    _read, refused = reads
    client = login_client(beta, "beta-patient")
    denied = client.get("/consent/access-log/", {"decision": "deny"})
    assert denied.status_code == 200
    assert ("alpha", refused.id) in _row_ids(denied)
    assert {row.decision for row in denied.context["page"].rows} == {"deny"}
    at_beta = client.get("/consent/access-log/", {"hospital": "beta"})
    assert {row.hospital for row in at_beta.context["page"].rows} <= {"beta"}
    assert ("alpha", refused.id) not in _row_ids(at_beta)
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    old = client.get("/consent/access-log/", {"until": yesterday})
    assert ("alpha", refused.id) not in _row_ids(old)
    today = client.get("/consent/access-log/", {"since": timezone.localdate().isoformat()})
    assert ("alpha", refused.id) in _row_ids(today)


def test_bad_filters_are_a_400_with_the_form(beta):
    client = login_client(beta, "beta-patient")
    response = client.get("/consent/access-log/", {"hospital": "nowhere", "before": "x"})
    assert response.status_code == 400
    assert response.context["page"] is None
    assert "This page link is not valid." in response.content.decode()


def test_maria_does_not_see_li_weis_entries_and_cannot_open_their_proof(alpha, reads):
    read, refused = reads
    access_log_anchor(tenant=alpha)
    client = login_client(alpha, "alpha-patient-2")
    response = client.get("/consent/access-log/")
    assert response.status_code == 200
    with tenant_context(alpha):
        maria = Patient.objects.get(user__username="alpha-patient-2")
    assert {row.patient_pseudonym for row in response.context["page"].rows} <= set(maria.pseudonyms)
    assert ("alpha", refused.id) not in _row_ids(response)
    assert client.get(f"/consent/access-log/alpha/{read[0].id}/proof/").status_code == 404
    assert client.get(f"/consent/access-log/alpha/{refused.id}/proof/").status_code == 404


def test_the_page_is_for_patients_only(alpha, reads):
    read, _ = reads
    assert login_client(alpha, "alpha-doctor").get("/consent/access-log/").status_code == 404
    assert (
        login_client(alpha, "alpha-doctor")
        .get(f"/consent/access-log/alpha/{read[0].id}/proof/")
        .status_code
        == 404
    )
    anonymous = client_for(alpha).get("/consent/access-log/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")


def test_the_proof_page_shows_a_proof_that_verifies(alpha, beta, reads):
    _read, refused = reads
    client = login_client(beta, "beta-patient")
    url = f"/consent/access-log/alpha/{refused.id}/proof/"
    before = client.get(url)
    assert before.status_code == 200
    assert before.context["found"].proof is None
    assert "Not anchored yet" in before.content.decode()

    anchor = access_log_anchor(tenant=alpha)
    assert anchor.first_entry <= refused.id <= anchor.last_entry
    response = client.get(url)
    assert response.status_code == 200
    found = response.context["found"]
    proof = found.proof
    assert found.is_verified
    assert proof == access_log_inclusion_proof(tenant=alpha, entry_id=refused.id)
    with tenant_context(alpha):
        entry = AccessLogEntry.objects.get(id=refused.id)
    assert verify_inclusion(
        access_log_entry_hash(entry.hashed_values()),
        proof.index,
        proof.size,
        proof.path,
        proof.root,
    )
    html = response.content.decode()
    assert proof.root in html and proof.tx_hash in html and "Verified" in html
    for node in proof.path:
        assert node in html
    # The anchor waits to be sealed: no block yet, and the page says so.
    if proof.block_height is None:
        assert "Waiting to be sealed in a block." in html
    else:
        assert f'href="/chain/blocks/{proof.block_height}/"' in html
    listed = client.get("/consent/access-log/")
    row = next(row for row in listed.context["page"].rows if row.entry_id == refused.id)
    assert row.is_anchored
    assert f'href="/consent/access-log/alpha/{refused.id}/proof/"' in listed.content.decode()


def test_a_proof_url_of_a_hospital_without_entries_about_her_is_404(beta, reads):
    client = login_client(beta, "beta-patient")
    assert client.get("/consent/access-log/northwind/1/proof/").status_code == 404
    assert client.get("/consent/access-log/nowhere/1/proof/").status_code == 404


# --- The API ------------------------------------------------------------------------


def test_the_api_returns_the_pages_rows_for_the_patient(beta, reads):
    client = login_client(beta, "beta-patient")
    page = client.get("/consent/access-log/", {"decision": "deny"})
    api = client.get("/api/v1/access-log/", {"decision": "deny"})
    assert api.status_code == 200
    body = api.json()
    assert [(item["hospital"], item["entry_id"]) for item in body["results"]] == _row_ids(page)
    refused = next(item for item in body["results"] if item["entry_id"] == reads[1].id)
    assert {key: refused[key] for key in ("hospital", "decision", "reader_name", "reason")} == {
        "hospital": "alpha",
        "decision": "deny",
        "reader_name": "Another patient",
        "reason": "deny:not-own-record",
    }


def test_the_api_pages_with_a_cursor_across_hospitals(beta, reads):
    client = login_client(beta, "beta-patient")
    everything = client.get("/api/v1/access-log/", {"limit": 200}).json()["results"]
    assert len(everything) >= 3
    walked, before = [], ""
    for _ in range(len(everything)):
        query = {"limit": 2, **({"before": before} if before else {})}
        body = client.get("/api/v1/access-log/", query).json()
        walked.extend(body["results"])
        before = body["next_before"]
        if not before:
            break
    assert [(item["hospital"], item["entry_id"]) for item in walked] == [
        (item["hospital"], item["entry_id"]) for item in everything
    ]


def test_researchers_are_refused(northwind):
    client = login_client(northwind, "northwind-researcher")
    assert client.get("/api/v1/access-log/").status_code == 403


def test_a_doctor_lists_only_their_hospitals_entries(alpha, beta, li_at_alpha, reads):
    read, refused = reads
    beta_body = login_client(beta, "beta-doctor").get("/api/v1/access-log/").json()
    assert {item["hospital"] for item in beta_body["results"]} <= {"beta"}
    assert refused.id not in {item["entry_id"] for item in beta_body["results"]}

    alpha_client = login_client(alpha, "alpha-doctor")
    about_li = alpha_client.get(
        "/api/v1/access-log/", {"patient": str(li_at_alpha.id), "limit": 200}
    ).json()["results"]
    assert {item["hospital"] for item in about_li} == {"alpha"}
    assert {item["patient_pseudonym"] for item in about_li} <= set(li_at_alpha.pseudonyms)
    assert {entry.id for entry in [*read, refused]} <= {item["entry_id"] for item in about_li}
    doctor_row = next(item for item in about_li if item["entry_id"] == read[0].id)
    assert doctor_row["reader_name"] == "Ana Alvarez"
    refusal_row = next(item for item in about_li if item["entry_id"] == refused.id)
    assert refusal_row["reader_name"] == "the patient"  # as logged: no patient name


def test_a_patient_cannot_filter_the_api_by_patient(beta, li_at_alpha):
    client = login_client(beta, "beta-patient")
    response = client.get("/api/v1/access-log/", {"patient": str(li_at_alpha.id)})
    assert response.status_code == 400


def test_reasons_read_in_plain_words():
    assert access_log_reason_in_words("default:own-hospital") == (
        "staff of the hospital that wrote it"
    )
    assert access_log_reason_in_words(f"grant:{'a' * 64};default:author") == (
        "your consent (transaction aaaaaaaaaaaa); the doctor who wrote it"
    )
    assert access_log_reason_in_words("deny:no-grant") == "refused: no consent"
    assert access_log_reason_in_words("deny:something-new") == "refused"
    assert access_log_reason_in_words("own-record") == "you"
