"""Research requests: one function per operation, called by pages, the API and tasks.

The life of a request:

1. a researcher saves a **draft** (any number of times) and **submits** it: an
   ``opened`` ``request`` transaction signed by the organisation, carrying the
   SHA-256 of the ethics approval document and nothing else about it;
2. each hospital's admin **approves** or **declines** (``approved`` /
   ``declined``, signed by the hospital); on approval the hospital invites its
   matching patients (a task), unless they asked never to be asked;
3. a patient **opts in** (an ``access`` transaction signed with her key:
   grantee the request, purpose research, the request's categories, expiring
   with it) or out, and may withdraw later;
4. an admin **releases** the hospital's part: rows (de-identified, encrypted
   for the organisation, hash and totals on the chain) or, for an aggregate
   request, Shamir shares of its counts; when every share holder has summed,
   the hub reconstructs the totals only;
5. the researcher may **withdraw** (before anything is released) or **close**.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date, datetime, time, timedelta

import filetype
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.encoding import canonical_json
from chain.models import TransactionKind
from chain.services import TransactionRejected, transaction_submit
from medportal.research import shamir
from medportal.research.deid import small_cells
from medportal.research.keys import (
    HUB_HOLDER,
    holder_key,
    open_with,
    organisation_key,
    research_store,
    seal_for,
)
from medportal.research.models import (
    AggregateShare,
    AggregateSum,
    Answer,
    Participation,
    ParticipationStatus,
    Release,
    RequestStatus,
    ResearchRequest,
)
from medportal.research.release import (
    RELEASABLE_CATEGORIES,
    SEXES,
    archive_write,
    counts_build,
    part_build,
    patients_matching,
    prefix_is_known,
)
from medportal.tenants.models import Tenant, TenantKind
from records.content import icd10_normalise

logger = logging.getLogger(__name__)

TEXT_LIMITS = {"title": 200, "purpose": 5000, "investigator": 200, "ethics_reference": 100}
# What ``request_save`` takes (forms and the API pass these on as typed).
REQUEST_FIELDS = (
    *TEXT_LIMITS,
    "categories",
    "codes",
    "age_min",
    "age_max",
    "sex",
    "period_from",
    "period_to",
    "answer",
    "k",
    "expires_at",
)
K_DEFAULT, K_MIN, K_MAX = 5, 2, 100
MAX_CODES = 20
MAX_YEARS = 5


def _document_max_bytes() -> int:
    return int(getattr(settings, "MEDPORTAL_RESEARCH_DOCUMENT_MAX_BYTES", 10 * 1024 * 1024))


# --- Who may do what ------------------------------------------------------------------


def _researcher(user: User) -> Tenant:
    tenant = connection.tenant
    if tenant.kind != TenantKind.RESEARCH or not user_has_role(user, (Role.RESEARCHER,)):
        raise PermissionDenied("Only researchers of a research organisation file requests.")
    return tenant


def _hospital_admin(user: User) -> Tenant:
    tenant = connection.tenant
    if tenant.kind != TenantKind.HOSPITAL or not user_has_role(user, (Role.ADMIN,)):
        raise PermissionDenied("Only a hospital's admins answer research requests.")
    return tenant


def _own_request(organisation: Tenant, request: ResearchRequest) -> ResearchRequest:
    if request.organisation_id != organisation.pk:
        raise PermissionDenied("This request belongs to another organisation.")
    return request


# --- Cleaning a request -----------------------------------------------------------------


def _day(value, field: str, errors: dict) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        errors[field] = ["Enter a date as YYYY-MM-DD."]
        return None


def _whole(value, field: str, errors: dict, low: int, high: int) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        errors[field] = ["Enter a whole number."]
        return None
    if not low <= number <= high:
        errors[field] = [f"Enter a number from {low} to {high}."]
        return None
    return number


def _codes(value, errors: dict) -> list[str]:
    if isinstance(value, str):
        value = value.replace(";", ",").replace("\n", ",").split(",")
    elif value is not None and not isinstance(value, (list, tuple)):
        errors["codes"] = ["Give ICD-10 codes as text separated by commas, or a list."]
        return []
    codes: list[str] = []
    unknown: list[str] = []
    for raw in value or []:
        code = icd10_normalise(str(raw))
        if not code:
            continue
        if not prefix_is_known(code):
            unknown.append(str(raw).strip())
        elif code not in codes:
            codes.append(code)
    if unknown:
        errors["codes"] = [f"Not an ICD-10 code or code prefix: {', '.join(unknown[:5])}."]
    elif len(codes) > MAX_CODES:
        errors["codes"] = [f"At most {MAX_CODES} codes."]
    return codes


def request_clean(data: dict, *, complete: bool) -> dict:
    """The request's fields, checked. ``complete`` (submitting) requires every
    field; a draft keeps what is given, each field still checked."""
    errors: dict[str, list[str]] = {}
    clean: dict = {}
    for name, limit in TEXT_LIMITS.items():
        value = str(data.get(name) or "").strip()
        if len(value) > limit:
            errors[name] = [f"At most {limit} characters."]
        elif not value and (complete or name == "title"):
            errors[name] = ["This field is required."]
        clean[name] = value
    categories = data.get("categories") or []
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, (list, tuple)):
        errors["categories"] = ["Give the categories as a list."]
        categories = []
    unknown = [str(c) for c in categories if c not in RELEASABLE_CATEGORIES]
    if unknown:
        errors["categories"] = [
            f"A release cannot carry {', '.join(unknown)}: only coded data is released, "
            "never notes, images or files that may name people."
        ]
    elif complete and not categories:
        errors["categories"] = ["Choose at least one category."]
    chosen = {c for c in categories if isinstance(c, str)}
    clean["categories"] = [c for c in RELEASABLE_CATEGORIES if c in chosen]
    age_min = _whole(data.get("age_min"), "age_min", errors, 0, 120)
    age_max = _whole(data.get("age_max"), "age_max", errors, 0, 120)
    if age_min is not None and age_max is not None and age_min > age_max:
        errors["age_max"] = ["The highest age must not be below the lowest."]
    sex = str(data.get("sex") or "").strip()
    if sex and sex not in SEXES:
        errors["sex"] = [f"Choose one of: {', '.join(SEXES)}, or any."]
    period_from = _day(data.get("period_from"), "period_from", errors)
    period_to = _day(data.get("period_to"), "period_to", errors)
    if period_from and period_to and period_from > period_to:
        errors["period_to"] = ["The period must end after it starts."]
    clean["criteria"] = {
        "codes": _codes(data.get("codes"), errors),
        "age_min": age_min,
        "age_max": age_max,
        "sex": sex,
        "period_from": period_from.isoformat() if period_from else None,
        "period_to": period_to.isoformat() if period_to else None,
    }
    answer = str(data.get("answer") or Answer.ROWS)
    if answer not in Answer.values:
        errors["answer"] = ["Choose de-identified rows or aggregate counts."]
    clean["answer"] = answer
    k = _whole(data.get("k"), "k", errors, K_MIN, K_MAX)
    clean["k"] = K_DEFAULT if k is None else k
    expires = _day(data.get("expires_at"), "expires_at", errors)
    today = timezone.localdate()
    if expires is None and "expires_at" not in errors:
        if complete:
            errors["expires_at"] = ["This field is required."]
        expires = today + timedelta(days=365)
    elif expires is not None and expires <= today:
        errors["expires_at"] = ["The expiry must be after today."]
    elif expires is not None and expires > today + timedelta(days=366 * MAX_YEARS):
        errors["expires_at"] = [f"At most {MAX_YEARS} years from today."]
    if expires is not None:
        clean["expires_at"] = datetime.combine(
            expires, time(23, 59, 59), timezone.get_current_timezone()
        )
    if errors:
        raise ValidationError(errors)
    return clean


def ethics_document_store(upload) -> tuple[str, str]:
    """Keep the approval document (a PDF, checked by its content) in the hub's
    store; returns (sha256, file name)."""
    data = upload.read(_document_max_bytes() + 1)
    if len(data) > _document_max_bytes():
        raise ValidationError(
            {"ethics_document": [f"At most {_document_max_bytes() // (1024 * 1024)} MB."]}
        )
    kind = filetype.guess(data)
    if kind is None or kind.mime != "application/pdf":
        raise ValidationError({"ethics_document": ["The approval document must be a PDF."]})
    name = (getattr(upload, "name", "") or "approval.pdf").rsplit("/", 1)[-1][:200]
    return research_store().put(data), name


# --- The researcher's side ----------------------------------------------------------------


@transaction.atomic
def request_save(
    *, user: User, data: dict, document=None, request: ResearchRequest | None = None
) -> ResearchRequest:
    """Create or edit a draft. Nothing leaves the organisation until it is submitted."""
    organisation = _researcher(user)
    if request is not None:
        request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
        _own_request(organisation, request)
        if request.status != RequestStatus.DRAFT:
            raise ValidationError({"request": ["Only a draft can be edited."]})
    clean = request_clean(data, complete=False)
    if request is None:
        request = ResearchRequest(
            organisation=organisation,
            created_by_id=user.pk,
            created_by_name=user.display_name,
        )
    for field, value in clean.items():
        setattr(request, field, value)
    if document is not None:
        request.ethics_document_sha256, request.ethics_document_name = ethics_document_store(
            document
        )
    request.save()
    return request


def _request_tx(tenant: Tenant, request: ResearchRequest, status: str, **extra):
    return transaction_submit(
        tenant=tenant,
        kind=TransactionKind.REQUEST,
        payload={
            "request": str(request.id),
            "organisation": request.organisation.slug,
            "status": status,
            **extra,
        },
    )


@transaction.atomic
def request_submit(*, user: User, request: ResearchRequest) -> ResearchRequest:
    """Publish a draft: an ``opened`` transaction; every hospital's admins are told."""
    organisation = _researcher(user)
    request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
    _own_request(organisation, request)
    if request.status != RequestStatus.DRAFT:
        raise ValidationError({"request": ["This request was submitted already."]})
    data = {
        **{name: getattr(request, name) for name in TEXT_LIMITS},
        **(request.criteria or {}),
        "categories": request.categories,
        "answer": request.answer,
        "k": request.k,
        "expires_at": timezone.localtime(request.expires_at).date() if request.expires_at else None,
    }
    request_clean(data, complete=True)
    if not request.ethics_document_sha256:
        raise ValidationError({"ethics_document": ["Attach the ethics approval (PDF)."]})
    pending = _request_tx(
        organisation, request, "opened", document_sha256=request.ethics_document_sha256
    )
    request.status = RequestStatus.OPENED
    request.submitted_at = timezone.now()
    request.tx_hash = pending.hash
    request.save(update_fields=["status", "submitted_at", "tx_hash", "updated_at"])
    _tell_hospital_admins(
        f"{organisation.name} filed the research request “{request.title}”. "
        "Review it under Research requests."
    )
    return request


@transaction.atomic
def request_withdraw(*, user: User, request: ResearchRequest) -> ResearchRequest:
    """Withdraw an open request before any hospital released anything."""
    organisation = _researcher(user)
    request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
    _own_request(organisation, request)
    if request.status == RequestStatus.DRAFT:
        request.delete()
        return request
    if request.status != RequestStatus.OPENED:
        raise ValidationError({"request": ["Only an open request can be withdrawn."]})
    if request.releases.exists() or request.aggregate_shares.exists():
        raise ValidationError(
            {"request": ["A hospital has released data already: close the request instead."]}
        )
    return _request_end(organisation, request, RequestStatus.WITHDRAWN)


@transaction.atomic
def request_close(*, user: User, request: ResearchRequest) -> ResearchRequest:
    """Close an open request: no more approvals or releases."""
    organisation = _researcher(user)
    request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
    _own_request(organisation, request)
    if request.status != RequestStatus.OPENED:
        raise ValidationError({"request": ["Only an open request can be closed."]})
    return _request_end(organisation, request, RequestStatus.CLOSED)


def _request_end(organisation: Tenant, request: ResearchRequest, status: str) -> ResearchRequest:
    _request_tx(organisation, request, status)
    request.status = status
    request.save(update_fields=["status", "updated_at"])
    return request


# --- The hospital's side -------------------------------------------------------------------


def _open_for_answers(request: ResearchRequest) -> None:
    if request.status != RequestStatus.OPENED:
        raise ValidationError({"request": ["This request is no longer open."]})
    if request.expires_at <= timezone.now():
        raise ValidationError({"request": ["This request has expired."]})


@transaction.atomic
def participation_decide(
    *, admin: User, request: ResearchRequest, approve: bool, reason: str
) -> Participation:
    """A hospital takes part in a request, or declines, with a reason. Approving
    invites the hospital's matching patients (a task, after commit)."""
    from medportal.research.tasks import invitations_make_task

    hospital = _hospital_admin(admin)
    request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
    _open_for_answers(request)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["Give a reason: the organisation will see it."]})
    if len(reason) > 2000:
        raise ValidationError({"reason": ["At most 2000 characters."]})
    existing = Participation.objects.filter(request=request, hospital=hospital).first()
    if existing is not None:
        raise ValidationError(
            {"request": [f"This hospital has {existing.get_status_display().lower()} it already."]}
        )
    if approve and request.aggregate_parties:
        raise ValidationError(
            {"request": ["The secure count has started: no hospital can join it now."]}
        )
    status = ParticipationStatus.APPROVED if approve else ParticipationStatus.DECLINED
    pending = _request_tx(hospital, request, status, hospital=hospital.slug)
    participation = Participation.objects.create(
        request=request,
        hospital=hospital,
        status=status,
        reason=reason,
        decided_by_name=admin.display_name,
        decided_at=timezone.now(),
        tx_hash=pending.hash,
    )
    _tell_researchers(
        request,
        f"{hospital.name} {'approved' if approve else 'declined'} “{request.title}”.",
    )
    if approve:
        request_id = str(request.id)
        transaction.on_commit(
            lambda: invitations_make_task.apply_async(
                args=[request_id], headers={"_schema_name": hospital.schema_name}
            )
        )
    return participation


def invitations_make(*, request: ResearchRequest) -> int:
    """In a hospital that approved: invite every matching patient with an account
    who has not asked never to be asked. Returns the invitations made."""
    from consent.models import ResearchInvitation, ResearchPreference
    from consent.notifications import patient_notify

    hospital = connection.tenant
    if not Participation.objects.filter(
        request=request, hospital=hospital, status=ParticipationStatus.APPROVED
    ).exists():
        return 0
    never = set(
        ResearchPreference.objects.filter(choice=ResearchPreference.Choice.NEVER_ASK).values_list(
            "patient_id", flat=True
        )
    )
    made = 0
    for patient in patients_matching(request):
        if patient.user_id is None or patient.pk in never:
            continue
        _, created = ResearchInvitation.objects.get_or_create(
            patient=patient, request_id=request.id
        )
        if created:
            made += 1
            patient_notify(
                patient_pseudonyms=patient.pseudonyms,
                kind="research_invitation",
                text=(
                    f"{request.organisation.name} asks to use your records for research "
                    f"(“{request.title}”). You decide: see Research."
                ),
            )
    return made


def release_make(*, admin: User, request: ResearchRequest) -> Release | None:
    """Release this hospital's part: rows for a rows request (returns the
    :class:`Release`), Shamir shares for an aggregate request (returns None;
    the totals appear when every share holder has summed).

    The slow part (reading through the policy, de-identifying, encrypting)
    runs outside any lock: the request row is locked only to check again and
    record the release, so other hospitals and the researcher never wait
    behind a large build."""
    hospital = _hospital_admin(admin)
    _release_allowed(hospital, request)
    if request.is_aggregate:
        return _aggregate_release(admin, hospital, request)
    return _rows_release(admin, hospital, request)


def _release_minutes() -> int:
    return int(getattr(settings, "MEDPORTAL_RESEARCH_RELEASE_MINUTES", 60))


def release_in_progress(participation: Participation | None) -> bool:
    """A release of this hospital is being prepared (and has not been given up:
    after ``MEDPORTAL_RESEARCH_RELEASE_MINUTES`` a lost task may be started again)."""
    started = participation.release_started_at if participation else None
    return bool(started and started > timezone.now() - timedelta(minutes=_release_minutes()))


@transaction.atomic
def release_start(*, admin: User, request: ResearchRequest) -> Participation:
    """Start this hospital's release in the background (pages and the API): the
    checks are made now, the work (:func:`release_make`) by a task in the
    hospital's schema; the admin and the organisation are told when it is done."""
    from medportal.research.tasks import release_task

    hospital = _hospital_admin(admin)
    request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
    participation = _release_allowed(hospital, request)
    if (
        request.is_aggregate
        and AggregateShare.objects.filter(request=request, sender=hospital.slug).exists()
    ):
        raise ValidationError({"request": ["This hospital has sent its shares already."]})
    if release_in_progress(participation):
        raise ValidationError({"request": ["A release is being prepared already."]})
    participation.release_started_at = timezone.now()
    participation.save(update_fields=["release_started_at"])
    request_id, admin_id = str(request.id), admin.pk
    transaction.on_commit(
        lambda: release_task.apply_async(
            args=[request_id, admin_id], headers={"_schema_name": hospital.schema_name}
        )
    )
    return participation


def release_run(*, request_id: str, admin_id: int) -> Release | None:
    """The task's work, in the hospital's schema: make the release, tell the
    admin how it went, and clear the "being prepared" mark whatever happens."""
    from consent.notifications import notifications_create

    hospital = connection.tenant
    request = ResearchRequest.objects.filter(pk=request_id).first()
    admin = User.objects.filter(pk=admin_id).first()
    try:
        if request is None or admin is None:
            return None
        try:
            release = release_make(admin=admin, request=request)
        except (ValidationError, PermissionDenied, TransactionRejected) as error:
            reasons = "; ".join(getattr(error, "messages", None) or [str(error)])
            text = f"The release of “{request.title}” was not made: {reasons}"
            release = None
        else:
            text = (
                f"Your shares of the counts for “{request.title}” were sent."
                if request.is_aggregate
                else f"Released “{request.title}”: {release.rows} rows, "
                f"{release.suppressed} suppressed."
            )
        notifications_create(recipient_ids=[admin.pk], kind="research_status", text=text)
        return release
    finally:
        Participation.objects.filter(request_id=request_id, hospital=hospital).update(
            release_started_at=None
        )


def _release_allowed(hospital: Tenant, request: ResearchRequest) -> Participation:
    _open_for_answers(request)
    participation = Participation.objects.filter(request=request, hospital=hospital).first()
    if participation is None or participation.status == ParticipationStatus.DECLINED:
        raise ValidationError({"request": ["Approve the request before releasing data."]})
    return participation


def _released_here(request: ResearchRequest) -> set:
    from consent.models import ResearchInvitation

    return set(
        ResearchInvitation.objects.filter(
            request_id=request.id, released_at__isnull=False
        ).values_list("patient_id", flat=True)
    )


def _rows_release(admin, hospital, request) -> Release:
    """A release carries the patients no earlier release of this hospital
    carried: a second release adds those who opted in since (a withdrawal is
    simply no active opt-in), never the same rows twice."""
    from consent.models import ResearchInvitation

    released_before = _released_here(request)
    part = part_build(request, exclude=released_before)
    archive = archive_write(part, request)
    sealed = seal_for(
        organisation_key(request.organisation.slug).public_key(),
        archive,
        request=str(request.id),
        hospital=hospital.slug,
    )
    sha256 = research_store().put(sealed)
    with transaction.atomic():
        request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
        participation = _release_allowed(hospital, request)
        if _released_here(request) != released_before:
            raise ValidationError(
                {"request": ["Another release was made meanwhile: release again for the rest."]}
            )
        pending = _request_tx(
            hospital,
            request,
            "released",
            hospital=hospital.slug,
            dataset_sha256=sha256,
            rows=len(part.rows),
            suppressed=part.suppressed,
        )
        release = Release.objects.create(
            request=request,
            hospital=hospital,
            sha256=sha256,
            size=len(sealed),
            rows=len(part.rows),
            suppressed=part.suppressed,
            released_by_name=admin.display_name,
            tx_hash=pending.hash,
        )
        participation.status = ParticipationStatus.RELEASED
        participation.save(update_fields=["status"])
        ResearchInvitation.objects.filter(
            request_id=request.id, patient_id__in=part.patients, released_at__isnull=True
        ).update(released_at=timezone.now())
        _tell_researchers(
            request,
            f"{hospital.name} released its part of “{request.title}”: "
            f"{release.rows} rows, {release.suppressed} suppressed.",
        )
    return release


# --- Aggregates: a secure sum over Shamir shares --------------------------------------------


def _holders(request: ResearchRequest) -> list[str]:
    """Share holders in x order: the hospitals taking part, then the hub."""
    return [*request.aggregate_parties, HUB_HOLDER]


def _holder_public(holder: str):
    return holder_key(holder).public_key()


def _aggregate_parties_fix(hospital: Tenant, request: ResearchRequest) -> ResearchRequest:
    """Fix the share holders at the first release (under the row lock) and check
    that this hospital is one of them and has not sent its shares yet."""
    with transaction.atomic():
        request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
        _release_allowed(hospital, request)
        if not request.aggregate_parties:
            request.aggregate_parties = sorted(
                Participation.objects.filter(request=request)
                .exclude(status=ParticipationStatus.DECLINED)
                .values_list("hospital__slug", flat=True)
            )
            request.save(update_fields=["aggregate_parties", "updated_at"])
    if hospital.slug not in request.aggregate_parties:
        raise ValidationError({"request": ["This hospital joined after the secure count started."]})
    if AggregateShare.objects.filter(request=request, sender=hospital.slug).exists():
        raise ValidationError({"request": ["This hospital has sent its shares already."]})
    return request


def _aggregate_release(admin, hospital, request) -> None:
    from medportal.research.tasks import aggregate_advance_task

    request = _aggregate_parties_fix(hospital, request)
    counts = counts_build(request)
    holders = _holders(request)
    # Every holder is needed to reconstruct (threshold = number of holders): no
    # coalition short of all of them learns anything about this hospital's counts.
    shares = shamir.split_counts(counts, parties=len(holders), threshold=len(holders))
    del counts
    sealed = [
        seal_for(
            _holder_public(holder),
            _share_bytes(share),
            request=str(request.id),
            sender=hospital.slug,
            holder=holder,
        )
        for holder, share in zip(holders, shares, strict=True)
    ]
    with transaction.atomic():
        request = ResearchRequest.objects.select_for_update().get(pk=request.pk)
        participation = _release_allowed(hospital, request)
        if AggregateShare.objects.filter(request=request, sender=hospital.slug).exists():
            raise ValidationError({"request": ["This hospital has sent its shares already."]})
        AggregateShare.objects.bulk_create(
            AggregateShare(request=request, sender=hospital.slug, holder=holder, sealed=blob)
            for holder, blob in zip(holders, sealed, strict=True)
        )
        # On the chain: that this hospital took part, and no number of its own.
        pending = _request_tx(hospital, request, "released", hospital=hospital.slug)
        participation.status = ParticipationStatus.RELEASED
        participation.tx_hash = pending.hash
        participation.save(update_fields=["status", "tx_hash"])
        _tell_researchers(request, f"{hospital.name} sent its shares for “{request.title}”.")
        request_id = str(request.id)
        transaction.on_commit(lambda: aggregate_advance_task.delay(request_id))
    return None


def _share_bytes(share: dict[str, int]) -> bytes:
    return canonical_json({cell: str(value) for cell, value in share.items()})


def _share_values(raw: bytes) -> dict[str, int]:
    return {cell: int(value) for cell, value in json.loads(raw).items()}


def aggregate_sum_for_holder(*, request: ResearchRequest, holder: str) -> AggregateSum:
    """One holder's step: open the shares sent to it (its key only) and publish
    their sum per cell. Run as the holder, in its schema (the hub's for the hub)."""
    holders = _holders(request)
    x = holders.index(holder) + 1
    received = [
        _share_values(
            open_with(
                holder_key(holder),
                bytes(item.sealed),
                request=str(request.id),
                sender=item.sender,
                holder=holder,
            )
        )
        for item in AggregateShare.objects.filter(request=request, holder=holder).order_by("sender")
    ]
    sums = shamir.sum_shares(received)
    made, _ = AggregateSum.objects.get_or_create(
        request=request,
        holder=holder,
        defaults={"x": x, "sums": {cell: str(value) for cell, value in sums.items()}},
    )
    return made


@transaction.atomic
def aggregate_advance(*, request_id: str) -> bool:
    """Move a secure count on: once every hospital has sent its shares, each
    holder sums what it received; once every sum is in, the totals are
    reconstructed, cells below k shown as "< k", and the request closes with
    the organisation's ``closed`` transaction carrying the result's hash. True
    when finished."""
    request = ResearchRequest.objects.select_for_update().get(pk=request_id)
    if not request.is_aggregate or request.aggregate_result is not None:
        return request.aggregate_result is not None
    senders = set(AggregateShare.objects.filter(request=request).values_list("sender", flat=True))
    if not request.aggregate_parties or senders != set(request.aggregate_parties):
        return False
    for holder in _holders(request):
        if AggregateSum.objects.filter(request=request, holder=holder).exists():
            continue
        if holder == HUB_HOLDER:
            aggregate_sum_for_holder(request=request, holder=holder)
        else:
            with tenant_context(Tenant.objects.get(slug=holder)):
                aggregate_sum_for_holder(request=request, holder=holder)
    sums = {
        item.x: {cell: int(value) for cell, value in item.sums.items()}
        for item in AggregateSum.objects.filter(request=request)
    }
    totals = shamir.combine_counts(sums)
    result = {
        "cells": small_cells(totals, request.k),
        "k": request.k,
        "hospitals": list(request.aggregate_parties),
    }
    document = canonical_json(result)
    request.aggregate_result = result
    request.aggregate_sha256 = hashlib.sha256(document).hexdigest()
    # Counted once: the request closes, with the result's hash on the chain.
    request.status = RequestStatus.CLOSED
    request.save(update_fields=["aggregate_result", "aggregate_sha256", "status", "updated_at"])
    _request_tx(request.organisation, request, "closed", dataset_sha256=request.aggregate_sha256)
    _tell_researchers(request, f"The secure count for “{request.title}” is ready.")
    return True


# --- The patient's side ----------------------------------------------------------------------


def _patient(user: User):
    from records.models import Patient

    if connection.tenant.kind != TenantKind.HOSPITAL or not user_has_role(user, (Role.PATIENT,)):
        raise PermissionDenied("Only patients answer research requests.")
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        raise PermissionDenied("This account has no patient profile.")
    return patient


@transaction.atomic
def research_answer(*, user: User, password: str, request_id, take_part: bool) -> str:
    """A patient's answer to a request she was invited to: opting in signs an
    ``access`` grant to the request (purpose research, its categories, expiring
    with it); opting out before that needs no signature; withdrawing signs a
    revocation. The answer is recorded at every hospital she is linked at.
    Returns the new status."""
    from consent.grants import consent_research
    from consent.models import InvitationStatus, ResearchInvitation

    patient = _patient(user)
    invitation = (
        ResearchInvitation.objects.select_for_update()
        .filter(patient=patient, request_id=request_id)
        .first()
    )
    if invitation is None:
        raise PermissionDenied("You were not asked about this request.")
    request = ResearchRequest.objects.filter(pk=request_id).select_related("organisation").first()
    if request is None:
        raise PermissionDenied("You were not asked about this request.")
    if take_part:
        _open_for_answers(request)
        if invitation.status == InvitationStatus.OPTED_IN:
            raise ValidationError({"request": ["You take part already."]})
        pending = consent_research(
            user=user,
            password=password,
            request_id=str(request.id),
            categories=request.categories,
            expires_at=request.expires_at,
        )
        status, tx_hash = InvitationStatus.OPTED_IN, pending.hash
    elif invitation.status == InvitationStatus.OPTED_IN:
        pending = consent_research(
            user=user, password=password, request_id=str(request.id), categories=[]
        )
        status, tx_hash = InvitationStatus.WITHDRAWN, pending.hash
    else:
        if invitation.status == InvitationStatus.OPTED_OUT:
            raise ValidationError({"request": ["You said no already."]})
        status, tx_hash = InvitationStatus.OPTED_OUT, ""
    _invitation_answer_everywhere(patient, request.id, status, tx_hash)
    return status


def _invitation_answer_everywhere(patient, request_id, status: str, tx_hash: str) -> None:
    from consent.models import ResearchInvitation
    from consent.notifications import patient_hospitals

    pseudonyms, hospitals = patient_hospitals(patient_pseudonyms=patient.pseudonyms)
    now = timezone.now()
    for hospital in hospitals:
        with tenant_context(hospital):
            ResearchInvitation.objects.filter(
                patient__pseudonym__in=pseudonyms, request_id=request_id
            ).update(status=status, answered_at=now, tx_hash=tx_hash)


def research_preference_set(*, user: User, choice: str):
    """ "Always ask me" (the default) or "never ask me" about research requests."""
    from consent.models import ResearchPreference

    patient = _patient(user)
    if choice not in ResearchPreference.Choice.values:
        raise ValidationError({"choice": ["Choose always ask me or never ask me."]})
    preference, _ = ResearchPreference.objects.update_or_create(
        patient=patient, defaults={"choice": choice}
    )
    return preference


# --- Telling people ------------------------------------------------------------------------------


def _tell_hospital_admins(text: str) -> None:
    from consent.notifications import notifications_create

    for hospital in Tenant.objects.filter(kind=TenantKind.HOSPITAL):
        with tenant_context(hospital):
            admins = User.objects.filter(role=Role.ADMIN, is_active=True).values_list(
                "pk", flat=True
            )
            notifications_create(recipient_ids=admins, kind="research_status", text=text)


def _tell_researchers(request: ResearchRequest, text: str) -> None:
    from consent.notifications import notifications_create

    with tenant_context(request.organisation):
        researchers = User.objects.filter(role=Role.RESEARCHER, is_active=True).values_list(
            "pk", flat=True
        )
        notifications_create(recipient_ids=researchers, kind="research_status", text=text)


def dataset_open(*, user: User, release: Release) -> bytes:
    """The release's archive, decrypted, for a researcher of the requesting
    organisation only (403 for anyone else). Checked against its hash first."""
    organisation = _researcher(user)
    if release.request.organisation_id != organisation.pk:
        raise PermissionDenied("This dataset was released to another organisation.")
    sealed = research_store().get(release.sha256)
    return open_with(
        organisation_key(organisation.slug),
        sealed,
        request=str(release.request_id),
        hospital=release.hospital.slug,
    )
