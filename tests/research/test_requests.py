"""Filing, answering and ending research requests; who may do what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction
from chain.services import TransactionRejected, transaction_submit
from medportal.research.models import Participation, RequestStatus, ResearchRequest
from medportal.research.services import (
    participation_decide,
    request_close,
    request_save,
    request_submit,
    request_withdraw,
)
from tests.research.helpers import PDF, REQUEST_DATA, filed_request

pytestmark = pytest.mark.django_db


def _researcher(northwind):
    with tenant_context(northwind):
        return User.objects.get(username="northwind-researcher")


def _admin(tenant):
    with tenant_context(tenant):
        return User.objects.get(username=f"{tenant.slug}-admin")


def _requests_on_chain(request_id):
    with schema_context("public"):
        return list(
            PendingTransaction.objects.filter(kind="request", payload__request=str(request_id))
            .order_by("id")
            .values_list("payload", flat=True)
        )


def test_a_draft_keeps_partial_fields_and_is_not_published(northwind):
    researcher = _researcher(northwind)
    with tenant_context(northwind):
        draft = request_save(user=researcher, data={"title": "Sleep and blood pressure"})
        draft = request_save(
            user=researcher, data={**REQUEST_DATA, "title": "Sleep and BP"}, request=draft
        )
    assert draft.status == RequestStatus.DRAFT and draft.title == "Sleep and BP"
    assert draft.criteria["codes"] == ["I10"] and draft.k == 2
    assert _requests_on_chain(draft.id) == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"k": "1"}, "k", "from 2 to 100"),
        ({"codes": "I10, ZZ9"}, "codes", "Not an ICD-10 code"),
        ({"age_min": "60", "age_max": "40"}, "age_max", "must not be below"),
        ({"sex": "robot"}, "sex", "Choose one of"),
        ({"period_from": "2025-01-01", "period_to": "2020-01-01"}, "period_to", "must end"),
        ({"categories": ["clinical_notes"]}, "categories", "cannot carry"),
        ({"expires_at": "2001-01-01"}, "expires_at", "after today"),
        ({"title": ""}, "title", "required"),
        ({"answer": "everything"}, "answer", "rows or aggregate"),
    ],
)
def test_bad_fields_are_refused_with_the_field_named_and_nothing_saved(
    northwind, changes, field, message
):
    researcher = _researcher(northwind)
    before = ResearchRequest.objects.count()
    with tenant_context(northwind), pytest.raises(ValidationError) as caught:
        request_save(user=researcher, data={**REQUEST_DATA, **changes})
    assert message in " ".join(caught.value.message_dict[field])
    assert ResearchRequest.objects.count() == before


def test_the_approval_document_must_be_a_pdf_by_its_content(northwind):
    researcher = _researcher(northwind)
    fake = SimpleUploadedFile(
        "approval.pdf", b"MZ\x90\x00 not a pdf", content_type="application/pdf"
    )
    with tenant_context(northwind), pytest.raises(ValidationError) as caught:
        request_save(user=researcher, data=REQUEST_DATA, document=fake)
    assert "must be a PDF" in caught.value.message_dict["ethics_document"][0]


def test_submitting_needs_every_field_and_the_document(northwind):
    researcher = _researcher(northwind)
    with tenant_context(northwind):
        draft = request_save(user=researcher, data={"title": "Half done"})
        with pytest.raises(ValidationError) as caught:
            request_submit(user=researcher, request=draft)
    assert {"purpose", "investigator", "ethics_reference", "categories"} <= set(
        caught.value.message_dict
    )
    with tenant_context(northwind):
        draft = request_save(
            user=researcher,
            data={
                **REQUEST_DATA,
                "expires_at": (timezone.localdate() + timedelta(days=60)).isoformat(),
            },
            request=draft,
        )
        with pytest.raises(ValidationError, match="ethics approval"):
            request_submit(user=researcher, request=draft)
    assert ResearchRequest.objects.get(pk=draft.pk).status == RequestStatus.DRAFT
    assert _requests_on_chain(draft.id) == []


def test_submitting_publishes_the_documents_hash_and_nothing_of_the_text(northwind):
    import hashlib

    request = filed_request(northwind, title="Renal outcomes in diabetes")
    (payload,) = _requests_on_chain(request.id)
    assert payload == {
        "request": str(request.id),
        "organisation": "northwind",
        "status": "opened",
        "document_sha256": hashlib.sha256(PDF).hexdigest(),
    }
    assert request.status == RequestStatus.OPENED and request.submitted_at


def test_a_hospital_approves_or_declines_once_with_a_reason(northwind, alpha, beta):
    request = filed_request(northwind)
    with tenant_context(alpha):
        with pytest.raises(ValidationError, match="reason"):
            participation_decide(admin=_admin(alpha), request=request, approve=True, reason=" ")
        participation_decide(
            admin=_admin(alpha), request=request, approve=True, reason="Ethics approval checked"
        )
        with pytest.raises(ValidationError, match="approved it already"):
            participation_decide(
                admin=_admin(alpha), request=request, approve=False, reason="Changed my mind"
            )
    with tenant_context(beta):
        participation_decide(
            admin=_admin(beta), request=request, approve=False, reason="No capacity this year"
        )
    statuses = [(p["status"], p.get("hospital")) for p in _requests_on_chain(request.id)]
    assert statuses == [("opened", None), ("approved", "alpha"), ("declined", "beta")]
    assert {
        (p.hospital.slug, p.status, p.reason) for p in Participation.objects.filter(request=request)
    } == {
        ("alpha", "approved", "Ethics approval checked"),
        ("beta", "declined", "No capacity this year"),
    }


def test_only_a_hospital_admin_answers_and_only_a_researcher_files(northwind, alpha):
    request = filed_request(northwind)
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        with pytest.raises(PermissionDenied):
            participation_decide(admin=doctor, request=request, approve=True, reason="Fine")
        with pytest.raises(PermissionDenied):
            request_save(user=_admin(alpha), data=REQUEST_DATA)
    with tenant_context(northwind), pytest.raises(PermissionDenied):
        participation_decide(
            admin=_researcher(northwind), request=request, approve=True, reason="Fine"
        )
    assert not Participation.objects.filter(request=request).exists()
    assert len(_requests_on_chain(request.id)) == 1


def test_withdrawing_and_closing(northwind, alpha):
    researcher = _researcher(northwind)
    first, second = filed_request(northwind), filed_request(northwind, title="Second")
    with tenant_context(northwind):
        request_withdraw(user=researcher, request=first)
        request_close(user=researcher, request=second)
        with pytest.raises(ValidationError, match="Only an open request"):
            request_close(user=researcher, request=first)
    assert ResearchRequest.objects.get(pk=first.pk).status == RequestStatus.WITHDRAWN
    assert _requests_on_chain(first.id)[-1]["status"] == "withdrawn"
    assert _requests_on_chain(second.id)[-1]["status"] == "closed"
    with tenant_context(alpha), pytest.raises(ValidationError, match="no longer open"):
        participation_decide(admin=_admin(alpha), request=first, approve=True, reason="Late")


def test_an_expired_request_cannot_be_answered(northwind, alpha):
    request = filed_request(northwind)
    ResearchRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    request.refresh_from_db()
    with tenant_context(alpha), pytest.raises(ValidationError, match="expired"):
        participation_decide(admin=_admin(alpha), request=request, approve=True, reason="Fine")


@pytest.mark.parametrize(
    ("signer", "payload", "message"),
    [
        ("alpha", {"status": "opened"}, "answers for itself"),
        ("alpha", {"status": "approved", "hospital": "beta"}, "answers for itself"),
        ("alpha", {"status": "withdrawn", "hospital": "alpha"}, "may not set the status"),
        ("northwind", {"status": "approved", "hospital": "alpha"}, "cannot answer for a hospital"),
    ],
)
def test_the_hub_refuses_request_transactions_from_the_wrong_party(
    northwind, alpha, signer, payload, message
):
    tenant = {"alpha": alpha, "northwind": northwind}[signer]
    with pytest.raises(TransactionRejected, match=message):
        transaction_submit(
            tenant=tenant,
            kind="request",
            payload={"request": "r-1", "organisation": "northwind", **payload},
        )


def test_an_organisation_speaks_only_for_its_own_requests(northwind):
    with pytest.raises(TransactionRejected, match="its own requests"):
        transaction_submit(
            tenant=northwind,
            kind="request",
            payload={"request": "r-1", "organisation": "southbank", "status": "opened"},
        )


@pytest.mark.parametrize(
    "changes",
    [{"categories": 5}, {"categories": [{"a": 1}]}, {"codes": 7}, {"k": ["2"]}],
)
def test_wrong_types_are_field_errors_not_crashes(northwind, changes):
    researcher = _researcher(northwind)
    before = ResearchRequest.objects.count()
    with tenant_context(northwind), pytest.raises(ValidationError) as caught:
        request_save(user=researcher, data={**REQUEST_DATA, **changes})
    assert set(caught.value.message_dict) == set(changes)
    assert ResearchRequest.objects.count() == before
