"""The ledger's tables.

Every schema has them: the hub's public schema holds the canonical chain, each
tenant schema its replica. ``PendingTransaction`` and ``Outbox`` are used on
the hub only (the copies in tenant schemas stay empty). Blocks and
transactions are append-only: a trigger (migration 0002) refuses UPDATE and
DELETE in every schema.
"""

from __future__ import annotations

from django.db import models
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from chain.encoding import ENVELOPE_FIELDS, HEADER_FIELDS, fields_of


class TransactionKind(models.TextChoices):
    DATA = "data", "Record stored"
    ACCESS = "access", "Consent policy"
    IDENTITY = "identity", "Identity key"
    REQUEST = "request", "Research request"
    ANCHOR = "anchor", "Access-log anchor"


class Block(models.Model):
    height = models.PositiveBigIntegerField(unique=True)
    previous_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    proposer = models.CharField(max_length=64)
    merkle_root = models.CharField(max_length=64)
    transaction_count = models.PositiveIntegerField()
    hub_signature = models.CharField(max_length=128)
    hash = models.CharField(max_length=64, unique=True)
    encoding_version = models.PositiveSmallIntegerField(default=1)
    # When this copy was written (on the hub: appended; on a replica: applied).
    stored_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["height"]

    def __str__(self) -> str:
        return f"block {self.height}"

    def header_fields(self) -> dict:
        return fields_of(self, HEADER_FIELDS)


class SignedTransaction(models.Model):
    """What an author signs, and the resulting hash (see chain.encoding)."""

    kind = models.CharField(max_length=16, choices=TransactionKind.choices)
    author = models.CharField(max_length=64)
    payload = models.JSONField()
    timestamp = models.DateTimeField()
    signature = models.CharField(max_length=128)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.kind} {self.hash[:12]}"

    def envelope(self) -> dict:
        return fields_of(self, ENVELOPE_FIELDS)


# The hub's exchange looks transactions up by who or what they are about: the patient
# of a ``data`` transaction, the subject of an ``identity`` one.
PAYLOAD_INDEXES = (("patient", "patient"), ("subject", "subject"), ("record", "record"))


def _payload_indexes(prefix: str) -> list[models.Index]:
    return [
        models.Index("kind", KeyTransform(key, "payload"), name=f"{prefix}_{label}")
        for key, label in PAYLOAD_INDEXES
    ]


class Transaction(SignedTransaction):
    block = models.ForeignKey(Block, on_delete=models.PROTECT, related_name="transactions")
    index = models.PositiveIntegerField()
    encoding_version = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["block_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["block", "index"], name="chain_transaction_position"),
        ]
        indexes = _payload_indexes("chain_tx")


class PendingTransaction(SignedTransaction):
    """Accepted by the hub, waiting to be sealed into a block (hub only)."""

    submitted_by = models.CharField(max_length=64)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = _payload_indexes("chain_pending")


class Outbox(models.Model):
    """One row per (block, tenant): the block must reach that tenant (hub only)."""

    block = models.ForeignKey(Block, on_delete=models.PROTECT, related_name="+")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["block", "tenant"], name="chain_outbox_once"),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "created_at"],
                name="chain_outbox_open",
                condition=models.Q(confirmed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"outbox block {self.block_id} -> tenant {self.tenant_id}"


class RegisteredKey(models.Model):
    """Public keys registered by ``identity`` transactions, as this copy of the
    chain says. Derived from the chain: rebuilt as blocks are applied."""

    class OwnerType(models.TextChoices):
        HUB = "hub"
        TENANT = "tenant"
        PATIENT = "patient"
        PRACTITIONER = "practitioner"

    key_id = models.CharField(max_length=64, unique=True)
    public_key = models.CharField(max_length=64)
    owner_type = models.CharField(max_length=16, choices=OwnerType.choices)
    owner = models.CharField(max_length=128)
    # The tenant the key acts for: its own slug, or the hospital of a patient/doctor.
    tenant = models.CharField(max_length=64)
    tenant_kind = models.CharField(max_length=16)
    registered_height = models.PositiveBigIntegerField()
    revoked_height = models.PositiveBigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.owner_type} {self.owner} ({self.key_id})"


class SigningKey(models.Model):
    """This schema's own private signing key(s), encrypted under the master key."""

    owner = models.CharField(max_length=64)
    key_id = models.CharField(max_length=64, unique=True)
    public_key = models.CharField(max_length=64)
    sealed_private_key = models.TextField()
    key_version = models.PositiveSmallIntegerField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=models.Q(is_active=True), name="chain_one_active_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key_id}"


class ChainState(models.Model):
    """One row per schema: how far this copy of the chain goes and how it last verified."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    height = models.BigIntegerField(default=-1)
    head_hash = models.CharField(max_length=64, blank=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_verified_height = models.BigIntegerField(default=-1)
    last_verified_hash = models.CharField(max_length=64, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_verification_ok = models.BooleanField(null=True)
    last_verification_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="chain_state_single")]

    def __str__(self) -> str:
        return f"chain state at {self.height}"
