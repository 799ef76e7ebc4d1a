"""The one decision point: may this requester read this section of this record?

Every read path asks :func:`access_decide` (pages, API, FHIR export, the hub's
exchange). The answer names its reason, which goes into the access log:

* ``own-record`` — a patient reading their own entry;
* ``default:author`` — the doctor who wrote the entry;
* ``default:own-hospital`` — staff of the hospital that wrote the entry, for
  its normal and restricted sections (doctors for treatment, admins for
  administration); very restricted sections need a grant even there;
* ``grant:<tx hash>`` — the patient's latest ``access`` transaction for this
  grantee (the doctor, or their whole hospital) and purpose covers every
  category of the section and has not expired;
* ``grant:<tx hash>`` for a research request — the patient's opt-in (grantee
  the request, purpose research) covers every category of the section; a
  request reads nothing else, not even at a hospital's default;
* ``emergency:<tx hash>`` — a declared emergency for this doctor, not expired,
  for the categories it names (those of the levels in
  ``MEDPORTAL_EMERGENCY_LEVELS`` when it was declared);
* ``deny:...`` — none of these.

Grants are read from the hub's canonical chain every time (sealed and
pending transactions): a revocation is simply a later ``access`` transaction
for the same grantee and purpose with no categories, and it applies to the
next read. Nothing is cached, so nothing stale can allow a read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_tenants.utils import get_public_schema_name, schema_context

from chain.models import PendingTransaction, Transaction, TransactionKind
from records.categories import Level

STAFF_ROLES = ("doctor", "admin")
DEFAULT_PURPOSE = {
    "doctor": "treatment",
    "admin": "administration",
    "patient": "patient_access",
    "researcher": "research",
}


@dataclass(frozen=True)
class Requester:
    """Who asks. Staff carry their practitioner pseudonym; patients their
    pseudonyms; a research request (role researcher) its id."""

    role: str
    tenant_slug: str
    practitioner: str = ""
    patient_pseudonyms: frozenset[str] = frozenset()
    request: str = ""


@dataclass(frozen=True)
class SectionRef:
    """What is asked for: one section of one record, as its chain entry describes it."""

    origin: str
    level: str
    categories: tuple[str, ...]
    author: str = ""


@dataclass(frozen=True)
class Grant:
    """The current state of one (grantee, purpose) for a patient, from the chain."""

    tx_hash: str
    patient: str
    grantee_type: str
    grantee_id: str
    categories: frozenset[str]
    purpose: str
    expires_at: datetime | None
    is_pending: bool = False

    def is_active(self, now: datetime) -> bool:
        return bool(self.categories) and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    grant: str = ""
    is_emergency: bool = False
    expires_at: datetime | None = None


def _parse_time(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


def grants_current(*, patient_pseudonyms: Iterable[str]) -> list[Grant]:
    """The latest ``access`` transaction per (patient, grantee, purpose), in chain
    order (sealed by height and position, then pending by arrival)."""
    pseudonyms = list(patient_pseudonyms)
    if not pseudonyms:
        return []
    query = Q(kind=TransactionKind.ACCESS, payload__patient__in=pseudonyms)
    with schema_context(get_public_schema_name()):
        sealed = list(
            Transaction.objects.filter(query)
            .order_by("block__height", "index")
            .values_list("hash", "payload")
        )
        pending = list(
            PendingTransaction.objects.filter(query).order_by("id").values_list("hash", "payload")
        )
    latest: dict[tuple, Grant] = {}
    for is_pending, rows in ((False, sealed), (True, pending)):
        for tx_hash, payload in rows:
            grantee = payload["grantee"]
            # One person, all their pseudonyms: a revocation signed under the
            # current pseudonym overrides a grant made under a former one.
            key = (grantee["type"], grantee["id"], payload["purpose"])
            latest[key] = Grant(
                tx_hash=tx_hash,
                patient=payload["patient"],
                grantee_type=grantee["type"],
                grantee_id=grantee["id"],
                categories=frozenset(payload["categories"]),
                purpose=payload["purpose"],
                expires_at=_parse_time(payload.get("expires_at")),
                is_pending=is_pending,
            )
    return list(latest.values())


def emergency_levels() -> frozenset[str]:
    """The sensitivity levels a declared emergency opens (``MEDPORTAL_EMERGENCY_LEVELS``)."""
    levels = frozenset(
        getattr(settings, "MEDPORTAL_EMERGENCY_LEVELS", [Level.NORMAL, Level.RESTRICTED])
    )
    unknown = levels - set(Level.values)
    if unknown:
        raise ImproperlyConfigured(
            f"MEDPORTAL_EMERGENCY_LEVELS holds unknown levels: {', '.join(sorted(unknown))}"
        )
    return levels


def access_decide(
    *,
    requester: Requester,
    patient_pseudonyms: frozenset[str],
    section: SectionRef,
    purpose: str | None = None,
    grants: list[Grant] | None = None,
    now: datetime | None = None,
) -> Decision:
    """Allow or deny, with the reason. ``patient_pseudonyms`` are all of the
    patient's (grants are signed under the current one; old entries keep the one
    they were written under). ``grants`` may be passed in when one read decides
    many sections (fetch them once with :func:`grants_current`)."""
    now = now or timezone.now()
    purpose = purpose or DEFAULT_PURPOSE.get(requester.role, "treatment")
    if requester.role == "patient":
        if patient_pseudonyms & requester.patient_pseudonyms:
            return Decision(True, "own-record")
        return Decision(False, "deny:not-own-record")
    if requester.role == "researcher":
        return _research_decide(requester, patient_pseudonyms, section, purpose, grants, now)
    if requester.role not in STAFF_ROLES:
        return Decision(False, "deny:role")
    at_origin = requester.tenant_slug == section.origin
    if at_origin and requester.practitioner and requester.practitioner == section.author:
        return Decision(True, "default:author")
    if (
        at_origin
        and section.level in (Level.NORMAL, Level.RESTRICTED)
        and purpose == DEFAULT_PURPOSE[requester.role]
    ):
        return Decision(True, "default:own-hospital")
    if grants is None:
        grants = grants_current(patient_pseudonyms=patient_pseudonyms)
    needed = frozenset(section.categories)
    for grant in grants:
        if grant.patient not in patient_pseudonyms or not grant.is_active(now):
            continue
        is_mine = (
            grant.grantee_type == "practitioner" and grant.grantee_id == requester.practitioner
        ) or (grant.grantee_type == "tenant" and grant.grantee_id == requester.tenant_slug)
        if not is_mine:
            continue
        if grant.purpose == "emergency":
            # What the signed declaration covers (the levels configured when it was
            # declared), not today's setting.
            if needed <= grant.categories:
                return Decision(
                    True, f"emergency:{grant.tx_hash}", grant.tx_hash, True, grant.expires_at
                )
            continue
        if grant.purpose == purpose and needed <= grant.categories:
            return Decision(
                True, f"grant:{grant.tx_hash}", grant.tx_hash, expires_at=grant.expires_at
            )
    if at_origin:
        return Decision(False, "deny:very-restricted-needs-grant")
    return Decision(False, "deny:no-grant")


def _research_decide(
    requester: Requester,
    patient_pseudonyms: frozenset[str],
    section: SectionRef,
    purpose: str,
    grants: list[Grant] | None,
    now: datetime,
) -> Decision:
    """A research request reads only what the patient's opt-in for it covers."""
    if not requester.request or purpose != "research":
        return Decision(False, "deny:role")
    if grants is None:
        grants = grants_current(patient_pseudonyms=patient_pseudonyms)
    needed = frozenset(section.categories)
    for grant in grants:
        if (
            grant.patient in patient_pseudonyms
            and grant.grantee_type == "request"
            and grant.grantee_id == requester.request
            and grant.purpose == "research"
            and grant.is_active(now)
        ):
            if needed <= grant.categories:
                return Decision(
                    True, f"grant:{grant.tx_hash}", grant.tx_hash, expires_at=grant.expires_at
                )
            return Decision(False, "deny:category-not-in-opt-in")
    return Decision(False, "deny:no-research-opt-in")
