"""Sharing and access requests: what the patient's "Sharing" page and the
doctors' "Request access" do, for pages and API alike.

Writes (services): ``sharing_grant`` / ``sharing_revoke`` check the grantee
against the hub's hospitals and practitioner directory and hand over to
``consent.grants`` (which signs with the patient's key);
``access_request_create`` (a doctor asks) and ``access_request_answer`` (the
patient approves in part or whole, or declines: an approval is a grant to the
requesting doctor).

Reads (selectors): the patient's current grants in plain words, the receipt of
a consent change, the directory search, and the requests a patient or a doctor
may see. A patient sees requests for every pseudonym they have (a linked
patient has one pseudonym at every linked hospital, so a request made at one
hospital is answered at any of them). Anything else is "not found".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.encoding import format_time
from chain.models import PendingTransaction, Transaction, TransactionKind
from consent.grants import PURPOSES, categories_expand, consent_grant, consent_revoke
from consent.notifications import notifications_create, patient_notify
from consent.policy import Grant, grants_current
from medportal.exchange.models import AccessRequest, Practitioner
from medportal.tenants.models import Tenant, TenantKind
from records.categories import CATEGORY_LEVEL, Category, Level
from records.keys import practitioner_pseudonym
from records.models import Patient
from records.selectors import patient_for_account

PURPOSE_LABELS = {
    "treatment": "Treatment",
    "second_opinion": "A second opinion",
    "research": "Research",
}
LEVEL_EXPLANATIONS = {
    Level.NORMAL: "Everyday medical facts: visits, diagnoses, medicines, allergies, "
    "vital signs, tests, scans and procedures.",
    Level.RESTRICTED: "Doctors' written clinical notes.",
    Level.VERY_RESTRICTED: "Mental health, sexual health, genetics and substance use: "
    "only shared when you choose them one by one or the whole level.",
}
REASON_MAX_LENGTH = 500
DIRECTORY_LIMIT = 20


# --- Plain words ------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryGroup:
    level: str
    label: str
    categories: list[tuple[str, str]]  # (value, label)


def categories_grouped(categories: Iterable[str] | None = None) -> list[CategoryGroup]:
    """Categories by sensitivity level, in table order (all of them when None)."""
    wanted = set(Category.values if categories is None else categories)
    groups = []
    for level in Level:
        chosen = [
            (category.value, category.label)
            for category in Category
            if CATEGORY_LEVEL[category.value] == level.value and category.value in wanted
        ]
        if chosen:
            groups.append(CategoryGroup(level.value, level.label, chosen))
    return groups


@dataclass(frozen=True)
class Grantee:
    type: str
    id: str
    name: str
    hospital_name: str

    @property
    def label(self) -> str:
        if self.type == "tenant":
            return f"All doctors at {self.name}"
        return f"{self.name}, {self.hospital_name}" if self.hospital_name else self.name


def grantees_describe(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Grantee]:
    """(type, id) → who that is, from the hub's hospitals and directory (two queries)."""
    pairs = set(pairs)
    slugs = {grantee_id for kind, grantee_id in pairs if kind == "tenant"}
    pseudonyms = {grantee_id for kind, grantee_id in pairs if kind == "practitioner"}
    with schema_context(get_public_schema_name()):
        hospitals = dict(Tenant.objects.filter(slug__in=slugs).values_list("slug", "name"))
        doctors = {
            row.pseudonym: row
            for row in Practitioner.objects.filter(pseudonym__in=pseudonyms).select_related(
                "tenant"
            )
        }
    described = {}
    for kind, grantee_id in pairs:
        if kind == "tenant":
            name = hospitals.get(grantee_id, grantee_id)
            described[(kind, grantee_id)] = Grantee(kind, grantee_id, name, name)
        else:
            doctor = doctors.get(grantee_id)
            described[(kind, grantee_id)] = Grantee(
                kind,
                grantee_id,
                doctor.display_name if doctor else "A doctor no longer listed",
                doctor.tenant.name if doctor else "",
            )
    return described


@dataclass(frozen=True)
class GrantRow:
    grant: Grant
    grantee: Grantee
    groups: list[CategoryGroup]
    is_expired: bool

    @property
    def purpose_label(self) -> str:
        return PURPOSE_LABELS.get(self.grant.purpose, self.grant.purpose)


# --- Patients' pseudonyms -----------------------------------------------------------


def _pseudonyms_of(patient: Patient) -> frozenset[str]:
    """Every pseudonym of the patient: theirs here (current and former) and
    those the chain links to them at other hospitals."""
    from medportal.exchange.services import patient_pseudonyms

    known = set(patient.pseudonyms)
    try:
        known |= patient_pseudonyms(
            requester_slug=connection.tenant.slug, pseudonym=patient.pseudonym
        )
    except PermissionDenied:
        pass  # registered a moment ago and not on the chain yet: only the local ones
    return frozenset(known)


# --- Grants: selectors ------------------------------------------------------------


def grants_for_patient(*, user: User, now: datetime | None = None) -> list[GrantRow]:
    """The signed-in patient's grants that still name categories (a revoked grant
    is gone), with expired ones marked; 404 for anyone but a patient."""
    patient = patient_for_account(user=user)
    now = now or timezone.now()
    grants = [
        grant
        for grant in grants_current(patient_pseudonyms=_pseudonyms_of(patient))
        if grant.categories and grant.purpose in PURPOSES and grant.grantee_type != "request"
    ]
    described = grantees_describe((grant.grantee_type, grant.grantee_id) for grant in grants)
    rows = [
        GrantRow(
            grant=grant,
            grantee=described[(grant.grantee_type, grant.grantee_id)],
            groups=categories_grouped(grant.categories),
            is_expired=not grant.is_active(now),
        )
        for grant in grants
    ]
    return sorted(rows, key=lambda row: (row.is_expired, row.grantee.label.casefold()))


def hospitals_list() -> list[Tenant]:
    with schema_context(get_public_schema_name()):
        return list(Tenant.objects.filter(kind=TenantKind.HOSPITAL).order_by("name"))


def practitioner_search(*, query: str) -> list[Practitioner]:
    """Doctors at any hospital whose name, or a word of it, starts with ``query``
    (case-insensitive); at most 20. An empty query finds nobody."""
    query = " ".join((query or "").split())[:100]
    if not query:
        return []
    with schema_context(get_public_schema_name()):
        return list(
            Practitioner.objects.filter(
                Q(display_name__istartswith=query) | Q(display_name__icontains=f" {query}"),
                role=Role.DOCTOR,
                is_active=True,
                tenant__kind=TenantKind.HOSPITAL,
            )
            .select_related("tenant")
            .order_by("display_name", "tenant__name")[:DIRECTORY_LIMIT]
        )


def consent_receipt_for_patient(*, user: User, tx_hash: str) -> dict:
    """The signed ``access`` transaction with hash ``tx_hash``, with its block
    height and hash once sealed; 404 unless it is about the signed-in patient."""
    patient = patient_for_account(user=user)
    query = Q(
        hash=tx_hash,
        kind=TransactionKind.ACCESS,
        payload__patient__in=list(_pseudonyms_of(patient)),
    )
    with schema_context(get_public_schema_name()):
        sealed = Transaction.objects.filter(query).select_related("block").first()
        found = sealed or PendingTransaction.objects.filter(query).first()
        if found is None:
            raise Http404("No such receipt.")
        return {
            "kind": found.kind,
            "author": found.author,
            "payload": found.payload,
            "timestamp": format_time(found.timestamp),
            "signature": found.signature,
            "hash": found.hash,
            "block_height": sealed.block.height if sealed else None,
            "block_hash": sealed.block.hash if sealed else None,
        }


# --- Grants: services ---------------------------------------------------------------


def _grantee_check(grantee_type: str, grantee_id: str) -> None:
    with schema_context(get_public_schema_name()):
        if grantee_type == "tenant":
            exists = Tenant.objects.filter(slug=grantee_id, kind=TenantKind.HOSPITAL).exists()
        elif grantee_type == "practitioner":
            exists = Practitioner.objects.filter(pseudonym=grantee_id, is_active=True).exists()
        else:
            raise ValidationError({"grantee_type": ["Choose a doctor or a hospital."]})
    if not exists:
        raise ValidationError({"grantee_id": ["Choose a hospital or a doctor from the list."]})


def sharing_grant(
    *,
    user: User,
    password: str,
    grantee_type: str,
    grantee_id: str,
    categories: Iterable[str],
    purpose: str,
    expires_at: datetime | None = None,
) -> PendingTransaction:
    """A grant from the Sharing page or the API: to a hospital the hub knows or a
    doctor in the directory; ``consent_grant`` checks the rest and signs."""
    if not user_has_role(user, (Role.PATIENT,)):
        raise PermissionDenied("Only patients grant access to their records.")
    _grantee_check(grantee_type, grantee_id)
    return consent_grant(
        user=user,
        password=password,
        grantee_type=grantee_type,
        grantee_id=grantee_id,
        categories=categories,
        purpose=purpose,
        expires_at=expires_at,
    )


def sharing_revoke(
    *, user: User, password: str, grantee_type: str, grantee_id: str, purpose: str
) -> PendingTransaction:
    """Withdraw one of the signed-in patient's current grants (400 if there is none)."""
    current = {
        (row.grant.grantee_type, row.grant.grantee_id, row.grant.purpose)
        for row in grants_for_patient(user=user)
    }
    if (grantee_type, grantee_id, purpose) not in current:
        raise ValidationError({"grant": ["There is no such grant to revoke."]})
    return consent_revoke(
        user=user,
        password=password,
        grantee_type=grantee_type,
        grantee_id=grantee_id,
        purpose=purpose,
    )


# --- Access requests: selectors -----------------------------------------------------


def access_requests_for_patient(*, user: User, pending_only: bool = False) -> list[AccessRequest]:
    """Requests for any of the signed-in patient's pseudonyms, newest first."""
    pseudonyms = list(_pseudonyms_of(patient_for_account(user=user)))
    with schema_context(get_public_schema_name()):
        requests = AccessRequest.objects.filter(patient_pseudonym__in=pseudonyms).select_related(
            "requester_tenant"
        )
        if pending_only:
            requests = requests.filter(status=AccessRequest.Status.PENDING)
        return list(requests.order_by("-created_at"))


def _my_practitioner_pseudonym(user: User) -> str:
    if not user_has_role(user, (Role.DOCTOR,)):
        raise Http404("No such page.")
    return practitioner_pseudonym(tenant_slug=connection.tenant.slug, user_id=user.pk)


def access_requests_for_practitioner(*, user: User) -> list[AccessRequest]:
    """The signed-in doctor's own requests, newest first; 404 for anyone else."""
    pseudonym = _my_practitioner_pseudonym(user)
    with schema_context(get_public_schema_name()):
        return list(
            AccessRequest.objects.filter(practitioner_pseudonym=pseudonym)
            .select_related("requester_tenant")
            .order_by("-created_at")
        )


def access_requests_unseen_count(*, user: User) -> int:
    """Answers to the doctor's requests they have not seen yet (0 for others)."""
    if not user_has_role(user, (Role.DOCTOR,)):
        return 0
    pseudonym = _my_practitioner_pseudonym(user)
    with schema_context(get_public_schema_name()):
        return (
            AccessRequest.objects.filter(
                practitioner_pseudonym=pseudonym, answer_seen_at__isnull=True
            )
            .exclude(status=AccessRequest.Status.PENDING)
            .count()
        )


# --- Access requests: services --------------------------------------------------------


def _reason_clean(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise ValidationError({"reason": ["Say why you need access."]})
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationError({"reason": [f"At most {REASON_MAX_LENGTH} characters."]})
    return reason


@transaction.atomic
def access_request_create(
    *, user: User, patient: Patient, categories: Iterable[str], purpose: str, reason: str
) -> AccessRequest:
    """A doctor of this hospital asks ``patient`` (a patient of this hospital,
    from ``patient_get_for_user``) for access to ``categories``."""
    if not user_has_role(user, (Role.DOCTOR,)):
        raise PermissionDenied("Only doctors request access.")
    errors: dict[str, list[str]] = {}
    chosen: list[str] = []
    try:
        chosen = categories_expand(categories)
        if not chosen:
            errors["categories"] = ["Choose at least one category."]
    except ValidationError as error:
        errors.update(error.message_dict)
    if purpose not in PURPOSES:
        errors["purpose"] = [f"Choose one of: {', '.join(PURPOSES)}."]
    try:
        reason = _reason_clean(reason)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    tenant = connection.tenant
    with schema_context(get_public_schema_name()):
        try:
            with transaction.atomic():
                created = AccessRequest.objects.create(
                    patient_pseudonym=patient.pseudonym,
                    requester_tenant=tenant,
                    requester_patient_id=patient.id,
                    practitioner_pseudonym=practitioner_pseudonym(
                        tenant_slug=tenant.slug, user_id=user.pk
                    ),
                    practitioner_name=user.display_name,
                    categories=chosen,
                    purpose=purpose,
                    reason=reason,
                )
        except IntegrityError:
            raise ValidationError(
                {"patient": ["You already have a request waiting for this patient's answer."]}
            ) from None
    # The patient hears of it at every hospital where they hold an account.
    patient_notify(
        patient_pseudonyms=_pseudonyms_of(patient),
        kind="access_request",
        text=(
            f"{user.display_name} at {tenant.name} asks to read some of your records. "
            "Answer on your Sharing page."
        ),
    )
    return created


def _requesting_doctor_ids(request: AccessRequest) -> list[int]:
    """The requesting doctor's user id at their hospital (requests keep only the
    practitioner pseudonym, which is an HMAC of the user id)."""
    slug = request.requester_tenant.slug
    return [
        user_id
        for user_id in User.objects.filter(role=Role.DOCTOR).values_list("pk", flat=True)
        if practitioner_pseudonym(tenant_slug=slug, user_id=user_id)
        == request.practitioner_pseudonym
    ]


@transaction.atomic
def access_request_answer(
    *,
    user: User,
    request_id: uuid.UUID | str,
    approve_categories: Iterable[str] | None,
    password: str = "",
) -> AccessRequest:
    """The patient answers a request for one of their pseudonyms: ``None``
    declines; otherwise the named categories (or whole levels), all within the
    request, are granted to the requesting doctor for the request's purpose.

    A grant the doctor already holds for that purpose is widened, not replaced
    (the latest ``access`` transaction wins, so it carries both)."""
    patient = patient_for_account(user=user)
    pseudonyms = _pseudonyms_of(patient)
    with schema_context(get_public_schema_name()):
        request = (
            AccessRequest.objects.select_for_update()
            .filter(pk=request_id, patient_pseudonym__in=list(pseudonyms))
            .first()
        )
    if request is None:
        raise Http404("No such request.")
    if request.status != AccessRequest.Status.PENDING:
        raise ValidationError({"request": ["This request has already been answered."]})
    if approve_categories is None:
        request.status = AccessRequest.Status.DECLINED
    else:
        approved = categories_expand(approve_categories)
        if not approved:
            raise ValidationError({"categories": ["Choose what to share, or decline."]})
        if not set(approved) <= set(request.categories):
            raise ValidationError({"categories": ["Only the categories the doctor asked for."]})
        held: frozenset[str] = frozenset()
        expires_at = None
        for grant in grants_current(patient_pseudonyms=pseudonyms):
            if (
                grant.grantee_type == "practitioner"
                and grant.grantee_id == request.practitioner_pseudonym
                and grant.purpose == request.purpose
                and grant.is_active(timezone.now())
            ):
                held, expires_at = grant.categories, grant.expires_at
        submitted = consent_grant(
            user=user,
            password=password,
            grantee_type="practitioner",
            grantee_id=request.practitioner_pseudonym,
            categories=[*approved, *held],
            purpose=request.purpose,
            expires_at=expires_at,
        )
        request.status = (
            AccessRequest.Status.APPROVED
            if set(approved) == set(request.categories)
            else AccessRequest.Status.PARTLY_APPROVED
        )
        request.granted_categories = approved
        request.grant_tx_hash = submitted.hash
    request.answered_at = timezone.now()
    with schema_context(get_public_schema_name()):
        request.save(update_fields=["status", "answered_at", "granted_categories", "grant_tx_hash"])
        requester = Tenant.objects.get(pk=request.requester_tenant_id)
    with tenant_context(requester):
        notifications_create(
            recipient_ids=_requesting_doctor_ids(request),
            kind="request_answered",
            text=f"A patient answered your access request: {request.get_status_display().lower()}.",
        )
    return request


def access_requests_mark_seen(*, user: User, request_ids: Iterable[uuid.UUID]) -> int:
    """The doctor has seen these answers (the in-portal notice is cleared)."""
    pseudonym = _my_practitioner_pseudonym(user)
    with schema_context(get_public_schema_name()):
        return (
            AccessRequest.objects.filter(
                pk__in=list(request_ids),
                practitioner_pseudonym=pseudonym,
                answer_seen_at__isnull=True,
            )
            .exclude(status=AccessRequest.Status.PENDING)
            .update(answer_seen_at=timezone.now())
        )
