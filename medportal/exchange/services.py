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
from django_tenants.utils import get_public_schema_name, schema_context

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


def records_for_patient(
    *, requester_slug: str, pseudonym: str, recipient_public: bytes, reader
) -> list:
    """The patient's records from every hospital, data keys re-wrapped for them;
    each origin hospital logs the reads (``reader``) in its access log.

    Returns ``records.selectors.SealedRecord`` items, newest first.
    """
    from records.selectors import records_sealed_here

    pseudonyms = patient_pseudonyms(requester_slug=requester_slug, pseudonym=pseudonym)
    sealed = []
    for origin in patient_origins(pseudonyms=pseudonyms):
        with schema_context(origin.schema_name):
            sealed.extend(
                records_sealed_here(
                    tenant=origin,
                    pseudonyms=pseudonyms,
                    recipient_public=recipient_public,
                    reader=reader,
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
            sealed.extend(
                records_sealed_for_hospital(
                    tenant=origin,
                    pseudonyms=pseudonyms,
                    requester_slug=requester.tenant_slug,
                    reader=reader,
                    decide=decide,
                )
            )
    sealed.sort(key=lambda item: item.created_at, reverse=True)
    return sealed
