"""Matching, opting in, and releasing de-identified rows: only opted-in patients,
nothing that identifies anyone, every class at least k, hash on the chain."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction
from consent.models import AccessLogEntry, InvitationStatus, ResearchInvitation
from medportal.research.keys import research_store
from medportal.research.models import Release
from medportal.research.release import patients_matching
from medportal.research.services import (
    dataset_open,
    invitations_make,
    participation_decide,
    release_make,
    research_answer,
    research_preference_set,
)
from records.models import Patient
from tests.conftest import PASSWORD
from tests.research.helpers import filed_request, patient_with_entries

pytestmark = pytest.mark.django_db


# (username, given, family, sex, age, code): codes I12/I13 so that the demo's own
# research patients (I10, I11) stay out of these requests.
COHORT = (
    ("fran", "Fran", "Oyelaran", "female", 43, "I13.0"),
    ("gita", "Gita", "Vanterpool", "female", 41, "I12.9"),
    ("milo", "Milo", "Strand", "male", 70, "I12.9"),
    ("nora", "Nora", "Lindqvist", "female", 44, "I13.0"),
    ("dia", "Dia", "Betes", "female", 42, "E11.9"),
    ("young", "Yan", "Young", "female", 25, "I12.9"),
)
CRITERIA = {"codes": "I12, I13", "age_min": "40", "age_max": "80", "k": "2"}


@pytest.fixture
def cohort(alpha):
    """Patients at alpha: Zelda (the canary), Fran, Gita, Milo and Nora match
    "I12 or I13, aged 40-80"; Dia (E11.9) and Yan (25) do not."""
    people = {
        "zelda": patient_with_entries(
            alpha,
            username="zelda",
            given="Zelda",
            family="Quixotewright",
            sex="female",
            age=42,
            number="RN-CANARY-4471",
            codes=["I12.9"],
            phone="+44 20 7946 0999",
            email="zelda.q@example.org",
            drug="Zelda's Amlodipine",
        )
    }
    for number, (username, given, family, sex, age, code) in enumerate(COHORT):
        people[username] = patient_with_entries(
            alpha,
            username=username,
            given=given,
            family=family,
            sex=sex,
            age=age,
            number=f"RN-55{number:02d}",
            codes=[code],
        )
    return people


def _admin(tenant):
    with tenant_context(tenant):
        return User.objects.get(username=f"{tenant.slug}-admin")


def _approve(tenant, request):
    with tenant_context(tenant):
        participation_decide(
            admin=_admin(tenant), request=request, approve=True, reason="Ethics approval checked"
        )
        return invitations_make(request=request)


def _answer(tenant, username, request, take_part):
    with tenant_context(tenant):
        user = User.objects.get(username=username)
        return research_answer(
            user=user, password=PASSWORD, request_id=request.id, take_part=take_part
        )


def _release(tenant, request):
    with tenant_context(tenant):
        return release_make(admin=_admin(tenant), request=request)


def _open(northwind, release) -> dict[str, bytes]:
    with tenant_context(northwind):
        researcher = User.objects.get(username="northwind-researcher")
        archive = dataset_open(user=researcher, release=release)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return {name: opened.read(name) for name in opened.namelist()}


def _rows(files) -> list[dict]:
    return list(csv.DictReader(io.StringIO(files["dataset.csv"].decode())))


def _matched(alpha, request) -> set[str]:
    with tenant_context(alpha):
        return {patient.user.username for patient in patients_matching(request)}


def test_matching_finds_exactly_the_patients_who_fit(northwind, alpha, cohort):
    # "I1" covers I10-I15: the cohort's I12/I13, Li Wei's I10 and the demo's
    # research patients (I10, I11.9; research.demo.SEEDED), aged 40-80.
    demo = {f"alpha-research-{n}" for n in range(1, 7)}
    wide = filed_request(northwind, codes="I1", age_min="40", age_max="80")
    assert (
        _matched(alpha, wide) == {"zelda", "fran", "gita", "milo", "nora", "alpha-patient"} | demo
    )
    narrow = filed_request(northwind, codes="I12", sex="female", age_min="40", age_max="45")
    assert _matched(alpha, narrow) == {"zelda", "gita"}
    # No code: any entry; a period of care in the past finds nobody (entries are new).
    old = filed_request(northwind, codes="", period_to="2020-12-31", age_min="40")
    assert _matched(alpha, old) == set()
    everyone = filed_request(northwind, codes="", sex="male", age_min="65")
    assert _matched(alpha, everyone) == {"milo"}


def test_a_release_holds_opted_in_patients_only_k_anonymous_and_on_the_chain(
    northwind, alpha, cohort
):
    request = filed_request(northwind, **CRITERIA)
    assert _approve(alpha, request) == 5
    for username in ("zelda", "fran", "gita", "milo"):
        assert _answer(alpha, username, request, True) == InvitationStatus.OPTED_IN
    assert _answer(alpha, "gita", request, False) == InvitationStatus.WITHDRAWN
    assert _answer(alpha, "nora", request, False) == InvitationStatus.OPTED_OUT
    with tenant_context(alpha):
        log_before = AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first()

    release = _release(alpha, request)
    files = _open(northwind, release)
    rows = _rows(files)
    # Zelda and Fran (women 40-44) make a class of two; Milo alone is suppressed;
    # Gita withdrew and Nora said no.
    assert len({row["pseudonym"] for row in rows}) == 2
    assert {(row["age_band"], row["sex"]) for row in rows} == {("40-44", "female")}
    assert release.rows == len(rows) == 8 and release.suppressed == 4
    assert {row["item"] for row in rows} == {"encounter", "diagnosis", "medication", "vital"}
    assert {row["code"] for row in rows if row["item"] == "diagnosis"} == {"I12.9", "I13.0"}
    # One FHIR resource per line, a Patient per pseudonym.
    resources = [json.loads(line) for line in files["dataset.ndjson"].splitlines()]
    assert sum(1 for r in resources if r["resourceType"] == "Patient") == 2
    assert {"data-dictionary.csv", "README.txt"} <= set(files)
    # The chain holds the encrypted file's hash and the totals, nothing else.
    stored = research_store().get(release.sha256)
    assert hashlib.sha256(stored).hexdigest() == release.sha256
    with schema_context("public"):
        payload = PendingTransaction.objects.get(hash=release.tx_hash).payload
    assert payload == {
        "request": str(request.id),
        "organisation": "northwind",
        "status": "released",
        "hospital": "alpha",
        "dataset_sha256": release.sha256,
        "rows": 8,
        "suppressed": 4,
    }
    with tenant_context(alpha):
        released = set(
            ResearchInvitation.objects.filter(
                request_id=request.id, released_at__isnull=False
            ).values_list("patient_id", flat=True)
        )
        # Each read went through the policy and into alpha's access log.
        logged = AccessLogEntry.objects.filter(id__gt=log_before)
        assert {(e.reader_role, e.reader_tenant, e.decision) for e in logged} == {
            ("researcher", "northwind", "allow")
        }
        assert logged.count() == 3  # zelda, fran, milo: one entry each, no refusals
        assert all(entry.reason.startswith("grant:") for entry in logged)
        assert all(entry.sections == ["normal"] for entry in logged)  # never the notes
    assert released == {cohort["zelda"].pk, cohort["fran"].pk}


def test_no_name_contact_record_number_or_exact_date_leaves_the_hospital(northwind, alpha, cohort):
    request = filed_request(northwind, **CRITERIA)
    _approve(alpha, request)
    for username in ("zelda", "fran"):
        _answer(alpha, username, request, True)
    release = _release(alpha, request)
    files = _open(northwind, release)
    everything = b"\n".join(files.values())
    with tenant_context(alpha):
        from records.services import patient_identity

        zelda = patient_identity(Patient.objects.get(pk=cohort["zelda"].pk))
    canaries = [
        "Zelda",
        "Quixotewright",
        "RN-CANARY-4471",
        "7946 0999",
        "zelda.q@example.org",
        zelda.birth_date.isoformat(),
        "Fran",
        "Oyelaran",
        "RN-5512",
        "lives alone",
        "usual doctor",
        "Review for",
    ]
    canaries.append((timezone.localdate() - timedelta(days=40)).isoformat())  # the visit day
    for canary in canaries:
        assert canary.encode() not in everything, canary
        assert canary.lower().encode() not in everything.lower(), canary
    # The drug name carrying her name was dropped, not released.
    assert any(row["item"] == "medication" and row["display"] == "" for row in _rows(files))
    # Nor in what anyone else can see: the sealed file and the chain.
    assert b"Zelda" not in research_store().get(release.sha256)
    with schema_context("public"):
        chain_text = json.dumps(list(PendingTransaction.objects.values_list("payload", flat=True)))
    for canary in canaries[:6]:
        assert canary not in chain_text


def test_pseudonyms_differ_between_requests(northwind, alpha, cohort):
    seen = []
    for title in ("First", "Second"):
        request = filed_request(northwind, title=title, **CRITERIA)
        _approve(alpha, request)
        for username in ("zelda", "fran"):
            _answer(alpha, username, request, True)
        seen.append({row["pseudonym"] for row in _rows(_open(northwind, _release(alpha, request)))})
    assert len(seen[0]) == len(seen[1]) == 2
    assert not seen[0] & seen[1]


def test_a_later_release_adds_new_opt_ins_only_and_never_a_withdrawn_patient(
    northwind, alpha, cohort
):
    request = filed_request(northwind, **CRITERIA)
    _approve(alpha, request)
    for username in ("zelda", "fran"):
        _answer(alpha, username, request, True)
    first = _release(alpha, request)
    assert first.rows == 8
    first_people = {row["pseudonym"] for row in _rows(_open(northwind, first))}
    assert _answer(alpha, "zelda", request, False) == InvitationStatus.WITHDRAWN
    with tenant_context(alpha):
        invitation = ResearchInvitation.objects.get(
            request_id=request.id, patient_id=cohort["zelda"].pk
        )
        # Recorded; the file already released cannot be recalled.
        assert invitation.status == "withdrawn" and invitation.released_at is not None
    for username in ("gita", "nora"):  # opt in after the first release
        _answer(alpha, username, request, True)
    second = _release(alpha, request)
    second_people = {row["pseudonym"] for row in _rows(_open(northwind, second))}
    # Gita and Nora only: not Zelda (withdrew), not Fran (released already).
    assert (second.rows, second.suppressed) == (8, 0)
    assert len(second_people) == 2 and not second_people & first_people
    with tenant_context(alpha):
        released = set(
            ResearchInvitation.objects.filter(
                request_id=request.id, released_at__isnull=False
            ).values_list("patient__user__username", flat=True)
        )
    assert released == {"zelda", "fran", "gita", "nora"}


def test_never_ask_me_means_no_invitation(northwind, alpha, cohort):
    with tenant_context(alpha):
        research_preference_set(user=User.objects.get(username="zelda"), choice="never_ask")
    request = filed_request(northwind, codes="I12", age_min="40", age_max="45")
    assert _approve(alpha, request) == 1  # gita; not zelda
    with tenant_context(alpha):
        assert not ResearchInvitation.objects.filter(patient_id=cohort["zelda"].pk).exists()
    with pytest.raises(PermissionDenied):
        _answer(alpha, "zelda", request, True)


def test_a_patient_not_invited_cannot_opt_in_and_nothing_is_signed(northwind, alpha, cohort):
    request = filed_request(northwind, codes="I12", age_min="40", age_max="45")
    with schema_context("public"):
        before = PendingTransaction.objects.filter(kind="access").count()
    with pytest.raises(PermissionDenied):
        _answer(alpha, "gita", request, True)  # alpha has not approved: nobody is invited
    with schema_context("public"):
        assert PendingTransaction.objects.filter(kind="access").count() == before


def test_only_the_requesting_organisation_opens_a_dataset(
    northwind, southbank, alpha, beta, cohort
):
    request = filed_request(northwind, **CRITERIA)
    _approve(alpha, request)
    _answer(alpha, "zelda", request, True)
    release = _release(alpha, request)
    with tenant_context(southbank):
        other = User.objects.get(username="southbank-researcher")
        with pytest.raises(PermissionDenied):
            dataset_open(user=other, release=release)
    with tenant_context(beta):
        with pytest.raises(PermissionDenied):
            dataset_open(user=User.objects.get(username="beta-admin"), release=release)


def test_releasing_needs_an_approval(northwind, alpha, beta, cohort):
    request = filed_request(northwind, **CRITERIA)
    with pytest.raises(ValidationError, match="Approve the request"):
        _release(alpha, request)
    assert not Release.objects.filter(request=request).exists()


def test_a_release_started_from_a_page_runs_as_a_task_and_tells_the_admin(northwind, alpha, cohort):
    from consent.models import Notification
    from medportal.research.models import Participation
    from medportal.research.services import release_in_progress, release_start
    from tests.research.helpers import run_release_task

    request = filed_request(northwind, **CRITERIA)
    _approve(alpha, request)
    for username in ("zelda", "fran"):
        _answer(alpha, username, request, True)
    with tenant_context(alpha):
        admin = User.objects.get(username="alpha-admin")
        participation = release_start(admin=admin, request=request)
        assert release_in_progress(participation)
        with pytest.raises(ValidationError, match="being prepared already"):
            release_start(admin=admin, request=request)
    assert not Release.objects.filter(request=request).exists()
    release = run_release_task(alpha, request, "alpha-admin")
    assert (release.rows, release.suppressed) == (8, 0)
    assert Participation.objects.get(request=request, hospital=alpha).release_started_at is None
    with tenant_context(alpha):
        told = Notification.objects.filter(recipient=admin, kind="research_status").latest("id")
    assert told.text == f"Released “{request.title}”: 8 rows, 0 suppressed."
    # A release the task cannot make (the request was closed meanwhile) is
    # reported to the admin, and the mark is cleared.
    with tenant_context(alpha):
        release_start(admin=admin, request=request)
    from medportal.research.models import ResearchRequest

    ResearchRequest.objects.filter(pk=request.pk).update(status="closed")
    assert run_release_task(alpha, request, "alpha-admin") is None
    with tenant_context(alpha):
        told = Notification.objects.filter(recipient=admin, kind="research_status").latest("id")
    assert told.text.startswith(f"The release of “{request.title}” was not made:")
    assert "no longer open" in told.text
    assert Participation.objects.get(request=request, hospital=alpha).release_started_at is None
    assert Release.objects.filter(request=request).count() == 1
