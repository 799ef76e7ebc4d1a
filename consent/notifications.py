"""Notifications: telling patients (and staff) what happened to their records.

A patient may hold accounts at several hospitals; the hub's chain knows which
(``identity`` register and link transactions name the subject's pseudonym and
the hospital). :func:`patient_notify` writes a :class:`Notification` in every
such hospital's schema, and after commit pushes it to the person's open pages
(``medportal.realtime``) and queues an e-mail (``consent.tasks``) with ids only:
the task reads the address from the encrypted identity itself.

A notification's text names staff, hospitals and times, never record content
nor the reason for an emergency (which may be clinical).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction, Transaction, TransactionKind
from consent.models import Notification, NotificationKind
from medportal.tenants.models import Tenant, TenantKind

TEXT_MAX = 500


@dataclass(frozen=True)
class Delivered:
    """One notification written: where, to whom, and its id there."""

    schema_name: str
    tenant_slug: str
    user_id: int
    notification_id: int


# --- Selectors ------------------------------------------------------------------------


def _identity_payloads(query: Q) -> list[dict]:
    """Sealed and still-pending ``identity`` payloads (a link made a moment ago counts)."""
    payloads: list[dict] = []
    for model in (Transaction, PendingTransaction):
        payloads.extend(
            model.objects.filter(query, kind=TransactionKind.IDENTITY).values_list(
                "payload", flat=True
            )
        )
    return payloads


def patient_hospitals(*, patient_pseudonyms: Iterable[str]) -> tuple[frozenset[str], list[Tenant]]:
    """Every pseudonym linked to ``patient_pseudonyms`` and every hospital where
    one of them holds an account, as the hub's chain says."""
    known = set(patient_pseudonyms)
    with schema_context(get_public_schema_name()):
        frontier = set(known)
        while frontier:
            links = _identity_payloads(
                Q(payload__action="link")
                & (Q(payload__subject__in=frontier) | Q(payload__links__in=frontier))
            )
            found = set()
            for payload in links:
                found.update(value for value in (payload["subject"], payload.get("links")) if value)
            frontier = found - known
            known |= frontier
        slugs = {
            payload["tenant"]
            for payload in _identity_payloads(
                Q(payload__subject_type="patient", payload__subject__in=sorted(known))
            )
        }
        hospitals = list(
            Tenant.objects.filter(slug__in=slugs, kind=TenantKind.HOSPITAL).order_by("slug")
        )
    return frozenset(known), hospitals


def _patient_accounts_here(pseudonyms: frozenset[str]) -> list[int]:
    """User ids of the patient profiles in the current schema with any of ``pseudonyms``
    (current or former: linking may have replaced the one a hospital knew)."""
    from records.models import Patient

    query = Q(pseudonym__in=sorted(pseudonyms))
    for pseudonym in sorted(pseudonyms):
        query |= Q(former_pseudonyms__contains=[pseudonym])
    return sorted(
        Patient.objects.filter(query, user__isnull=False, user__is_active=True)
        .values_list("user_id", flat=True)
        .distinct()
    )


def notifications_for_user(*, user: User, limit: int = 100) -> list[Notification]:
    """The signed-in person's notifications at this hospital, newest first."""
    if not getattr(user, "is_authenticated", False):
        raise PermissionDenied("Sign in to see your notifications.")
    return list(Notification.objects.filter(recipient=user)[:limit])


def notifications_unread_count(*, user: User) -> int:
    if not getattr(user, "is_authenticated", False):
        return 0
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


# --- Services -------------------------------------------------------------------------


def _after_commit(delivered: list[Delivered], kind: str, text: str) -> None:
    from consent.tasks import notification_email_send
    from medportal.realtime import group_send_many, user_group

    def send() -> None:
        group_send_many(
            [
                (
                    user_group(item.schema_name, item.user_id),
                    {
                        "type": "notification",
                        "id": item.notification_id,
                        "kind": kind,
                        "text": text,
                    },
                )
                for item in delivered
            ]
        )

    def enqueue() -> None:
        for item in delivered:
            notification_email_send.apply_async(
                args=[item.notification_id], headers={"_schema_name": item.schema_name}
            )

    # Two callbacks: a push that fails (Redis away) must not stop the e-mails.
    transaction.on_commit(send, robust=True)
    transaction.on_commit(enqueue, robust=True)


def _clean_text(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ValueError("A notification needs a text.")
    return text[:TEXT_MAX]


@transaction.atomic
def notifications_create(
    *,
    recipient_ids: Iterable[int],
    kind: str,
    text: str,
    quiet_minutes: int = 0,
) -> list[Delivered]:
    """Notify these users of the current hospital (staff, e.g. a request answered)."""
    text = _clean_text(text)
    NotificationKind(kind)  # ValueError for an unknown kind
    tenant = connection.tenant
    delivered = _create_here(tenant, sorted(set(recipient_ids)), kind, text, quiet_minutes)
    _after_commit(delivered, kind, text)
    return delivered


def _create_here(
    tenant: Tenant, user_ids: list[int], kind: str, text: str, quiet_minutes: int
) -> list[Delivered]:
    if quiet_minutes > 0 and user_ids:
        # Not locked: two readers at the same moment may both notify, which is
        # harmless; the quiet period only stops a page reload from flooding.
        since = timezone.now() - timedelta(minutes=quiet_minutes)
        told = set(
            Notification.objects.filter(
                recipient_id__in=user_ids, kind=kind, text=text, created_at__gte=since
            ).values_list("recipient_id", flat=True)
        )
        user_ids = [user_id for user_id in user_ids if user_id not in told]
    created = Notification.objects.bulk_create(
        [Notification(recipient_id=user_id, kind=kind, text=text) for user_id in user_ids]
    )
    return [
        Delivered(tenant.schema_name, tenant.slug, item.recipient_id, item.id) for item in created
    ]


@transaction.atomic
def patient_notify(
    *,
    patient_pseudonyms: Iterable[str],
    kind: str,
    text: str,
    quiet_minutes: int = 0,
) -> list[Delivered]:
    """Tell a patient, at every hospital where they hold an account: a
    notification there, a live event to their open pages and an e-mail when their
    identity has an address (both after commit).

    ``quiet_minutes`` skips accounts that got the same notification that recently.
    """
    text = _clean_text(text)
    NotificationKind(kind)
    pseudonyms, hospitals = patient_hospitals(patient_pseudonyms=patient_pseudonyms)
    delivered: list[Delivered] = []
    for hospital in hospitals:
        with tenant_context(hospital):
            delivered.extend(
                _create_here(
                    hospital, _patient_accounts_here(pseudonyms), kind, text, quiet_minutes
                )
            )
    _after_commit(delivered, kind, text)
    return delivered


def notify_external_read(
    *,
    patient_pseudonyms: Iterable[str],
    reader_name: str,
    reader_tenant_name: str,
    origin_tenant_name: str,
) -> list[Delivered]:
    """A reader from another hospital opened the patient's records held at
    ``origin_tenant_name``. Call it from the exchange once per read (only when
    something was allowed); repeated reads within an hour are told once."""
    return patient_notify(
        patient_pseudonyms=patient_pseudonyms,
        kind=NotificationKind.EXTERNAL_READ,
        text=(
            f"{reader_name} at {reader_tenant_name} opened your records "
            f"from {origin_tenant_name}. It is in your access log."
        ),
        quiet_minutes=60,
    )


def notifications_mark_read(*, user: User) -> int:
    """Mark every unread notification of the signed-in person as read."""
    if not getattr(user, "is_authenticated", False):
        raise PermissionDenied("Sign in to see your notifications.")
    return Notification.objects.filter(recipient=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def notification_email(*, notification_id: int) -> bool:
    """Send one notification by e-mail to its recipient (a patient's address is in
    their encrypted identity; staff use their account's). Runs in the
    notification's hospital schema. At most once: the row is claimed first and
    released again if sending fails. True when an e-mail went out."""
    from django.core.mail import send_mail

    from records.models import Patient
    from records.services import patient_identity

    claimed = Notification.objects.filter(pk=notification_id, emailed_at__isnull=True).update(
        emailed_at=timezone.now()
    )
    if not claimed:
        return False
    notification = Notification.objects.select_related("recipient").get(pk=notification_id)
    recipient = notification.recipient
    address = recipient.email
    patient = Patient.objects.filter(user=recipient).first()
    if patient is not None:
        address = patient_identity(patient).email or address
    if not address or not recipient.is_active:
        return False
    tenant = connection.tenant
    try:
        send_mail(
            subject=f"MedPortal: {notification.get_kind_display().lower()} ({tenant.name})",
            message=(
                f"Hello,\n\n{notification.text}\n\n"
                f"Your notifications: {tenant.url('/consent/notifications/')}\n"
            ),
            from_email=None,
            recipient_list=[address],
        )
    except OSError:
        Notification.objects.filter(pk=notification_id).update(emailed_at=None)
        raise
    return True
