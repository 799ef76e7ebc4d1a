"""The demo's research state, as `make run` seeds it."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.models import ResearchInvitation
from medportal.research.demo import AGGREGATE_TITLE, ROWS_TITLE
from medportal.research.models import ResearchRequest
from medportal.research.selectors import releases_checked
from medportal.research.services import dataset_open

pytestmark = pytest.mark.django_db


def test_the_hypertension_request_is_approved_opted_into_and_released(northwind, alpha, beta):
    request = ResearchRequest.objects.get(organisation=northwind, title=ROWS_TITLE)
    assert request.status == "opened" and request.k == 5
    assert {(p.hospital.slug, p.status) for p in request.participations.all()} == {
        ("alpha", "released"),
        ("beta", "approved"),
    }
    with tenant_context(alpha):
        li = ResearchInvitation.objects.get(
            request_id=request.id, patient__user__username="alpha-patient"
        )
    assert li.status == "opted_in" and li.released_at is not None
    (checked,) = releases_checked(request)
    # Li Wei and five seeded women aged 40-44 are a class of six; the one man
    # (62) is a class of one: suppressed.
    assert checked.release.rows > 0 and checked.release.suppressed > 0
    assert checked.file_matches and checked.chain_matches and checked.block_height
    with tenant_context(northwind):
        archive = dataset_open(
            user=User.objects.get(username="northwind-researcher"), release=checked.release
        )
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        text = opened.read("dataset.csv").decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len({row["pseudonym"] for row in rows}) == 6
    for canary in ("Wei", "A-100234", "1984-03-14", "Khan", "A-R0001"):
        assert canary not in text


def test_the_aggregate_request_has_results_with_small_cells_hidden(northwind):
    request = ResearchRequest.objects.get(organisation=northwind, title=AGGREGATE_TITLE)
    cells = request.aggregate_result["cells"]
    # Four seeded women at alpha and one at beta with I10, aged 40-44.
    assert cells["I10|40-44|female"] == 5
    assert cells["E11|55-59|male"] == "< 2"  # Omar Haddad at beta, alone
    assert request.aggregate_parties == ["alpha", "beta"]
