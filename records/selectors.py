"""Reads of patients and records, with the rules of who may read what.

* Doctors and admins: their own hospital's patients and records (decrypted with
  the hospital's key-encryption key).
* Patients: only their own records, from every hospital where they are linked,
  fetched through the hub's exchange service and decrypted with their own key.
* Nobody else; a record or patient someone may not see is "not found" (404),
  so its existence is not confirmed either.

Every ciphertext is checked against the chain's SHA-256 pointer before it is
decrypted; a mismatch or a failed decryption marks that entry with an
integrity error instead of showing anything from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time

from django.db import connection, transaction
from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.models import PendingTransaction, Transaction
from consent.models import Decision as LogDecision
from consent.models import Purpose
from consent.policy import Decision, Requester, SectionRef, access_decide, grants_current
from consent.services import access_log_append, access_log_append_many
from records.categories import CATEGORY_LEVEL
from records.content import content_join
from records.crypto import (
    RecordCryptoError,
    SectionContext,
    WrappedKey,
    get_key_provider,
    open_section,
    unwrap_for_tenant,
    wrap_for_tenant,
)
from records.keys import blind_index, practitioner_pseudonym
from records.models import GranteeKeyWrap, Patient, Record, RecordIndex, RecordSection
from records.services import PatientIdentity, patient_identity, record_store
from records.store import StoreError

logger = logging.getLogger(__name__)

STAFF = (Role.ADMIN, Role.DOCTOR)


def _is_staff(user: User) -> bool:
    return user_has_role(user, STAFF)


def _tenant():
    return connection.tenant


# --- The access log ---------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """Who is reading, as the access log of the record's hospital records them."""

    name: str
    role: str
    tenant_slug: str
    tenant_name: str
    pseudonym: str = ""

    @property
    def purpose(self) -> str:
        return {
            Role.DOCTOR: Purpose.TREATMENT,
            Role.ADMIN: Purpose.ADMINISTRATION,
            Role.PATIENT: Purpose.PATIENT_ACCESS,
            Role.RESEARCHER: Purpose.RESEARCH,
        }.get(self.role, Purpose.ADMINISTRATION)


def reader_for(user: User) -> Reader:
    tenant = _tenant()
    if user.role == Role.PATIENT:
        return Reader("the patient", user.role, tenant.slug, tenant.name)
    return Reader(
        user.display_name,
        user.role,
        tenant.slug,
        tenant.name,
        practitioner_pseudonym(tenant_slug=tenant.slug, user_id=user.pk),
    )


def _log_fields(
    reader: Reader,
    *,
    patient_pseudonym: str,
    decision: str,
    reason: str,
    record_id: str = "",
    sections: Iterable[str] = (),
    is_emergency: bool = False,
) -> dict:
    return {
        "reader_name": reader.name,
        "reader_role": reader.role,
        "reader_tenant": reader.tenant_slug,
        "reader_tenant_name": reader.tenant_name,
        "reader_pseudonym": reader.pseudonym,
        "patient_pseudonym": patient_pseudonym,
        "record_id": record_id,
        "sections": sections,
        "purpose": reader.purpose,
        "decision": decision,
        "reason": reason[:500],
        "is_emergency": is_emergency,
    }


def _log(reader: Reader, **fields) -> None:
    access_log_append(**_log_fields(reader, **fields))


def access_log_reads(*, reader: Reader, sealed: Iterable[SealedRecord], reason: str) -> None:
    """Log each record read in the current (the records') hospital: one "allow"
    entry for the sections opened and one "deny" entry for those withheld, each
    with the policy's reasons (``reason`` where no policy answer is attached)."""
    entries = []
    for item in sealed:
        opened = [section for section in item.sections if not section.is_withheld]
        withheld = [section for section in item.sections if section.is_withheld]
        for sections, decision in ((opened, LogDecision.ALLOW), (withheld, LogDecision.DENY)):
            if not sections and (decision == LogDecision.DENY or item.sections):
                continue
            reasons = sorted(
                {section.decision.reason for section in sections if section.decision}
            ) or [reason]
            entries.append(
                _log_fields(
                    reader,
                    patient_pseudonym=item.patient_pseudonym,
                    record_id=item.id,
                    sections=[section.name for section in sections],
                    decision=decision,
                    reason=";".join(reasons),
                    is_emergency=any(
                        section.decision and section.decision.is_emergency for section in sections
                    ),
                )
            )
    access_log_append_many(entries)


def _access_log_denied(
    *, user: User, patient_pseudonym: str, record_id: str = "", reason: str
) -> None:
    """A refused attempt, committed on its own so the refusal cannot roll it back."""
    with transaction.atomic():
        _log(
            reader_for(user),
            patient_pseudonym=patient_pseudonym,
            record_id=record_id,
            decision=LogDecision.DENY,
            reason=reason,
        )


# --- Patients ---------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRow:
    patient: Patient
    identity: PatientIdentity | None
    error: str = ""

    @property
    def id(self):
        return self.patient.id


def _with_identity(patients: Iterable[Patient]) -> list[PatientRow]:
    rows = []
    for patient in patients:
        try:
            rows.append(PatientRow(patient, patient_identity(patient)))
        except (RecordCryptoError, ValueError) as error:
            logger.warning("patient identity does not open: %s", error)
            rows.append(PatientRow(patient, None, "The identity does not decrypt."))
    return rows


def patient_list_for_user(*, user: User, query: str = "") -> list[PatientRow]:
    """This hospital's patients for a doctor or admin; ``query`` is an exact record
    number or an exact full name (blind indexes: no partial matches)."""
    if not _is_staff(user):
        raise Http404("No such page.")
    patients = Patient.objects.all()
    query = (query or "").strip()
    if query:
        slug = _tenant().slug
        patients = patients.filter(
            record_number_index=blind_index(tenant_slug=slug, kind="record-number", value=query)
        ) | patients.filter(name_index=blind_index(tenant_slug=slug, kind="name", value=query))
    rows = _with_identity(patients.order_by("created_at"))
    return sorted(
        rows,
        key=lambda row: (
            row.identity is None,
            row.identity and row.identity.family_name.casefold(),
        ),
    )


def patient_get_for_user(*, user: User, patient_id) -> PatientRow:
    """One patient: staff of this hospital, or the patient themself; else 404."""
    if _is_staff(user):
        patient = Patient.objects.filter(pk=patient_id).first()
    elif user_has_role(user, (Role.PATIENT,)):
        patient = Patient.objects.filter(pk=patient_id, user=user).first()
        if patient is None:
            _log_if_exists(user=user, patient_id=patient_id, reason="deny:not-own-profile")
    else:
        patient = None
    if patient is None:
        raise Http404("No such patient.")
    return _with_identity([patient])[0]


def patient_for_account(*, user: User) -> Patient:
    """The signed-in patient's own profile at this hospital; 404 for anyone else."""
    if not user_has_role(user, (Role.PATIENT,)):
        raise Http404("No such page.")
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        raise Http404("This account has no patient profile yet.")
    return patient


def patient_display_name(*, user: User) -> str:
    """The signed-in patient's own name, for the page header; "" if unknown."""
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        return ""
    row = _with_identity([patient])[0]
    return row.identity.full_name if row.identity else ""


def record_search_for_user(*, user: User, icd10: str = "", drug: str = "") -> list[Record]:
    """Records of this hospital with an exact ICD-10 code or drug name (blind index)."""
    if not _is_staff(user):
        raise Http404("No such page.")
    slug = _tenant().slug
    wanted = []
    if icd10.strip():
        from records.content import icd10_normalise

        wanted.append(
            (
                RecordIndex.Kind.ICD10,
                blind_index(tenant_slug=slug, kind="icd10", value=icd10_normalise(icd10)),
            )
        )
    if drug.strip():
        wanted.append(
            (RecordIndex.Kind.DRUG, blind_index(tenant_slug=slug, kind="drug", value=drug))
        )
    if not wanted:
        return []
    records = Record.objects.filter(erased_at__isnull=True)
    for kind, digest in wanted:
        records = records.filter(index_entries__kind=kind, index_entries__digest=digest)
    return list(records.select_related("patient", "author").distinct().order_by("-created_at"))


def record_get_for_user(*, user: User, record_id) -> Record:
    """A record of this hospital that ``user`` may read: staff here, or its patient."""
    records = Record.objects.select_related("patient", "author")
    if _is_staff(user):
        record = records.filter(pk=record_id).first()
    elif user_has_role(user, (Role.PATIENT,)):
        record = records.filter(pk=record_id, patient__user=user).first()
        if record is None:
            _log_if_exists(user=user, record_id=record_id, reason="deny:not-own-record")
    else:
        record = None
    if record is None:
        if _is_staff(user):
            _log_if_exists(user=user, record_id=record_id, reason="deny:other-hospital-record")
        raise Http404("No such record.")
    return record


def _log_if_exists(*, user: User, reason: str, record_id=None, patient_id=None) -> None:
    """Log a refused attempt at a record or patient that exists, in the access log
    of the hospital that holds it: here, or (a record id from another hospital)
    the origin the chain names. An id that exists nowhere is just "not found",
    with nothing to log against."""
    if record_id is not None:
        found = Record.objects.filter(pk=record_id).values_list("patient_pseudonym", flat=True)
    else:
        found = Patient.objects.filter(pk=patient_id).values_list("pseudonym", flat=True)
    pseudonym = found.first()
    if pseudonym is not None:
        _access_log_denied(
            user=user,
            patient_pseudonym=pseudonym,
            record_id=str(record_id or ""),
            reason=reason,
        )
        return
    if record_id is None:
        return
    from medportal.exchange.services import record_origin

    held = record_origin(record_id=str(record_id))
    if held is None or held[0].slug == _tenant().slug:
        return
    origin, pseudonym = held
    reader = reader_for(user)  # who asks, from where: before entering the origin
    with tenant_context(origin), transaction.atomic():
        _log(
            reader,
            patient_pseudonym=pseudonym,
            record_id=str(record_id),
            decision=LogDecision.DENY,
            reason=reason,
        )


# --- Sealed records (what an origin hospital hands out) ---------------------------


@dataclass
class SealedSection:
    name: str
    kind: str
    level: str
    category: str
    content_type: str
    sha256: str
    ciphertext: bytes | None = field(repr=False, default=None)
    nonce: bytes = b""
    # Exactly one of these: the data key itself (a read inside the origin
    # hospital) or the data key wrapped for the reader's hospital's KEK (a read
    # through the exchange: a doctor elsewhere, or the patient signed in there).
    data_key: bytes | None = field(repr=False, default=None)
    hospital_wrap: WrappedKey | None = field(repr=False, default=None)
    error: str = ""
    # The policy's answer for this reader; a withheld section carries no key
    # and no ciphertext.
    decision: Decision | None = None

    @property
    def is_withheld(self) -> bool:
        return self.decision is not None and not self.decision.allowed


@dataclass
class SealedRecord:
    id: str
    origin_slug: str
    origin_name: str
    patient_pseudonym: str
    created_at: datetime
    author_name: str
    amends_id: str | None
    categories: list[str]
    tx_hash: str
    erased_at: datetime | None
    erasure_reason: str
    sections: list[SealedSection]


def section_ref(record: Record, section: RecordSection, origin: str) -> SectionRef:
    """A section as the policy sees it: its level and the categories inside it."""
    if section.kind == RecordSection.Kind.ATTACHMENT:
        categories: tuple[str, ...] = (section.category,)
    else:
        categories = tuple(c for c in record.categories if CATEGORY_LEVEL[c] == section.level)
    return SectionRef(
        origin=origin, level=section.level, categories=categories, author=record.author_pseudonym
    )


def _seal_for_reader(
    record: Record,
    tenant,
    decide: Callable[[SectionRef], Decision] | None = None,
    for_hospital: str | None = None,
) -> SealedRecord:
    """A record's sections ready for one reader: ``decide`` (the policy) is asked
    for each section, and a refused one is handed out without key or ciphertext."""
    store = record_store(tenant.schema_name)
    sections = []
    for section in record.sections.all():
        out = SealedSection(
            name=section.name,
            kind=section.kind,
            level=section.level,
            category=section.category,
            content_type=section.content_type,
            sha256=section.sha256,
            nonce=bytes(section.nonce),
        )
        sections.append(out)
        if record.is_erased or section.tenant_wrap is None:
            continue
        if decide is not None:
            out.decision = decide(section_ref(record, section, tenant.slug))
            if not out.decision.allowed:
                continue
        context = SectionContext(
            record_id=str(record.id),
            section=section.name,
            patient_pseudonym=record.patient_pseudonym,
        )
        try:
            if for_hospital is None:
                out.data_key = unwrap_for_tenant(
                    WrappedKey.from_dict(section.tenant_wrap), tenant=tenant.slug, context=context
                )
            else:
                out.hospital_wrap = _wrap_for_hospital(
                    section,
                    origin=tenant.slug,
                    for_hospital=for_hospital,
                    decision=out.decision,
                    context=context,
                )
        except (RecordCryptoError, ValueError) as error:
            # A retired key version's message names only the tenant: add the record.
            message = str(error)
            out.error = message if str(record.id) in message else f"{context.describe()}: {message}"
            continue
        try:
            # The store checks the blob against its name; the reader checks it
            # against the chain's pointer again, and that check is the one that counts.
            out.ciphertext = store.get(section.sha256)
        except StoreError as error:
            out.error = (
                f"the ciphertext of {context.describe()} cannot be read: {type(error).__name__}"
            )
    return SealedRecord(
        id=str(record.id),
        origin_slug=tenant.slug,
        origin_name=tenant.name,
        patient_pseudonym=record.patient_pseudonym,
        created_at=record.created_at,
        author_name=record.author.display_name,
        amends_id=str(record.amends_id) if record.amends_id else None,
        categories=list(record.categories),
        tx_hash=record.tx_hash,
        erased_at=record.erased_at,
        erasure_reason=record.erasure_reason,
        sections=sections,
    )


def _wrap_for_hospital(
    section: RecordSection,
    *,
    origin: str,
    for_hospital: str,
    decision: Decision | None,
    context: SectionContext,
) -> WrappedKey:
    """The section's data key for ``for_hospital``'s KEK. Allowed by a grant or an
    emergency, the wrap is kept (:class:`GranteeKeyWrap`) until that grant is
    revoked, replaced or expires; the policy has already said yes for this read.
    Other reads (a patient's own, through her hospital) are wrapped each time."""
    basis = decision.grant if decision is not None else ""
    current = get_key_provider().current_version(for_hospital)
    if basis:
        kept = next(
            (
                item
                for item in section.grantee_wraps.all()
                if item.grantee == for_hospital and item.basis == basis
            ),
            None,
        )
        if kept is not None and kept.wrap.get("kek_version") == current:
            return WrappedKey.from_dict(kept.wrap)
    data_key = unwrap_for_tenant(
        WrappedKey.from_dict(section.tenant_wrap), tenant=origin, context=context
    )
    wrapped = wrap_for_tenant(data_key, tenant=for_hospital, context=context, version=current)
    if basis:
        GranteeKeyWrap.objects.update_or_create(
            section=section,
            grantee=for_hospital,
            basis=basis,
            defaults={"wrap": wrapped.to_dict(), "expires_at": decision.expires_at},
        )
    return wrapped


def records_sealed_for_hospital(
    *,
    tenant,
    pseudonyms: Iterable[str],
    requester_slug: str,
    reader: Reader,
    decide: Callable[[SectionRef], Decision],
) -> list[SealedRecord]:
    """Called by the hub's exchange inside an origin hospital's schema for a doctor
    of ``requester_slug``: allowed sections re-wrapped for that hospital, every
    read and refusal logged here."""
    records = (
        Record.objects.filter(patient_pseudonym__in=list(pseudonyms))
        .select_related("author")
        .prefetch_related(
            "sections",
            Prefetch(
                "sections__grantee_wraps",
                queryset=GranteeKeyWrap.objects.filter(grantee=requester_slug),
            ),
        )
        .order_by("-created_at")
    )
    sealed = [
        _seal_for_reader(record, tenant, decide, for_hospital=requester_slug) for record in records
    ]
    access_log_reads(reader=reader, sealed=sealed, reason="exchange")
    return sealed


def records_sealed_here(
    *,
    tenant,
    pseudonyms: Iterable[str],
    for_hospital: str,
    reader: Reader,
    decide: Callable[[SectionRef], Decision] | None = None,
) -> list[SealedRecord]:
    """Called by the hub's exchange inside an origin hospital's schema for a
    patient signed in at ``for_hospital`` (data keys wrapped for that hospital,
    which opens them for her); the reads land in this hospital's access log."""
    records = (
        Record.objects.filter(patient_pseudonym__in=list(pseudonyms))
        .select_related("author")
        .prefetch_related("sections")
        .order_by("-created_at")
    )
    sealed = [
        _seal_for_reader(record, tenant, decide, for_hospital=for_hospital) for record in records
    ]
    access_log_reads(reader=reader, sealed=sealed, reason="own-record")
    return sealed


# --- Opening (the reader's side) --------------------------------------------------


@dataclass
class Attachment:
    name: str
    category: str
    content_type: str
    filename: str
    size: int
    data: bytes | None = field(repr=False, default=None)


@dataclass
class RecordView:
    """A decrypted record as pages, the API and FHIR show it."""

    id: str
    origin_slug: str
    origin_name: str
    created_at: datetime
    author_name: str
    amends_id: str | None
    categories: list[str]
    tx_hash: str
    block_height: int | None
    is_erased: bool
    erasure_reason: str
    content: dict | None
    attachments: list[Attachment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    amended_by: list[str] = field(default_factory=list)
    # Sections the reader may not see (the policy refused them): named, not shown.
    withheld: list[str] = field(default_factory=list)

    @property
    def has_integrity_error(self) -> bool:
        return bool(self.errors)


def chain_pointers(tx_hashes: Iterable[str]) -> dict[str, tuple[dict, int | None]]:
    """tx hash -> (payload, block height or None) from this tenant's replica,
    falling back to the hub's canonical chain for transactions not yet delivered
    (or not yet sealed). The payload's ``ciphertexts`` are the pointers."""
    wanted = set(tx_hashes)
    found = {
        row["hash"]: (row["payload"], row["block__height"])
        for row in Transaction.objects.filter(hash__in=wanted).values(
            "hash", "payload", "block__height"
        )
    }
    missing = wanted - set(found)
    if missing:
        with schema_context(get_public_schema_name()):
            for row in Transaction.objects.filter(hash__in=missing).values(
                "hash", "payload", "block__height"
            ):
                found[row["hash"]] = (row["payload"], row["block__height"])
            for row in PendingTransaction.objects.filter(hash__in=missing - set(found)).values(
                "hash", "payload"
            ):
                found[row["hash"]] = (row["payload"], None)
    return found


def _open_record(
    sealed: SealedRecord,
    pointer: tuple[dict, int | None] | None,
) -> RecordView:
    view = RecordView(
        id=sealed.id,
        origin_slug=sealed.origin_slug,
        origin_name=sealed.origin_name,
        created_at=sealed.created_at,
        author_name=sealed.author_name,
        amends_id=sealed.amends_id,
        categories=sealed.categories,
        tx_hash=sealed.tx_hash,
        block_height=pointer[1] if pointer else None,
        is_erased=sealed.erased_at is not None,
        erasure_reason=sealed.erasure_reason,
        content=None,
    )
    if view.is_erased:
        return view
    if pointer is None:
        view.errors.append("This entry is not on the chain.")
        return view
    payload = pointer[0]
    pointers = payload.get("ciphertexts", {})
    if payload.get("record") != sealed.id or payload.get("patient") != sealed.patient_pseudonym:
        view.errors.append("The chain's entry belongs to another record.")
        return view
    parts: dict[str, dict] = {}
    for section in sealed.sections:
        context = SectionContext(
            record_id=sealed.id, section=section.name, patient_pseudonym=sealed.patient_pseudonym
        )
        if section.is_withheld:
            view.withheld.append(section.name)
            continue
        if section.error:
            view.errors.append(section.error)
            continue
        expected = pointers.get(section.name)
        if section.ciphertext is None or expected is None:
            view.errors.append(f"{context.describe()} is missing.")
            continue
        if hashlib.sha256(section.ciphertext).hexdigest() != expected:
            # Loud: someone changed or swapped the stored ciphertext.
            logger.error(
                "ciphertext does not match the chain's pointer: %s (tx %s)",
                context.describe(),
                sealed.tx_hash,
            )
            view.errors.append(
                f"{context.describe()} does not match the chain's pointer: it was altered."
            )
            continue
        try:
            data_key = section.data_key
            if data_key is None:
                if section.hospital_wrap is None:
                    raise RecordCryptoError(f"{context.describe()} came without a key")
                data_key = unwrap_for_tenant(
                    section.hospital_wrap, tenant=_tenant().slug, context=context
                )
            plaintext = open_section(section.ciphertext, section.nonce, data_key, context)
        except RecordCryptoError as error:
            logger.error("record section does not decrypt: %s", error)
            view.errors.append(str(error))
            continue
        if section.kind == RecordSection.Kind.ATTACHMENT:
            header, _, body = plaintext.partition(b"\n")
            meta = json.loads(header)
            view.attachments.append(
                Attachment(
                    name=section.name,
                    category=section.category,
                    content_type=meta["content_type"],
                    filename=meta["filename"],
                    size=len(body),
                    data=body,
                )
            )
        else:
            parts[section.level] = json.loads(plaintext)
    if parts and not view.errors:
        view.content = content_join(parts)
    return view


def _open_all(sealed: list[SealedRecord]) -> list[RecordView]:
    pointers = chain_pointers(item.tx_hash for item in sealed)
    views = [_open_record(item, pointers.get(item.tx_hash)) for item in sealed]
    by_id = {view.id: view for view in views}
    for view in views:
        if view.amends_id in by_id:
            by_id[view.amends_id].amended_by.append(view.id)
    return views


def records_for_staff(*, user: User, patient: Patient) -> list[RecordView]:
    """A patient's records written at this hospital, newest first (staff only)."""
    if not _is_staff(user):
        raise Http404("No such page.")
    tenant = _tenant()
    records = (
        Record.objects.filter(patient=patient)
        .select_related("author")
        .prefetch_related("sections")
        .order_by("-created_at")
    )
    decide = _staff_decider(user=user, pseudonyms=frozenset(patient.pseudonyms))
    sealed = [_seal_for_reader(record, tenant, decide) for record in records]
    access_log_reads(reader=reader_for(user), sealed=sealed, reason="default:own-hospital")
    return _open_all(sealed)


def _staff_decider(*, user: User, pseudonyms: frozenset[str]) -> Callable[[SectionRef], Decision]:
    """The policy for one staff member reading one patient: grants fetched once."""
    reader = reader_for(user)
    requester = Requester(
        role=user.role, tenant_slug=reader.tenant_slug, practitioner=reader.pseudonym
    )
    grants = grants_current(patient_pseudonyms=pseudonyms)

    def decide(section: SectionRef) -> Decision:
        return access_decide(
            requester=requester, patient_pseudonyms=pseudonyms, section=section, grants=grants
        )

    return decide


def records_elsewhere_for_staff(*, user: User, patient: Patient) -> list[RecordView]:
    """This patient's entries at other hospitals, as far as the policy lets this
    doctor or admin read them (through the hub's exchange). Entries the patient
    has not shared come back with every section withheld: the doctor sees that
    they exist, where and when, and can ask the patient for access."""
    from medportal.exchange.services import records_for_practitioner

    if not _is_staff(user):
        raise Http404("No such page.")
    reader = reader_for(user)
    requester = Requester(
        role=user.role, tenant_slug=reader.tenant_slug, practitioner=reader.pseudonym
    )
    sealed = records_for_practitioner(
        requester=requester, reader=reader, pseudonym=patient.pseudonym
    )
    return _open_all(sealed)


def records_in_period(criteria: dict):
    """This hospital's unerased records written in a period of care
    (``period_from`` / ``period_to``, ISO days, either may be missing): the
    day an entry was written, since visit dates are inside the ciphertext."""
    records = Record.objects.filter(erased_at__isnull=True)
    tz = timezone.get_current_timezone()
    if criteria.get("period_from"):
        start = datetime.combine(date.fromisoformat(criteria["period_from"]), time.min, tz)
        records = records.filter(created_at__gte=start)
    if criteria.get("period_to"):
        end = datetime.combine(date.fromisoformat(criteria["period_to"]), time.max, tz)
        records = records.filter(created_at__lte=end)
    return records


def records_for_research(
    *,
    requester: Requester,
    reader: Reader,
    patient: Patient,
    pseudonyms: frozenset[str],
    period: dict,
    categories: Iterable[str],
) -> list[RecordView]:
    """A patient's entries at this hospital as a research request may read them
    (``requester`` has role researcher and the request's id): the sections of
    the levels ``categories`` belong to, each through the policy, purpose
    research; reads and refusals logged here. Only entries written in
    ``period`` (``period_from`` / ``period_to``, ISO days)."""
    grants = grants_current(patient_pseudonyms=pseudonyms)

    def decide(section: SectionRef) -> Decision:
        return access_decide(
            requester=requester,
            patient_pseudonyms=pseudonyms,
            section=section,
            purpose="research",
            grants=grants,
        )

    tenant = _tenant()
    # Only the sections a request can be about are asked for (and logged): a
    # request for normal-level categories does not "attempt" the notes.
    levels = {CATEGORY_LEVEL[category] for category in categories}
    records = (
        records_in_period(period)
        .filter(patient=patient)
        .select_related("author")
        .prefetch_related(
            Prefetch(
                "sections",
                queryset=RecordSection.objects.filter(
                    kind=RecordSection.Kind.SECTION, level__in=levels
                ),
            )
        )
        .order_by("created_at")
    )
    sealed = [_seal_for_reader(record, tenant, decide) for record in records]
    access_log_reads(reader=reader, sealed=sealed, reason="research")
    return _open_all(sealed)


def patient_history_for_user(*, user: User) -> list[RecordView]:
    """The signed-in patient's records from every hospital where they are linked."""
    from medportal.exchange.services import records_for_patient

    patient = patient_for_account(user=user)
    sealed = records_for_patient(
        requester_slug=_tenant().slug,
        pseudonym=patient.pseudonym,
        reader=reader_for(user),
    )
    return _open_all(sealed)


def record_view_for_user(*, user: User, record_id) -> RecordView:
    """One record, for staff of its hospital or for its patient (from any linked
    hospital, through the exchange); 404 otherwise."""
    if _is_staff(user):
        record = record_get_for_user(user=user, record_id=record_id)
        decide = _staff_decider(user=user, pseudonyms=frozenset(record.patient.pseudonyms))
        sealed = _seal_for_reader(record, _tenant(), decide)
        access_log_reads(reader=reader_for(user), sealed=[sealed], reason="default:own-hospital")
        view = _open_all([sealed])[0]
        view.amended_by = [
            str(pk)
            for pk in Record.objects.filter(amends=record)
            .order_by("created_at")
            .values_list("pk", flat=True)
        ]
        return view
    for view in patient_history_for_user(user=user):
        if view.id == str(record_id):
            return view
    if user_has_role(user, (Role.PATIENT,)):
        _log_if_exists(user=user, record_id=record_id, reason="deny:not-own-record")
    raise Http404("No such record.")


def attachment_open_for_user(*, user: User, record_id, name: str) -> tuple[bytes, str, str]:
    """(bytes, filename, content type) of one attachment, after every check a
    record read makes; 404 if the reader may not see it, ValueError if it is damaged."""
    view = record_view_for_user(user=user, record_id=record_id)
    if view.errors or view.is_erased:
        raise Http404("This attachment cannot be shown.")
    if not any(attachment.name == name for attachment in view.attachments):
        raise Http404("No such attachment.")
    attachment = next(item for item in view.attachments if item.name == name)
    return attachment.data or b"", attachment.filename, attachment.content_type
