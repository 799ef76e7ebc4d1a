"""The hub's exchange service: the one place data crosses between tenants.

A hospital never queries another's schema. When a patient at one hospital
asks for their history, the hub

1. works out, from its canonical chain, every pseudonym the patient has
   (``identity`` link transactions) and checks that the asking hospital holds
   an account for one of them (a ``register`` or ``link`` it submitted);
2. finds, from the chain's ``data`` transactions, which hospitals hold records
   under those pseudonyms;
3. in each origin hospital's schema, unwraps each section's data key with that
   hospital's KEK and re-wraps it with HPKE for the patient's X25519 key, and
   returns the ciphertext as stored.

The asking hospital then checks every ciphertext's SHA-256 against the chain's
pointer and decrypts with the patient's key (``records.selectors``). Nothing
decrypted passes through here.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chain.models import PendingTransaction, Transaction, TransactionKind
from medportal.tenants.models import Tenant, TenantKind


def _hub_payloads(query: Q, kind: str) -> list[dict]:
    """Payloads of sealed and still-pending transactions of ``kind`` matching ``query``
    (a record written a moment ago is readable before its block is sealed)."""
    payloads = []
    for model in (Transaction, PendingTransaction):
        payloads.extend(model.objects.filter(query, kind=kind).values_list("payload", flat=True))
    return payloads


def patient_pseudonyms(*, requester_slug: str, pseudonym: str) -> set[str]:
    """Every pseudonym of this patient, as the chain says; PermissionDenied unless
    ``requester_slug`` registered or linked one of them."""
    with schema_context(get_public_schema_name()):
        known = {pseudonym}
        frontier = {pseudonym}
        while frontier:
            links = _hub_payloads(
                Q(payload__action="link", payload__subject__in=frontier), TransactionKind.IDENTITY
            )
            found = {payload["links"] for payload in links if payload.get("links")} - known
            known |= found
            frontier = found
        holds_account = _hub_payloads(
            Q(
                payload__subject_type="patient",
                payload__subject__in=known,
                payload__tenant=requester_slug,
            ),
            TransactionKind.IDENTITY,
        )
    if not holds_account:
        raise PermissionDenied("This hospital holds no account for that patient.")
    return known


def patient_origins(*, pseudonyms: Iterable[str]) -> list[Tenant]:
    """The hospitals whose records the chain lists under any of ``pseudonyms``."""
    with schema_context(get_public_schema_name()):
        slugs = {
            payload["origin"]
            for payload in _hub_payloads(
                Q(payload__patient__in=list(pseudonyms)), TransactionKind.DATA
            )
        }
        return list(Tenant.objects.filter(slug__in=slugs, kind=TenantKind.HOSPITAL))


def records_for_patient(*, requester_slug: str, pseudonym: str, reader) -> list:
    """The patient's records from every hospital, data keys re-wrapped for the
    hospital she is signed in at (``requester_slug``), after the policy's
    "own-record"; each origin hospital logs the reads (``reader``) in its
    access log. Her own private keys stay sealed under her password.

    Returns ``records.selectors.SealedRecord`` items, newest first.
    """
    from consent.policy import Requester, access_decide
    from records.selectors import records_sealed_here

    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=pseudonym)
    # The same decision point as every other read (it answers "own-record").
    requester = Requester(
        role="patient", tenant_slug=requester_slug, patient_pseudonyms=frozenset(pseudonyms)
    )

    def decide(section):
        return access_decide(
            requester=requester, patient_pseudonyms=frozenset(pseudonyms), section=section
        )

    sealed = []
    for origin in patient_origins(pseudonyms=pseudonyms):
        with schema_context(origin.schema_name):
            sealed.extend(
                records_sealed_here(
                    tenant=origin,
                    pseudonyms=pseudonyms,
                    for_hospital=requester_slug,
                    reader=reader,
                    decide=decide,
                )
            )
    sealed.sort(key=lambda item: item.created_at, reverse=True)
    return sealed


def records_for_practitioner(*, requester, reader, pseudonym: str) -> list:
    """Another hospital's records of a patient, for a doctor or admin of ``requester``.

    The asking hospital must hold an account for the patient (their pseudonym
    is registered or linked there). Each origin hospital asks the policy about
    every section (``consent.policy``), logs the read and the refusals in its
    access log, and re-wraps the data keys of the allowed sections for the
    asking hospital's key-encryption key. Refused sections travel without key
    or ciphertext, so the asking doctor sees that they exist and no more.
    """
    from consent.notifications import notify_external_read
    from consent.policy import access_decide, grants_current
    from records.selectors import records_sealed_for_hospital

    pseudonyms = frozenset(
        patient_pseudonyms(requester_slug=requester.tenant_slug, pseudonym=pseudonym)
    )
    grants = grants_current(patient_pseudonyms=pseudonyms)

    def decide(section):
        return access_decide(
            requester=requester, patient_pseudonyms=pseudonyms, section=section, grants=grants
        )

    sealed = []
    for origin in patient_origins(pseudonyms=pseudonyms):
        if origin.slug == requester.tenant_slug:
            continue  # the hospital's own records are read directly
        with schema_context(origin.schema_name):
            from_origin = records_sealed_for_hospital(
                tenant=origin,
                pseudonyms=pseudonyms,
                requester_slug=requester.tenant_slug,
                reader=reader,
                decide=decide,
            )
        sealed.extend(from_origin)
        if any(not s.is_withheld for item in from_origin for s in item.sections):
            # The patient hears of it (once an hour per reader and hospital).
            notify_external_read(
                patient_pseudonyms=pseudonyms,
                reader_name=reader.name,
                reader_tenant_name=reader.tenant_name,
                origin_tenant_name=origin.name,
            )
    sealed.sort(key=lambda item: item.created_at, reverse=True)
    return sealed


def grantee_wraps_destroy(*, pseudonyms: Iterable[str], bases: Iterable[str]) -> int:
    """At every hospital holding the patient's entries: destroy the data keys kept
    for grantees under these ``access`` transactions (a revocation or a
    replacing grant). Returns how many went."""
    from records.services import grantee_wraps_destroy_here

    bases = [basis for basis in bases if basis]
    if not bases:
        return 0
    destroyed = 0
    for origin in patient_origins(pseudonyms=pseudonyms):
        with schema_context(origin.schema_name):
            destroyed += grantee_wraps_destroy_here(bases=bases)
    return destroyed


def grantee_wraps_expire_all() -> int:
    """Beat: at every hospital, destroy the data keys kept under expired grants."""
    from medportal.tenants.selectors import tenant_list_members
    from records.services import grantee_wraps_expire_here

    destroyed = 0
    for tenant in tenant_list_members().filter(kind=TenantKind.HOSPITAL):
        with schema_context(tenant.schema_name):
            destroyed += grantee_wraps_expire_here()
    return destroyed


# --- The practitioner directory ---------------------------------------------------


def practitioner_publish(*, user) -> None:
    """List (or update) a doctor of the current hospital in the hub's directory,
    so patients anywhere can choose them by name. Anyone else who is listed
    (a doctor whose role changed) is marked inactive."""
    from django.db import connection
    from django.utils import timezone

    from accounts.roles import Role
    from medportal.exchange.models import Practitioner
    from records.keys import practitioner_pseudonym

    tenant = connection.tenant
    pseudonym = practitioner_pseudonym(tenant_slug=tenant.slug, user_id=user.pk)
    with schema_context(get_public_schema_name()):
        if user.role != Role.DOCTOR:
            Practitioner.objects.filter(pseudonym=pseudonym).update(is_active=False)
            return
        Practitioner.objects.update_or_create(
            pseudonym=pseudonym,
            defaults={
                "tenant": tenant,
                "display_name": user.display_name,
                "role": user.role,
                "is_active": user.is_active,
                "updated_at": timezone.now(),
            },
        )


def practitioners_backfill() -> int:
    """Publish every doctor of every hospital (for databases made before the
    directory existed; safe to run again). Returns how many were published."""
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from accounts.roles import Role

    with schema_context(get_public_schema_name()):
        hospitals = list(Tenant.objects.filter(kind=TenantKind.HOSPITAL))
    count = 0
    for hospital in hospitals:
        with tenant_context(hospital):
            for user in User.objects.filter(role=Role.DOCTOR):
                practitioner_publish(user=user)
                count += 1
    return count


def patient_log_hospitals(*, requester_slug: str, pseudonyms: Iterable[str]) -> list[Tenant]:
    """The hospitals whose access logs may hold entries about this patient: those
    holding their records (``data`` transactions), those where they hold an
    account (``identity`` transactions: a refused look at their profile is
    logged there), and the asking hospital. Ordered by slug."""
    pseudonyms = list(pseudonyms)
    with schema_context(get_public_schema_name()):
        slugs = {
            payload["origin"]
            for payload in _hub_payloads(Q(payload__patient__in=pseudonyms), TransactionKind.DATA)
        }
        slugs |= {
            payload["tenant"]
            for payload in _hub_payloads(
                Q(payload__subject_type="patient", payload__subject__in=pseudonyms),
                TransactionKind.IDENTITY,
            )
        }
        slugs.add(requester_slug)
        return list(
            Tenant.objects.filter(slug__in=slugs, kind=TenantKind.HOSPITAL).order_by("slug")
        )


def access_log_for_patient(*, requester_slug: str, pseudonym: str, filters):
    """The patient's access log merged from every hospital that may hold entries
    about them, newest first, one page (``consent.selectors.AccessLogPage``).

    ``filters`` is a ``consent.selectors.AccessLogFilters``. PermissionDenied
    unless ``requester_slug`` holds an account for the patient. Each hospital's
    schema is read for entries under any of the patient's pseudonyms only.
    """
    from consent.selectors import access_log_page, access_log_rows_here

    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=pseudonym)
    hospitals = patient_log_hospitals(requester_slug=requester_slug, pseudonyms=pseudonyms)
    rows = []
    for hospital in hospitals:
        if filters.hospital and hospital.slug != filters.hospital:
            continue
        with schema_context(hospital.schema_name):
            rows.extend(
                access_log_rows_here(
                    hospital=hospital, pseudonyms=pseudonyms, filters=filters, for_patient=True
                )
            )
    return access_log_page(rows, filters=filters, hospitals=hospitals)


def access_log_entry_for_patient(
    *, requester_slug: str, pseudonym: str, hospital_slug: str, entry_id: int
):
    """(hospital, ``consent.selectors.LogRow``, hash of the entry's contents) of
    one entry of the patient's log, or None when ``hospital_slug`` keeps no log
    about them or the entry is not about them."""
    from consent.models import AccessLogEntry, access_log_entry_hash
    from consent.selectors import access_log_rows

    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=pseudonym)
    hospitals = patient_log_hospitals(requester_slug=requester_slug, pseudonyms=pseudonyms)
    hospital = next((tenant for tenant in hospitals if tenant.slug == hospital_slug), None)
    if hospital is None:
        return None
    with schema_context(hospital.schema_name):
        entry = AccessLogEntry.objects.filter(
            id=entry_id, patient_pseudonym__in=list(pseudonyms)
        ).first()
        if entry is None:
            return None
        row = access_log_rows(hospital=hospital, entries=[entry], for_patient=True)[0]
        content_hash = access_log_entry_hash(entry.hashed_values())
    return hospital, row, content_hash


def patient_keys_propagate(*, requester_slug: str, pseudonym: str, keys: dict) -> int:
    """After a key recovery at ``requester_slug``: every hospital holding the
    patient's accounts or entries updates them (public keys, the encryption key,
    the data keys wrapped for the patient). Returns the sections re-wrapped."""
    from records.services import patient_keys_here_update

    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=pseudonym)
    hospitals = {tenant.slug: tenant for tenant in patient_origins(pseudonyms=pseudonyms)}
    with schema_context(get_public_schema_name()):
        holding = {
            payload["tenant"]
            for payload in _hub_payloads(
                Q(payload__subject__in=list(pseudonyms), payload__action__in=["register", "link"]),
                TransactionKind.IDENTITY,
            )
        }
        hospitals.update(
            {t.slug: t for t in Tenant.objects.filter(slug__in=holding, kind=TenantKind.HOSPITAL)}
        )
    rewrapped = 0
    for tenant in hospitals.values():
        with tenant_context(tenant):
            rewrapped += patient_keys_here_update(pseudonyms=pseudonyms, keys=keys)
    return rewrapped


def record_origin(*, record_id: str) -> tuple[Tenant, str] | None:
    """(origin hospital, patient pseudonym) of a record, as its chain entry says;
    None for an id the chain does not know."""
    try:
        payloads = _hub_payloads(Q(payload__record=record_id), TransactionKind.DATA)
    except ValueError:
        return None
    if not payloads:
        return None
    payload = payloads[0]
    with schema_context(get_public_schema_name()):
        origin = Tenant.objects.filter(slug=payload["origin"], kind=TenantKind.HOSPITAL).first()
    return (origin, payload["patient"]) if origin else None
