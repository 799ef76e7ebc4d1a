"""Writes to the access log: appending entries and anchoring them on the ledger.

``access_log_append`` writes in the *current* schema, which must be the
hospital that holds the record read (the read path enters it with
``tenant_context``). ``access_log_anchor`` enters the hospital's schema itself.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chain.encoding import GENESIS_PREVIOUS_HASH
from chain.merkle import merkle_root
from chain.models import TransactionKind
from chain.services import transaction_submit
from consent.models import (
    AccessLogAnchor,
    AccessLogEntry,
    Decision,
    Purpose,
    access_log_entry_hash,
)
from medportal.tenants.models import Tenant, TenantKind

logger = logging.getLogger(__name__)

# pg advisory locks, one per hospital schema: the chain's replica locks use
# 0x4D50_xxxx_xxxx, so these ranges never meet theirs.
APPEND_LOCK_BASE = 0x4D52_0000_0000
ANCHOR_LOCK_BASE = 0x4D53_0000_0000
# Entries per anchor: bounds the Merkle tree a proof or a verification rebuilds.
ANCHOR_BATCH_SIZE = 10_000
# Anchors per hospital per beat run: a backlog is worked off in a few runs
# without one run holding the worker for long.
ANCHORS_PER_RUN = 10


class AccessLogError(ValueError):
    """The access log cannot be written here or with these values."""


def _lock(key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _lock_key(base: int, schema_name: str) -> int:
    return base + zlib.crc32(schema_name.encode())


def _current_hospital() -> Tenant:
    tenant = getattr(connection, "tenant", None)
    if not isinstance(tenant, Tenant):  # schema_context gives a stand-in: look it up
        schema_name = connection.schema_name
        with schema_context(get_public_schema_name()):
            tenant = Tenant.objects.filter(schema_name=schema_name).first()
    if tenant is None or tenant.kind != TenantKind.HOSPITAL:
        raise AccessLogError("the access log is kept in a hospital's schema")
    return tenant


def _next_entry_ids(count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [AccessLogEntry._meta.db_table, count],
        )
        return sorted(row[0] for row in cursor.fetchall())


@transaction.atomic
def access_log_append(
    *,
    reader_name: str,
    reader_role: str,
    reader_tenant: str,
    reader_tenant_name: str,
    patient_pseudonym: str,
    record_id: str = "",
    sections: Iterable[str] = (),
    purpose: str,
    decision: str,
    reason: str,
    is_emergency: bool = False,
    reader_pseudonym: str = "",
) -> AccessLogEntry:
    """Append one entry to the current hospital's access log, linked to the last.

    Takes no record content, only identifiers: ``reason`` names the grant, rule
    or refusal (for example a transaction hash or ``default:own-hospital``).

    Entries are chained in id order: the id is drawn and the last hash read
    under a per-schema advisory lock held until commit, so ids grow with the
    chain and no entry commits with a lower id than one already visible.
    Call it outside long transactions (the lock is held to the outermost
    commit), and for a denied read in a transaction of its own, so that the
    refusal that rolls back the read does not roll back its log entry.
    """
    return access_log_append_many(
        [
            {
                "reader_name": reader_name,
                "reader_role": reader_role,
                "reader_tenant": reader_tenant,
                "reader_tenant_name": reader_tenant_name,
                "reader_pseudonym": reader_pseudonym,
                "patient_pseudonym": patient_pseudonym,
                "record_id": record_id,
                "sections": sections,
                "purpose": purpose,
                "decision": decision,
                "reason": reason,
                "is_emergency": is_emergency,
            }
        ]
    )[0]


@transaction.atomic
def access_log_append_many(entries: list[dict]) -> list[AccessLogEntry]:
    """Append several entries (each with :func:`access_log_append`'s arguments)
    in order, under one lock, one read of the last hash and one insert: a read
    of a whole history logs each entry without a round of queries per entry."""
    if not entries:
        return []
    hospital = _current_hospital()
    now = timezone.now()
    built = []
    for fields in entries:
        sections = list(fields.get("sections", ()))
        if not all(isinstance(section, str) for section in sections):
            raise AccessLogError("sections are section names")
        try:
            purpose = Purpose(fields["purpose"]).value
            decision = Decision(fields["decision"]).value
        except ValueError as error:
            raise AccessLogError(str(error)) from None
        built.append(
            AccessLogEntry(
                created_at=now,
                reader_name=fields["reader_name"],
                reader_role=fields["reader_role"],
                reader_tenant=fields["reader_tenant"],
                reader_tenant_name=fields["reader_tenant_name"],
                reader_pseudonym=fields.get("reader_pseudonym", ""),
                patient_pseudonym=fields["patient_pseudonym"],
                record_id=str(fields.get("record_id", "")),
                sections=sections,
                purpose=purpose,
                decision=decision,
                reason=fields["reason"],
                is_emergency=bool(fields.get("is_emergency", False)),
            )
        )
    _lock(_lock_key(APPEND_LOCK_BASE, hospital.schema_name))
    previous_hash = (
        AccessLogEntry.objects.order_by("-id").values_list("hash", flat=True).first()
        or GENESIS_PREVIOUS_HASH
    )
    for entry, entry_id in zip(built, _next_entry_ids(len(built)), strict=True):
        entry.id = entry_id
        entry.previous_hash = previous_hash
        entry.hash = previous_hash = access_log_entry_hash(entry.hashed_values())
    AccessLogEntry.objects.bulk_create(built)
    return built


def access_log_anchor(*, tenant: Tenant) -> AccessLogAnchor | None:
    """Anchor the entries after the last anchor (up to ``ANCHOR_BATCH_SIZE``)
    with an ``anchor`` transaction; None when there is nothing new.

    The anchor row and the hub's pending transaction are written in one
    database transaction, so neither exists without the other. Safe to run
    twice at once: a per-schema lock serialises anchoring.
    """
    if tenant.kind != TenantKind.HOSPITAL:
        raise AccessLogError(f"{tenant.slug} is not a hospital")
    with tenant_context(tenant), transaction.atomic():
        _lock(_lock_key(ANCHOR_LOCK_BASE, tenant.schema_name))
        after = (
            AccessLogAnchor.objects.order_by("-last_entry")
            .values_list("last_entry", flat=True)
            .first()
            or 0
        )
        rows = list(
            AccessLogEntry.objects.filter(id__gt=after)
            .order_by("id")
            .values_list("id", "hash")[:ANCHOR_BATCH_SIZE]
        )
        if not rows:
            return None
        first_entry, last_entry = rows[0][0], rows[-1][0]
        root = merkle_root([entry_hash for _, entry_hash in rows])
        pending = transaction_submit(
            tenant=tenant,
            kind=TransactionKind.ANCHOR,
            payload={
                "tenant": tenant.slug,
                "first_entry": first_entry,
                "last_entry": last_entry,
                "root": root,
            },
        )
        return AccessLogAnchor.objects.create(
            first_entry=first_entry, last_entry=last_entry, root=root, tx_hash=pending.hash
        )


def access_log_anchor_hospitals() -> int:
    """Anchor new entries at every hospital; returns the number of anchors made.

    One hospital's failure is logged and does not stop the others."""
    from medportal.tenants.selectors import tenant_list_members

    made = 0
    for tenant in tenant_list_members().filter(kind=TenantKind.HOSPITAL):
        try:
            for _ in range(ANCHORS_PER_RUN):
                if access_log_anchor(tenant=tenant) is None:
                    break
                made += 1
        except Exception:  # the next run retries this hospital
            logger.exception("anchoring the access log of %s failed", tenant.slug)
    return made
