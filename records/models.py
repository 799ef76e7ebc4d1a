"""Patients and their encrypted records, in each hospital's schema.

No column here holds PHI in the clear: identity fields and record content are
AES-256-GCM ciphertext (identity in the row, record sections in the
content-addressed store), and what must be searchable is an HMAC blind index.
What stays readable is bookkeeping: ids, pseudonyms, categories, levels,
timestamps of writing, sizes and the chain transaction's hash.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from records.categories import Level


class Patient(models.Model):
    """A patient of this hospital. ``pseudonym`` is what the chain knows them by;
    accounts at two hospitals that the patient linked share one pseudonym."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="patient_profile",
    )
    pseudonym = models.CharField(max_length=64, unique=True)
    # Pseudonyms this patient had here before linking with another hospital;
    # their records keep the pseudonym they were written under (it is bound
    # into their encryption), so reads look under all of them.
    former_pseudonyms = models.JSONField(default=list, blank=True)
    # Name, sex, birth date, contact, record number: one sealed JSON document.
    identity_ciphertext = models.BinaryField()
    identity_nonce = models.BinaryField()
    identity_wrap = models.JSONField()
    kek_version = models.PositiveIntegerField()
    # HMAC blind indexes under this hospital's index key (exact match only).
    record_number_index = models.CharField(max_length=64, unique=True)
    name_index = models.CharField(max_length=64, db_index=True)
    # The patient's own keys: Ed25519 to sign (consent), X25519 to receive
    # data keys (see README, "Patient keys"). Sealed under a key derived from
    # the master key and the pseudonym until the patient has a portal password;
    # then those copies are blank and the keys live only in the *_password_wrap
    # fields (Argon2id of the password).
    key_id = models.CharField(max_length=64, unique=True)
    signing_public_key = models.CharField(max_length=64)
    sealed_signing_key = models.TextField(blank=True)
    signing_key_password_wrap = models.TextField(blank=True)
    encryption_public_key = models.CharField(max_length=64)
    sealed_encryption_key = models.TextField(blank=True)
    encryption_key_password_wrap = models.TextField(blank=True)
    key_version = models.PositiveSmallIntegerField()
    identity_tx_hash = models.CharField(max_length=64, blank=True)
    link_failures = models.PositiveSmallIntegerField(default=0)
    link_locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        # Never the name: str() ends up in logs and admin history.
        return f"patient {self.pseudonym}"

    @property
    def pseudonyms(self) -> list[str]:
        return [self.pseudonym, *self.former_pseudonyms]


class Record(models.Model):
    """One entry (the paper's "diagnosis bill"). Never edited: an amendment is a
    new record pointing at the one it corrects."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="records")
    # The pseudonym bound into this record's encryption (and its chain entry).
    patient_pseudonym = models.CharField(max_length=64, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    author_pseudonym = models.CharField(max_length=64)
    amends = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="amendments"
    )
    categories = models.JSONField()
    levels = models.JSONField()
    tx_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    erased_at = models.DateTimeField(null=True, blank=True)
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    erasure_reason = models.TextField(blank=True)
    erasure_tx_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"record {self.id}"

    @property
    def is_erased(self) -> bool:
        return self.erased_at is not None


class RecordSection(models.Model):
    """One encrypted part of a record: a sensitivity level's section, or an attachment.

    The ciphertext is in the store under ``sha256`` (the chain's pointer);
    here are its nonce and its data key, wrapped for this hospital
    (``tenant_wrap``, under a versioned key-encryption key) and for the patient
    (``patient_wrap``, HPKE to their X25519 key). Erasure empties both wraps.
    """

    class Kind(models.TextChoices):
        SECTION = "section"
        ATTACHMENT = "attachment"

    record = models.ForeignKey(Record, on_delete=models.PROTECT, related_name="sections")
    # "normal", "restricted", "very_restricted" or "attachment-<n>": bound into the AAD.
    name = models.CharField(max_length=40)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    level = models.CharField(max_length=16, choices=Level.choices)
    category = models.CharField(max_length=32, blank=True)
    content_type = models.CharField(max_length=64, blank=True)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    nonce = models.BinaryField()
    tenant_wrap = models.JSONField(null=True)
    patient_wrap = models.BinaryField(null=True)
    patient_key_id = models.CharField(max_length=64, blank=True)
    kek_version = models.PositiveIntegerField(null=True, db_index=True)

    class Meta:
        ordering = ["record", "kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["record", "name"], name="records_section_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of record {self.record_id}"


class GranteeKeyWrap(models.Model):
    """A section's data key wrapped for another hospital's KEK, kept while the
    grant (or declared emergency) that allowed it holds.

    Made by the origin hospital at the first read the grant allows, handed out
    again at later reads (the policy is still asked at every read), and
    destroyed when the patient revokes or replaces that grant, when it expires
    (``records.tasks.grantee_wraps_expire``) and when the record is erased.
    ``basis`` is the ``access`` transaction that allowed it.
    """

    section = models.ForeignKey(
        RecordSection, on_delete=models.CASCADE, related_name="grantee_wraps"
    )
    grantee = models.CharField(max_length=40)  # the hospital's slug
    basis = models.CharField(max_length=64, db_index=True)
    wrap = models.JSONField()
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["section", "grantee", "basis"], name="records_grantee_wrap_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"key of {self.section} for {self.grantee} ({self.basis[:12]})"


class RecordIndex(models.Model):
    """Blind index entries of a record: HMAC of an ICD-10 code or a drug name."""

    class Kind(models.TextChoices):
        ICD10 = "icd10"
        DRUG = "drug"

    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="index_entries")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    digest = models.CharField(max_length=64)

    class Meta:
        indexes = [models.Index(fields=["kind", "digest"], name="records_index_lookup")]
        constraints = [
            models.UniqueConstraint(
                fields=["record", "kind", "digest"], name="records_index_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} index of record {self.record_id}"
