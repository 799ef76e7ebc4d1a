"""What each role may see of research requests; pages and the API both read here.

* a researcher sees their organisation's requests (drafts included), the
  hospitals' answers, per-hospital row and suppression counts, whether each
  file matches the chain, and the aggregate result — never who matched;
* a hospital admin sees every submitted request with its document, and their
  own hospital's answer and releases;
* a patient sees the requests she was invited to at this hospital.

Anything else is a 404 (existence not confirmed) or, for a dataset of another
organisation, a 403.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from medportal.research.keys import research_store
from medportal.research.models import Participation, Release, RequestStatus, ResearchRequest
from medportal.tenants.models import TenantKind
from records.store import StoreError


def _is_researcher(user: User) -> bool:
    return connection.tenant.kind == TenantKind.RESEARCH and user_has_role(user, (Role.RESEARCHER,))


def _is_hospital_admin(user: User) -> bool:
    return connection.tenant.kind == TenantKind.HOSPITAL and user_has_role(user, (Role.ADMIN,))


def requests_for_researcher(*, user: User):
    if not _is_researcher(user):
        raise Http404("No such page.")
    return ResearchRequest.objects.filter(organisation=connection.tenant).order_by("-created_at")


def request_for_researcher(*, user: User, request_id) -> ResearchRequest:
    try:
        return requests_for_researcher(user=user).get(pk=request_id)
    except (ResearchRequest.DoesNotExist, ValueError, TypeError, ValidationError):
        raise Http404("No such request.") from None  # ValidationError: not a UUID


def requests_for_hospital(*, user: User):
    """Submitted requests (not drafts), newest first, for a hospital admin; each
    carries this hospital's answer, if any, as ``answers_here`` (a list of at
    most one, fetched with them in one query)."""
    if not _is_hospital_admin(user):
        raise Http404("No such page.")
    return (
        ResearchRequest.objects.exclude(status=RequestStatus.DRAFT)
        .select_related("organisation")
        .prefetch_related(
            Prefetch(
                "participations",
                queryset=Participation.objects.filter(hospital=connection.tenant).select_related(
                    "hospital"
                ),
                to_attr="answers_here",
            )
        )
        .order_by("-submitted_at")
    )


def request_for_hospital(*, user: User, request_id) -> ResearchRequest:
    try:
        return requests_for_hospital(user=user).get(pk=request_id)
    except (ResearchRequest.DoesNotExist, ValueError, TypeError, ValidationError):
        raise Http404("No such request.") from None


def participation_here(request: ResearchRequest) -> Participation | None:
    return Participation.objects.filter(request=request, hospital=connection.tenant).first()


@dataclass(frozen=True)
class ReleaseView:
    release: Release
    hospital_name: str
    file_matches: bool  # the stored file's SHA-256 is the one recorded
    chain_matches: bool  # ... and the chain's transaction names that hash and totals
    block_height: int | None  # None: accepted by the hub, waiting for a block


def releases_checked(request: ResearchRequest, *, hospital=None) -> list[ReleaseView]:
    """The request's releases (one hospital's, if given), each checked against
    the store (the file is read and hashed) and the chain."""
    from records.selectors import chain_pointers

    releases = request.releases.select_related("hospital").order_by("created_at")
    if hospital is not None:
        releases = releases.filter(hospital=hospital)
    releases = list(releases)
    pointers = chain_pointers(release.tx_hash for release in releases)
    views = []
    store = research_store()
    for release in releases:
        try:
            stored = hashlib.sha256(store.get(release.sha256)).hexdigest()
        except StoreError:
            stored = ""
        payload, height = pointers.get(release.tx_hash, ({}, None))
        views.append(
            ReleaseView(
                release=release,
                hospital_name=release.hospital.name,
                file_matches=stored == release.sha256,
                chain_matches=(
                    payload.get("dataset_sha256") == release.sha256 == stored
                    and payload.get("rows") == release.rows
                    and payload.get("suppressed") == release.suppressed
                    and payload.get("hospital") == release.hospital.slug
                ),
                block_height=height,
            )
        )
    return views


def release_for_researcher(*, user: User, release_id) -> Release:
    """A release of the researcher's organisation: 404 when it does not exist,
    403 (``dataset_open``) when it belongs to another organisation."""
    if not _is_researcher(user):
        raise PermissionDenied("Only researchers download datasets.")
    release = (
        Release.objects.select_related("request", "hospital").filter(pk=release_id).first()
        if str(release_id).isdigit()
        else None
    )
    if release is None:
        raise Http404("No such dataset.")
    return release


def ethics_document_for_user(*, user: User, request_id) -> tuple[bytes, str]:
    """The approval document: for the organisation's researchers and for every
    hospital's admins once the request is submitted."""
    if _is_researcher(user):
        request = request_for_researcher(user=user, request_id=request_id)
    elif _is_hospital_admin(user):
        request = request_for_hospital(user=user, request_id=request_id)
    else:
        raise Http404("No such document.")
    if not request.ethics_document_sha256:
        raise Http404("No document attached.")
    try:
        data = research_store().get(request.ethics_document_sha256)
    except StoreError:
        raise Http404("The document cannot be read.") from None
    return data, request.ethics_document_name or "approval.pdf"


@dataclass(frozen=True)
class InvitationView:
    id: int
    request: ResearchRequest
    status: str
    status_label: str
    answered_at: object
    released: bool
    can_answer: bool


def invitations_for_patient(*, user: User) -> list[InvitationView]:
    """The requests this patient was invited to here, newest first."""
    from consent.models import InvitationStatus, ResearchInvitation
    from records.models import Patient

    if connection.tenant.kind != TenantKind.HOSPITAL or not user_has_role(user, (Role.PATIENT,)):
        raise Http404("No such page.")
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        return []
    invitations = list(ResearchInvitation.objects.filter(patient=patient))
    requests = {
        request.pk: request
        for request in ResearchRequest.objects.filter(
            pk__in=[item.request_id for item in invitations]
        ).select_related("organisation")
    }
    views = []
    for item in invitations:
        request = requests.get(item.request_id)
        if request is None or request.status == RequestStatus.WITHDRAWN:
            continue
        views.append(
            InvitationView(
                id=item.pk,
                request=request,
                status=item.status,
                status_label=InvitationStatus(item.status).label,
                answered_at=item.answered_at,
                released=item.released_at is not None,
                # Open, not expired, and (aggregates) not yet counted.
                can_answer=request.status == RequestStatus.OPENED
                and request.expires_at > timezone.now()
                and request.aggregate_result is None,
            )
        )
    return views


def research_preference_for_patient(*, user: User) -> str:
    from consent.models import ResearchPreference

    preference = ResearchPreference.objects.filter(patient__user=user).first()
    return preference.choice if preference else ResearchPreference.Choice.ALWAYS_ASK
