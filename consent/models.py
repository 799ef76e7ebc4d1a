"""The access log, in each hospital's schema.

An entry says who read (or tried to read) what, why, and what the answer was.
It holds no patient PHI: the patient is a pseudonym, the record an id, the
sections names, the reader a staff member's display name (or "the patient").
``reason`` carries identifiers only (a grant's transaction hash, a rule's
name), never record content.

Entries are hash-chained in id order (``previous_hash``), and batches of them
are anchored on the ledger by the Merkle root of their hashes
(``AccessLogAnchor`` plus an ``anchor`` transaction). Both tables are
append-only (a trigger refuses UPDATE, DELETE and TRUNCATE; migration 0002).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from chain.encoding import GENESIS_PREVIOUS_HASH, canonical_json, format_time, sha256_hex

HEX64 = r"^[0-9a-f]{64}$"


class Purpose(models.TextChoices):
    TREATMENT = "treatment", "Treatment"
    SECOND_OPINION = "second_opinion", "Second opinion"
    RESEARCH = "research", "Research"
    EMERGENCY = "emergency", "Emergency"
    PATIENT_ACCESS = "patient_access", "The patient's own access"
    ADMINISTRATION = "administration", "Administration"


class Decision(models.TextChoices):
    ALLOW = "allow", "Allowed"
    DENY = "deny", "Denied"


# Every column but ``hash``, in one place for the service that writes an entry
# and the selector that re-hashes it. Changing this list changes every hash:
# add a versioned list beside it instead.
HASHED_FIELDS = (
    "id",
    "created_at",
    "reader_name",
    "reader_role",
    "reader_tenant",
    "reader_tenant_name",
    "reader_pseudonym",
    "patient_pseudonym",
    "record_id",
    "sections",
    "purpose",
    "decision",
    "reason",
    "is_emergency",
    "previous_hash",
)


def access_log_entry_hash(values: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of an entry's ``HASHED_FIELDS``."""
    body = {name: values[name] for name in HASHED_FIELDS}
    body["created_at"] = format_time(body["created_at"])
    # Plain str and list: TextChoices members and tuples encode the same, but
    # values read back from the database are always these types.
    body["purpose"] = str(body["purpose"])
    body["decision"] = str(body["decision"])
    body["sections"] = list(body["sections"])
    return sha256_hex(canonical_json(body))


class AccessLogEntry(models.Model):
    """One read or denied attempt. ``id`` is the sequence number in the chain."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    reader_name = models.CharField(max_length=200)
    reader_role = models.CharField(max_length=32)
    reader_tenant = models.SlugField(max_length=40)
    reader_tenant_name = models.CharField(max_length=200)
    reader_pseudonym = models.CharField(max_length=64, blank=True)
    patient_pseudonym = models.CharField(max_length=64, db_index=True)
    # Blank for a read that is not about one record (a list of a patient's records).
    record_id = models.CharField(max_length=64, blank=True)
    sections = models.JSONField(default=list, blank=True)
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True)
    is_emergency = models.BooleanField(default=False)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "access log entries"
        constraints = [
            # One successor per entry and one first entry: the chain cannot fork,
            # whatever a writer that skipped the lock did.
            models.UniqueConstraint(
                fields=["previous_hash"], name="consent_accesslogentry_one_successor"
            ),
            models.CheckConstraint(
                condition=models.Q(purpose__in=Purpose.values),
                name="consent_accesslogentry_purpose_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(decision__in=Decision.values),
                name="consent_accesslogentry_decision_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(hash__regex=HEX64) & models.Q(previous_hash__regex=HEX64),
                name="consent_accesslogentry_hashes_hex",
            ),
        ]
        indexes = [
            models.Index(fields=["patient_pseudonym", "-id"], name="consent_log_patient_newest"),
        ]

    def __str__(self) -> str:
        return f"access log entry {self.id}"

    def hashed_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HASHED_FIELDS}

    @property
    def is_first(self) -> bool:
        return self.previous_hash == GENESIS_PREVIOUS_HASH


class AccessLogAnchor(models.Model):
    """Entries ``first_entry`` to ``last_entry`` (ids, inclusive) anchored on the
    ledger: ``root`` is the Merkle root of their hashes in id order, and the
    ``anchor`` transaction ``tx_hash`` carries the same range and root."""

    first_entry = models.BigIntegerField(unique=True)
    last_entry = models.BigIntegerField(unique=True)
    root = models.CharField(max_length=64)
    tx_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["first_entry"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(last_entry__gte=models.F("first_entry"))
                & models.Q(first_entry__gte=1),
                name="consent_accessloganchor_range_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(root__regex=HEX64) & models.Q(tx_hash__regex=HEX64),
                name="consent_accessloganchor_hashes_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"access log anchor {self.first_entry}-{self.last_entry}"


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Awaiting review"
    JUSTIFIED = "justified", "Justified"
    UNJUSTIFIED = "unjustified", "Not justified"


class EmergencyAccess(models.Model):
    """A doctor of this hospital declared an emergency (break-glass) for one of
    its patients. The ``access`` transaction ``tx_hash`` (signed by the hospital)
    is what the policy honours; this row is the hospital's own account of it, for
    the admins' review.

    The reason and the review note may be clinical, so they are sealed like a
    record section (a fresh data key wrapped under this hospital's KEK).
    ``reason_sha256`` is the SHA-256 of the sealed plaintext, a random salt and
    the reason; the chain carries the same value as ``reason_hash``, which binds
    the reason to the transaction without letting anyone who reads the chain
    guess a short reason by hashing candidates.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(
        "records.Patient", on_delete=models.PROTECT, related_name="emergencies"
    )
    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="emergencies_declared"
    )
    practitioner_pseudonym = models.CharField(max_length=64)
    reason_ciphertext = models.BinaryField()
    reason_nonce = models.BinaryField()
    reason_wrap = models.JSONField()
    reason_sha256 = models.CharField(max_length=64)
    kek_version = models.PositiveIntegerField()
    tx_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="emergencies_reviewed",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Empty when the reviewer wrote no note; otherwise sealed like the reason.
    review_note_ciphertext = models.BinaryField(null=True, blank=True)
    review_note_nonce = models.BinaryField(null=True, blank=True)
    review_note_wrap = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "emergency accesses"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(review_status__in=ReviewStatus.values),
                name="consent_emergency_review_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")),
                name="consent_emergency_expires_after_created",
            ),
            models.CheckConstraint(
                condition=models.Q(reason_sha256__regex=HEX64) & models.Q(tx_hash__regex=HEX64),
                name="consent_emergency_hashes_hex",
            ),
            # A review is all there (who, when, verdict) or not there at all.
            models.CheckConstraint(
                condition=(
                    models.Q(
                        review_status=ReviewStatus.PENDING,
                        reviewed_by__isnull=True,
                        reviewed_at__isnull=True,
                    )
                    | (
                        ~models.Q(review_status=ReviewStatus.PENDING)
                        & models.Q(reviewed_by__isnull=False, reviewed_at__isnull=False)
                    )
                ),
                name="consent_emergency_review_complete",
            ),
        ]
        indexes = [
            models.Index(fields=["review_status", "-created_at"], name="consent_emergency_queue"),
        ]

    def __str__(self) -> str:
        return f"emergency access {self.id}"

    @property
    def is_pending(self) -> bool:
        return self.review_status == ReviewStatus.PENDING

    def is_active(self, now=None) -> bool:
        return self.expires_at > (now or timezone.now())


class NotificationKind(models.TextChoices):
    EMERGENCY_ACCESS = "emergency_access", "Emergency access"
    EXTERNAL_READ = "external_read", "Read from another hospital"
    ACCESS_REQUEST = "access_request", "Access request"
    REQUEST_ANSWERED = "request_answered", "Request answered"
    KEY_RECOVERY = "key_recovery", "New keys"
    RESEARCH_INVITATION = "research_invitation", "Research invitation"
    RESEARCH_STATUS = "research_status", "Research request status"


class Notification(models.Model):
    """Something a person of this hospital is told about. ``text`` names staff,
    hospitals and identifiers only, never record content: it is also pushed over
    the websocket and sent by e-mail."""

    id = models.BigAutoField(primary_key=True)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    text = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)
    # Set by the e-mail task when it takes the notification, so a task that
    # runs twice sends one e-mail.
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=NotificationKind.values),
                name="consent_notification_kind_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["recipient", "-created_at"], name="consent_notification_inbox"),
        ]

    def __str__(self) -> str:
        return f"notification {self.id} ({self.kind})"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Not answered yet"
    OPTED_IN = "opted_in", "Taking part"
    OPTED_OUT = "opted_out", "Not taking part"
    WITHDRAWN = "withdrawn", "Withdrew"


class ResearchInvitation(models.Model):
    """A research request shown to one patient of this hospital whose records
    match it. Only this hospital knows who was invited and what they answered;
    the answer itself is the patient's signed ``access`` transaction (grantee
    the request, purpose research), which is what a release checks."""

    patient = models.ForeignKey(
        "records.Patient", on_delete=models.CASCADE, related_name="research_invitations"
    )
    request_id = models.UUIDField()
    status = models.CharField(
        max_length=16, choices=InvitationStatus.choices, default=InvitationStatus.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    answered_at = models.DateTimeField(null=True, blank=True)
    tx_hash = models.CharField(max_length=64, blank=True)
    # Set when a release included this patient: a later withdrawal is recorded
    # and keeps them out of any later release, but cannot recall a file.
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "request_id"], name="consent_one_invitation_per_request"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=InvitationStatus.values),
                name="consent_invitation_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"invitation {self.pk} ({self.status})"


class ResearchPreference(models.Model):
    """A patient's standing answer: ask me about every matching request (the
    default), or never ask me (no invitations are made)."""

    class Choice(models.TextChoices):
        ALWAYS_ASK = "always_ask", "Always ask me"
        NEVER_ASK = "never_ask", "Never ask me"

    patient = models.OneToOneField(
        "records.Patient", on_delete=models.CASCADE, related_name="research_preference"
    )
    choice = models.CharField(max_length=16, choices=Choice.choices, default=Choice.ALWAYS_ASK)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"research preference of patient {self.patient_id}: {self.choice}"
