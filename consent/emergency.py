"""Emergency access (break-glass): services and selectors.

A doctor who has no grant declares an emergency for a patient of their own
hospital, with a written reason. The hospital signs an ``access`` transaction
of purpose ``emergency`` naming the doctor (by practitioner pseudonym), the
categories of the levels in ``MEDPORTAL_EMERGENCY_LEVELS`` and an expiry
``MEDPORTAL_EMERGENCY_HOURS`` away; ``consent.policy.access_decide`` honours it
until then, and every read it allows is logged with ``is_emergency``. The
patient is told at once at every hospital where they hold an account, and the
hospital's admins find the emergency in their review queue, where each one is
marked justified or not.

The reason (and the reviewer's note) can be clinical: they are sealed under a
fresh data key wrapped with the hospital's KEK, never stored in the clear.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.encoding import canonical_json, format_time, sha256_hex
from chain.models import TransactionKind
from chain.services import transaction_submit
from consent.models import EmergencyAccess, NotificationKind, ReviewStatus
from consent.notifications import patient_notify
from records.categories import Category, Level, categories_at
from records.crypto import (
    RecordCryptoError,
    SectionContext,
    WrappedKey,
    open_section,
    seal_section,
    unwrap_for_tenant,
    wrap_for_tenant,
)
from records.keys import practitioner_pseudonym
from records.models import Patient

REASON_MIN = 10
REASON_MAX = 2000
NOTE_MAX = 2000


def emergency_hours() -> int:
    return int(getattr(settings, "MEDPORTAL_EMERGENCY_HOURS", 24))


def emergency_levels() -> list[str]:
    """The levels an emergency opens, in the table's order."""
    wanted = set(getattr(settings, "MEDPORTAL_EMERGENCY_LEVELS", [Level.NORMAL, Level.RESTRICTED]))
    return [level for level in Level.values if level in wanted]


def emergency_categories() -> list[str]:
    wanted = {category for level in emergency_levels() for category in categories_at(level)}
    return [category for category in Category.values if category in wanted]


def _hospital():
    tenant = getattr(connection, "tenant", None)
    if getattr(tenant, "kind", None) != "hospital":
        raise PermissionDenied("Emergencies are declared at hospitals.")
    return tenant


# --- Sealing the free text ------------------------------------------------------------


def _context(emergency_id: uuid.UUID, section: str, patient_id: uuid.UUID) -> SectionContext:
    # Bound to the patient's row, not their pseudonym: linking accounts changes
    # the pseudonym, and the reason must still open afterwards.
    return SectionContext(
        record_id=f"emergency-{emergency_id}",
        section=section,
        patient_pseudonym=f"patient-{patient_id}",
    )


def _seal_text(
    text: str, *, tenant_slug: str, context: SectionContext
) -> tuple[bytes, bytes, dict, int, str]:
    """(ciphertext, nonce, wrap, KEK version, SHA-256 of the plaintext). The
    plaintext carries a random salt so that its hash, which goes on the chain,
    cannot be matched against guessed texts."""
    plaintext = canonical_json({"salt": secrets.token_hex(16), "text": text})
    sealed = seal_section(plaintext, context)
    wrapped = wrap_for_tenant(sealed.data_key, tenant=tenant_slug, context=context)
    return (
        sealed.ciphertext,
        sealed.nonce,
        wrapped.to_dict(),
        wrapped.version,
        sha256_hex(plaintext),
    )


def _open_text(ciphertext, nonce, wrap: dict, *, tenant_slug: str, context: SectionContext) -> str:
    data_key = unwrap_for_tenant(WrappedKey.from_dict(wrap), tenant=tenant_slug, context=context)
    plaintext = open_section(bytes(ciphertext), bytes(nonce), data_key, context)
    return json.loads(plaintext)["text"]


# --- Services ---------------------------------------------------------------------------


def _reason_clean(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) < REASON_MIN:
        raise ValidationError(
            {"reason": [f"Write why this is an emergency (at least {REASON_MIN} characters)."]}
        )
    if len(reason) > REASON_MAX:
        raise ValidationError({"reason": [f"Keep the reason under {REASON_MAX} characters."]})
    return reason


@transaction.atomic
def emergency_declare(*, doctor: User, patient: Patient, reason: str) -> EmergencyAccess:
    """Open the patient's records (the levels in ``MEDPORTAL_EMERGENCY_LEVELS``,
    from every hospital) to this doctor for ``MEDPORTAL_EMERGENCY_HOURS``.

    Doctors only, for a patient of their own hospital. The hospital-signed
    ``access`` transaction, the row for the review queue and the patient's
    notifications are written together; pushes and e-mails go out on commit.
    Raises ``chain.services.TransactionRejected`` if the hub refuses.
    """
    tenant = _hospital()
    if not user_has_role(doctor, (Role.DOCTOR,), tenant):
        raise PermissionDenied("Only doctors declare an emergency access.")
    reason = _reason_clean(reason)
    patient = Patient.objects.filter(pk=patient.pk).first()
    if patient is None:
        raise PermissionDenied("An emergency is declared for a patient of this hospital.")
    emergency_id = uuid.uuid4()
    pseudonym = practitioner_pseudonym(tenant_slug=tenant.slug, user_id=doctor.pk)
    ciphertext, nonce, wrap, version, reason_sha256 = _seal_text(
        reason,
        tenant_slug=tenant.slug,
        context=_context(emergency_id, "reason", patient.pk),
    )
    created_at = timezone.now()
    expires_at = created_at + timedelta(hours=emergency_hours())
    pending = transaction_submit(
        tenant=tenant,
        kind=TransactionKind.ACCESS,
        payload={
            "patient": patient.pseudonym,
            "grantee": {"type": "practitioner", "id": pseudonym},
            "categories": emergency_categories(),
            "purpose": "emergency",
            "expires_at": format_time(expires_at),
            "reason_hash": reason_sha256,
        },
    )
    emergency = EmergencyAccess.objects.create(
        id=emergency_id,
        patient=patient,
        doctor=doctor,
        practitioner_pseudonym=pseudonym,
        reason_ciphertext=ciphertext,
        reason_nonce=nonce,
        reason_wrap=wrap,
        reason_sha256=reason_sha256,
        kek_version=version,
        tx_hash=pending.hash,
        created_at=created_at,
        expires_at=expires_at,
    )
    patient_notify(
        patient_pseudonyms=patient.pseudonyms,
        kind=NotificationKind.EMERGENCY_ACCESS,
        text=(
            f"{doctor.display_name} at {tenant.name} declared an emergency access to your "
            f"records until {expires_at:%Y-%m-%d %H:%M} UTC. Every read is in your access "
            "log, and the hospital reviews each emergency."
        ),
    )
    return emergency


@transaction.atomic
def emergency_review(
    *, admin: User, emergency_id: uuid.UUID | str, justified: bool, note: str = ""
) -> EmergencyAccess:
    """An admin of the hospital marks an emergency justified or not, once."""
    tenant = _hospital()
    if not user_has_role(admin, (Role.ADMIN,), tenant):
        raise PermissionDenied("Only the hospital's administrators review emergencies.")
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise ValidationError({"note": [f"Keep the note under {NOTE_MAX} characters."]})
    emergency = (
        EmergencyAccess.objects.select_for_update()
        .select_related("patient")
        .filter(pk=emergency_id)
        .first()
    )
    if emergency is None:
        raise EmergencyAccess.DoesNotExist("No such emergency access.")
    if not emergency.is_pending:
        raise ValidationError("This emergency access has already been reviewed.")
    emergency.review_status = ReviewStatus.JUSTIFIED if justified else ReviewStatus.UNJUSTIFIED
    emergency.reviewed_by = admin
    emergency.reviewed_at = timezone.now()
    if note:
        ciphertext, nonce, wrap, _, _ = _seal_text(
            note,
            tenant_slug=tenant.slug,
            context=_context(emergency.id, "review-note", emergency.patient_id),
        )
        emergency.review_note_ciphertext = ciphertext
        emergency.review_note_nonce = nonce
        emergency.review_note_wrap = wrap
    emergency.save()
    return emergency


# --- Selectors --------------------------------------------------------------------------


@dataclass(frozen=True)
class EmergencyRow:
    """One emergency as the review queue shows it (decrypted for an admin)."""

    emergency: EmergencyAccess
    patient_name: str
    record_number: str
    reason: str
    review_note: str
    error: str = ""

    @property
    def id(self) -> uuid.UUID:
        return self.emergency.id


def _row(emergency: EmergencyAccess, tenant_slug: str) -> EmergencyRow:
    from records.services import patient_identity

    try:
        identity = patient_identity(emergency.patient)
        reason = _open_text(
            emergency.reason_ciphertext,
            emergency.reason_nonce,
            emergency.reason_wrap,
            tenant_slug=tenant_slug,
            context=_context(emergency.id, "reason", emergency.patient_id),
        )
        note = ""
        if emergency.review_note_wrap:
            note = _open_text(
                emergency.review_note_ciphertext,
                emergency.review_note_nonce,
                emergency.review_note_wrap,
                tenant_slug=tenant_slug,
                context=_context(emergency.id, "review-note", emergency.patient_id),
            )
    except (RecordCryptoError, ValueError, KeyError):
        return EmergencyRow(emergency, "", "", "", "", "This emergency does not decrypt.")
    return EmergencyRow(emergency, identity.full_name, identity.record_number, reason, note)


def emergency_reviews_for_user(*, user: User, limit: int = 200) -> list[EmergencyRow]:
    """The review queue: pending first, then the newest. Admins of this hospital only."""
    tenant = _hospital()
    if not user_has_role(user, (Role.ADMIN,), tenant):
        raise PermissionDenied("Only the hospital's administrators review emergencies.")
    emergencies = (
        EmergencyAccess.objects.select_related("patient", "doctor", "reviewed_by")
        .annotate(
            queue_order=Case(
                When(review_status=ReviewStatus.PENDING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("queue_order", "-created_at")[:limit]
    )
    return [_row(emergency, tenant.slug) for emergency in emergencies]


def emergencies_active_for_doctor(
    *, user: User, patient: Patient, now: datetime | None = None
) -> list[EmergencyAccess]:
    """This doctor's emergencies for this patient that have not expired."""
    now = now or timezone.now()
    return list(
        EmergencyAccess.objects.filter(doctor=user, patient=patient, expires_at__gt=now).order_by(
            "-expires_at"
        )
    )


def emergency_rotate_batch(*, to_version: int, batch: int = 500) -> int:
    """Re-wrap the data keys of emergency reasons and review notes not yet at
    ``to_version`` (part of ``rotate_keys``); returns how many rows it did."""
    from django.db import connection

    tenant_slug = connection.tenant.slug
    with transaction.atomic():
        rows = list(
            EmergencyAccess.objects.select_for_update()
            .exclude(kek_version=to_version)
            .order_by("pk")[:batch]
        )
        for row in rows:
            for section, prefix in (("reason", "reason"), ("review-note", "review_note")):
                wrap = getattr(row, f"{prefix}_wrap")
                if not wrap:
                    continue
                context = _context(row.id, section, row.patient_id)
                data_key = unwrap_for_tenant(
                    WrappedKey.from_dict(wrap), tenant=tenant_slug, context=context
                )
                rewrapped = wrap_for_tenant(
                    data_key, tenant=tenant_slug, context=context, version=to_version
                )
                setattr(row, f"{prefix}_wrap", rewrapped.to_dict())
            row.kek_version = to_version
        EmergencyAccess.objects.bulk_update(
            rows, ["reason_wrap", "review_note_wrap", "kek_version"]
        )
    return len(rows)
