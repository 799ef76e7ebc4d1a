"""What the hub's exchange service keeps (public schema only).

* ``LinkCode``: short-lived patient link codes. No PHI: the HMAC of the code
  (never the code), which hospital issued it and for which pseudonym.
* ``Practitioner``: the directory of doctors at every hospital, so a patient
  can choose a doctor anywhere by name. Staff names are not patient data.
* ``AccessRequest``: a doctor asks a patient for access to categories of
  their records; the patient approves in part or whole, or declines.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class LinkCode(models.Model):
    code_digest = models.CharField(max_length=64, unique=True)
    origin = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # The Patient row (id) at the origin hospital, and its pseudonym.
    patient_id = models.UUIDField()
    pseudonym = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # The patient's signing key sealed under Argon2id(code), for the second
    # hospital to re-seal under that account's password; emptied when used.
    transport_wrap = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="exchange_link_expiry")]

    def __str__(self) -> str:
        return f"link code from {self.origin_id} (expires {self.expires_at:%Y-%m-%d %H:%M})"


class Practitioner(models.Model):
    """A doctor as the directory lists them; ``pseudonym`` is the grantee id a
    grant to this doctor names (``records.keys.practitioner_pseudonym``)."""

    pseudonym = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    display_name = models.CharField(max_length=300)
    role = models.CharField(max_length=16)
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["display_name", "pseudonym"]
        indexes = [models.Index(fields=["role", "is_active"], name="exchange_practitioner_role")]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.tenant_id})"


class AccessRequest(models.Model):
    """A doctor's request to read categories of a patient's records.

    The patient is named only by pseudonym (shared across linked hospitals, so
    a request made at one is answered at any of them)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the patient"
        APPROVED = "approved", "Approved"
        PARTLY_APPROVED = "partly_approved", "Partly approved"
        DECLINED = "declined", "Declined"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient_pseudonym = models.CharField(max_length=64)
    requester_tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+"
    )
    # The Patient row (id) at the requesting hospital, so the doctor's list can
    # link back to the chart; meaningless anywhere else.
    requester_patient_id = models.UUIDField()
    practitioner_pseudonym = models.CharField(max_length=64)
    practitioner_name = models.CharField(max_length=300)
    categories = models.JSONField(default=list)
    purpose = models.CharField(max_length=32)
    # Why the doctor asks. It can be clinical ("suspected interaction with her
    # psychiatric medication"): it is shown to the patient and the requesting
    # doctor only, never in lists for anyone else.
    reason = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    answered_at = models.DateTimeField(null=True, blank=True)
    granted_categories = models.JSONField(default=list, blank=True)
    grant_tx_hash = models.CharField(max_length=64, blank=True)
    # When the requesting doctor first saw the answer (the in-portal notice).
    answer_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["patient_pseudonym", "status"], name="exchange_request_patient"),
            models.Index(fields=["practitioner_pseudonym"], name="exchange_request_doctor"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["pending", "approved", "partly_approved", "declined"]
                ),
                name="exchange_request_status_valid",
            ),
            # One open request per doctor and patient: asking again while the
            # patient has not answered would only pile up requests.
            models.UniqueConstraint(
                fields=["patient_pseudonym", "practitioner_pseudonym"],
                condition=models.Q(status="pending"),
                name="exchange_request_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"access request {self.id} ({self.status})"

    @property
    def is_answered(self) -> bool:
        return self.status != self.Status.PENDING

    @property
    def purpose_label(self) -> str:
        """In words, for pages ("a second opinion", not "second_opinion")."""
        from consent.requests import PURPOSE_LABELS

        return PURPOSE_LABELS.get(self.purpose, self.purpose).lower()
