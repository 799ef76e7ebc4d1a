"""The patient's Sharing page, receipts, the directory and the consents API."""

from __future__ import annotations

import pytest
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chain.models import PendingTransaction, Transaction
from chain.services import block_seal
from consent.policy import grants_current
from consent.requests import practitioner_search
from records.categories import categories_at
from records.keys import practitioner_pseudonym
from records.models import Patient
from tests.conftest import PASSWORD, login_client, user_at

pytestmark = pytest.mark.django_db


def _li_pseudonyms(alpha) -> list[str]:
    with tenant_context(alpha):
        return Patient.objects.get(user__username="alpha-patient").pseudonyms


def _grants(alpha):
    return {
        (g.grantee_type, g.grantee_id, g.purpose): g.categories
        for g in grants_current(patient_pseudonyms=_li_pseudonyms(alpha))
    }


def _beta_doctor_pseudonym(beta) -> str:
    doctor = user_at(beta, "beta-doctor")
    return practitioner_pseudonym(tenant_slug="beta", user_id=doctor.pk)


def test_the_directory_finds_a_doctor_at_another_hospital_by_name(alpha, beta):
    with tenant_context(alpha):
        found = practitioner_search(query="ben b")
        by_family_name = practitioner_search(query="BROWN")
    assert [(p.display_name, p.tenant.slug) for p in found] == [("Ben Brown", "beta")]
    assert [p.pseudonym for p in by_family_name] == [_beta_doctor_pseudonym(beta)]
    with tenant_context(alpha):
        assert practitioner_search(query="") == []
        assert practitioner_search(query="rown") == []  # prefixes only


def test_the_sharing_page_searches_doctors_by_post(alpha):
    client = login_client(alpha, "alpha-patient")
    page = client.post("/consent/sharing/", {"action": "search", "q": "Ben"}).content.decode()
    assert "Ben Brown, Beta University Hospital" in page


def test_a_grant_shows_on_the_page_and_is_gone_after_revoking(alpha, beta):
    client = login_client(alpha, "alpha-patient")
    assert "may read, for a second opinion" not in client.get("/consent/sharing/").content.decode()
    response = client.post(
        "/consent/sharing/",
        {
            "action": "grant",
            "password": PASSWORD,
            "grantee": "tenant:beta",
            "categories": ["normal", "mental_health"],
            "purpose": "second_opinion",
        },
    )
    assert response.status_code == 302
    tx_hash = response["Location"].rsplit("receipt=", 1)[1]
    assert _grants(alpha)[("tenant", "beta", "second_opinion")] == {
        "demographics", "encounters", "diagnoses", "medications", "allergies",
        "vitals", "labs", "imaging", "procedures", "mental_health",
    }  # fmt: skip
    page = client.get(response["Location"]).content.decode()
    assert tx_hash in page and f"/consent/receipts/{tx_hash}/" in page
    assert "All doctors at Beta University Hospital" in page
    assert "Very restricted:</strong> Mental health" in page
    assert "may read, for a second opinion" in page

    response = client.post(
        "/consent/sharing/revoke/",
        {"grantee": "tenant:beta", "purpose": "second_opinion", "password": PASSWORD},
    )
    assert response.status_code == 302
    assert _grants(alpha)[("tenant", "beta", "second_opinion")] == frozenset()
    page = client.get("/consent/sharing/").content.decode()
    assert "may read, for a second opinion" not in page
    assert "Very restricted:</strong> Mental health" not in page


def test_a_grant_to_a_doctor_from_the_directory(alpha, beta):
    client = login_client(alpha, "alpha-patient")
    pseudonym = _beta_doctor_pseudonym(beta)
    response = client.post(
        "/consent/sharing/",
        {
            "action": "grant",
            "password": PASSWORD,
            "grantee": f"practitioner:{pseudonym}",
            "categories": ["labs"],
            "purpose": "treatment",
            "expires_at": "2999-01-31",
        },
    )
    assert response.status_code == 302
    grant = next(
        g
        for g in grants_current(patient_pseudonyms=_li_pseudonyms(alpha))
        if g.grantee_type == "practitioner"
    )
    assert (grant.grantee_id, grant.categories) == (pseudonym, {"labs"})
    assert grant.expires_at.date().isoformat() in ("2999-01-31", "2999-02-01")
    assert "Ben Brown, Beta University Hospital" in client.get("/consent/sharing/").content.decode()


@pytest.mark.parametrize(
    "data, field",
    [
        ({"grantee": "tenant:beta", "categories": [], "purpose": "treatment"}, "categories"),
        ({"grantee": "tenant:beta", "categories": ["bogus"], "purpose": "treatment"}, "bogus"),
        ({"grantee": "tenant:nowhere", "categories": ["labs"], "purpose": "treatment"}, "list"),
        ({"grantee": "tenant:northwind", "categories": ["labs"], "purpose": "x"}, "list"),
        ({"grantee": "", "categories": ["labs"], "purpose": "treatment"}, "doctor or a hospital"),
        ({"grantee": "tenant:beta", "categories": ["labs"], "purpose": "emergency"}, "one of"),
        (
            {"grantee": "tenant:beta", "categories": ["labs"], "expires_at": "2001-01-01"},
            "future",
        ),
        ({"grantee": "tenant:beta", "categories": ["labs"], "expires_at": "soon"}, "YYYY-MM-DD"),
    ],
)
def test_a_bad_grant_is_refused_with_messages_and_grants_nothing(alpha, data, field):
    client = login_client(alpha, "alpha-patient")
    before = _grants(alpha)
    pending_before = PendingTransaction.objects.count()
    response = client.post(
        "/consent/sharing/",
        {"action": "grant", "purpose": "treatment", "password": PASSWORD, **data},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing was shared." in body and field in body
    assert _grants(alpha) == before
    assert PendingTransaction.objects.count() == pending_before


def test_other_roles_do_not_get_the_sharing_page(alpha):
    assert login_client(alpha, "alpha-doctor").get("/consent/sharing/").status_code == 404


def test_the_receipt_is_the_signed_transaction_with_its_block(alpha, beta):
    client = login_client(alpha, "alpha-patient")
    response = client.post(
        "/consent/sharing/",
        {
            "action": "grant",
            "password": PASSWORD,
            "grantee": "tenant:beta",
            "categories": ["labs"],
            "purpose": "research",
        },
    )
    tx_hash = response["Location"].rsplit("receipt=", 1)[1]
    pending = client.get(f"/consent/receipts/{tx_hash}/")
    assert pending.status_code == 200
    assert pending.json()["block_height"] is None and pending.json()["hash"] == tx_hash
    assert "attachment" in pending["Content-Disposition"]
    with schema_context(get_public_schema_name()):
        block_seal(force=True)
        sealed = Transaction.objects.select_related("block").get(hash=tx_hash)
    body = client.get(f"/consent/receipts/{tx_hash}/").json()
    assert body == {
        "kind": "access",
        "author": sealed.author,
        "payload": sealed.payload,
        "timestamp": body["timestamp"],
        "signature": sealed.signature,
        "hash": tx_hash,
        "block_height": sealed.block.height,
        "block_hash": sealed.block.hash,
    }
    assert body["timestamp"].startswith(sealed.timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["payload"]["patient"] in _li_pseudonyms(alpha)
    # Li Wei's own receipt works at beta too (one linked pseudonym) ...
    assert (
        login_client(beta, "beta-patient").get(f"/consent/receipts/{tx_hash}/").status_code == 200
    )
    # ... and is "not found" for another patient and for a made-up hash.
    other = login_client(alpha, "alpha-patient-2")
    assert other.get(f"/consent/receipts/{tx_hash}/").status_code == 404
    assert client.get(f"/consent/receipts/{'0' * 64}/").status_code == 404


# --- API ---------------------------------------------------------------------------


def test_api_grant_list_and_revoke(alpha):
    client = login_client(alpha, "alpha-patient")
    created = client.post(
        "/api/v1/consents/",
        {
            "grantee_type": "tenant",
            "grantee_id": "beta",
            "categories": ["normal"],
            "password": PASSWORD,
        },
        content_type="application/json",
    )
    assert created.status_code == 201
    listed = client.get("/api/v1/consents/").json()
    assert [(c["grantee_id"], c["purpose"], c["tx_hash"]) for c in listed] == [
        ("beta", "treatment", created.json()["tx_hash"])
    ]
    assert listed[0]["grantee_name"] == "All doctors at Beta University Hospital"
    assert listed[0]["categories"] == sorted(categories_at("normal"))
    revoked = client.post(
        "/api/v1/consents/revoke",
        {"grantee_type": "tenant", "grantee_id": "beta", "password": PASSWORD},
        content_type="application/json",
    )
    assert revoked.status_code == 200
    assert client.get("/api/v1/consents/").json() == []  # the demo's grant is the same one
    again = client.post(
        "/api/v1/consents/revoke",
        {"grantee_type": "tenant", "grantee_id": "beta", "password": PASSWORD},
        content_type="application/json",
    )
    assert again.status_code == 400 and "grant" in again.json()


def test_api_bad_grant_is_400_and_grants_nothing(alpha):
    client = login_client(alpha, "alpha-patient")
    before = _grants(alpha)
    for body in (
        {"grantee_type": "tenant", "grantee_id": "beta", "categories": []},
        {"grantee_type": "tenant", "grantee_id": "beta", "categories": ["nope"]},
        {"grantee_type": "tenant", "grantee_id": "nowhere", "categories": ["labs"]},
        {"grantee_type": "group", "grantee_id": "beta", "categories": ["labs"]},
    ):
        response = client.post(
            "/api/v1/consents/", {**body, "password": PASSWORD}, content_type="application/json"
        )
        assert response.status_code == 400, body
        assert set(response.json()) & {"categories", "grantee_id", "grantee_type"}
    assert _grants(alpha) == before


def test_api_consents_are_for_patients_only(alpha):
    doctor = login_client(alpha, "alpha-doctor")
    assert doctor.get("/api/v1/consents/").status_code == 403
    response = doctor.post(
        "/api/v1/consents/",
        {"grantee_type": "tenant", "grantee_id": "beta", "categories": ["labs"]},
        content_type="application/json",
    )
    assert response.status_code == 403


def test_a_wrong_password_signs_nothing(alpha):
    client = login_client(alpha, "alpha-patient")
    before = _grants(alpha)
    response = client.post(
        "/consent/sharing/",
        {
            "action": "grant",
            "password": "not-her-password",
            "grantee": "tenant:beta",
            "categories": ["labs"],
            "purpose": "second_opinion",
        },
    )
    assert response.status_code == 400
    assert "That is not your password." in response.content.decode()
    assert _grants(alpha) == before
