"""Aggregate-only requests: a secure sum over Shamir shares. The totals equal
the plain sums; no party can read another hospital's own counts."""

from __future__ import annotations

import json

import pytest
from django_tenants.utils import schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction
from medportal.research.keys import HUB_HOLDER, holder_key, open_with
from medportal.research.models import AggregateShare, AggregateSum, ResearchRequest
from medportal.research.services import (
    aggregate_advance,
    invitations_make,
    participation_decide,
    release_make,
    research_answer,
)
from tests.conftest import PASSWORD
from tests.research.helpers import filed_request, patient_with_entries

pytestmark = pytest.mark.django_db

CELL = "I10|40-44|female"


def _admin(tenant):
    with tenant_context(tenant):
        return User.objects.get(username=f"{tenant.slug}-admin")


def _take_part(tenant, request, usernames):
    with tenant_context(tenant):
        participation_decide(
            admin=_admin(tenant), request=request, approve=True, reason="Approved by the board"
        )
        invitations_make(request=request)
        for username in usernames:
            research_answer(
                user=User.objects.get(username=username),
                password=PASSWORD,
                request_id=request.id,
                take_part=True,
            )


@pytest.fixture
def counted(northwind, alpha, beta):
    """Alpha: two women 40-44 with I10 opted in, one man 50-54 with E11 did not.
    Beta: one woman 40-44 with I10 and one man 50-54 with E11.9 opted in."""
    for username, given, sex, age, code in (
        ("ag-1", "Ada", "female", 42, "I10"),
        ("ag-2", "Bel", "female", 44, "I10"),
        ("ag-3", "Cas", "male", 52, "E11.9"),
    ):
        patient_with_entries(
            alpha,
            username=username,
            given=given,
            family="Aggregate",
            sex=sex,
            age=age,
            number=f"AG-{username}",
            codes=[code],
        )
    for username, given, sex, age, code in (
        ("bg-1", "Dee", "female", 41, "I10"),
        ("bg-2", "Eli", "male", 53, "E11.9"),
    ):
        patient_with_entries(
            beta,
            username=username,
            given=given,
            family="Aggregate",
            sex=sex,
            age=age,
            number=f"BG-{username}",
            codes=[code],
        )
    request = filed_request(
        northwind, answer="aggregate", codes="I10, E11", age_min="40", age_max="60", k="2"
    )
    # Li Wei (alpha, I10, 42) is invited too but does not answer.
    _take_part(alpha, request, ["ag-1", "ag-2"])
    _take_part(beta, request, ["bg-1", "bg-2"])
    return request


def _release(tenant, request):
    with tenant_context(tenant):
        return release_make(admin=_admin(tenant), request=request)


def test_the_secure_sum_equals_the_plain_sum_and_small_cells_are_hidden(counted, alpha, beta):
    request = counted
    assert _release(alpha, request) is None
    assert aggregate_advance(request_id=str(request.id)) is False  # beta has not sent yet
    _release(beta, request)
    assert aggregate_advance(request_id=str(request.id)) is True
    request = ResearchRequest.objects.get(pk=request.pk)
    cells = request.aggregate_result["cells"]
    assert cells[CELL] == 3  # two at alpha, one at beta
    assert cells["E11|50-54|male"] == "< 2"  # one (beta's); alpha's did not opt in
    assert {value for cell, value in cells.items() if cell not in (CELL, "E11|50-54|male")} == {0}
    assert request.aggregate_parties == ["alpha", "beta"]
    with schema_context("public"):
        payloads = list(
            PendingTransaction.objects.filter(kind="request", payload__request=str(request.id))
            .exclude(payload__status__in=["opened", "approved"])
            .order_by("id")
            .values_list("payload", flat=True)
        )
    # The hospitals' own "released" say nothing of their numbers; the result's
    # hash is on the chain as the organisation closes the request.
    assert payloads == [
        *(
            {
                "request": str(request.id),
                "organisation": "northwind",
                "status": "released",
                "hospital": slug,
            }
            for slug in ("alpha", "beta")
        ),
        {
            "request": str(request.id),
            "organisation": "northwind",
            "status": "closed",
            "dataset_sha256": request.aggregate_sha256,
        },
    ]
    assert request.status == "closed"


def test_no_party_can_read_another_hospitals_own_counts(counted, alpha, beta):
    request = counted
    _release(alpha, request)
    _release(beta, request)
    aggregate_advance(request_id=str(request.id))
    own = {"alpha": 2, "beta": 1}  # each hospital's own count in CELL
    for share in AggregateShare.objects.filter(request=request):
        # Each share opens only with its holder's key ...
        other = HUB_HOLDER if share.holder != HUB_HOLDER else "alpha"
        with pytest.raises(Exception, match="does not open"):
            open_with(
                holder_key(other),
                bytes(share.sealed),
                request=str(request.id),
                sender=share.sender,
                holder=share.holder,
            )
        # ... and what the holder reads is a random field element, not the count.
        value = json.loads(
            open_with(
                holder_key(share.holder),
                bytes(share.sealed),
                request=str(request.id),
                sender=share.sender,
                holder=share.holder,
            )
        )[CELL]
        assert int(value) != own[share.sender]
    # The published sums are random too (only their combination is the total).
    for published in AggregateSum.objects.filter(request=request):
        assert int(published.sums[CELL]) not in (own["alpha"], own["beta"], 3)


def test_a_hospital_cannot_join_once_the_secure_count_started(northwind, alpha, beta):
    from django.core.exceptions import ValidationError

    request = filed_request(northwind, answer="aggregate", codes="I10", k="2")
    with tenant_context(alpha):
        participation_decide(admin=_admin(alpha), request=request, approve=True, reason="Yes")
    _release(alpha, request)
    with tenant_context(beta), pytest.raises(ValidationError, match="has started"):
        participation_decide(admin=_admin(beta), request=request, approve=True, reason="Yes")
    # With alpha the only hospital, the hub's share is still needed: alpha alone
    # cannot reconstruct; the count completes with alpha's and the hub's sums.
    assert aggregate_advance(request_id=str(request.id)) is True
