"""Writes about patients and records. Every interface (pages, API, commands,
the demo seed) calls these; each runs in the current hospital's schema.

Order of a record write: encrypt each section under a fresh data key, put the
ciphertexts in the store, then in one database transaction insert the record,
its sections and index entries and submit the signed ``data`` transaction to
the hub. If the transaction fails the blobs stay behind as unreadable
ciphertext (no row holds their keys); they are never PHI in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import filetype
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from accounts.services import user_create
from chain import keys as keyring
from chain.encoding import canonical_json, unb64
from chain.models import TransactionKind
from chain.services import transaction_submit
from chain.verification import identity_proof_bytes, link_proof_bytes
from medportal.exchange.models import LinkCode
from records.categories import Category, level_of
from records.content import content_categories, content_clean, content_split
from records.crypto import (
    SectionContext,
    WrappedKey,
    open_section,
    seal_section,
    unwrap_for_tenant,
    wrap_for_recipient,
    wrap_for_tenant,
)
from records.keys import (
    PASSWORD_FIELDS,
    PasswordRequired,
    WrongPassword,
    blind_index,
    password_open,
    password_seal,
    patient_encryption_key,
    patient_keys_new,
    patient_keys_to_password,
    patient_signing_key,
    practitioner_pseudonym,
    pseudonym_new,
)
from records.models import GranteeKeyWrap, Patient, Record, RecordIndex, RecordSection
from records.store import FileSystemStore, get_store

logger = logging.getLogger(__name__)

SEXES = ("female", "male", "other", "unknown")  # FHIR administrative gender
ATTACHMENT_TYPES = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}
ATTACHMENT_CATEGORIES = (
    Category.IMAGING,
    Category.LABS,
    Category.PROCEDURES,
    Category.CLINICAL_NOTES,
)
LINK_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
LINK_CODE_LENGTH = 10
LINK_MAX_FAILURES = 5
LINK_LOCKOUT = timedelta(minutes=15)


def _hospital():
    tenant = getattr(connection, "tenant", None)
    if getattr(tenant, "kind", None) != "hospital":
        raise PermissionDenied("Records live at hospitals.")
    return tenant


def record_store(schema_name: str | None = None) -> FileSystemStore:
    """The ciphertext store of one hospital (a directory per schema)."""
    base = get_store()
    return FileSystemStore(base.root / (schema_name or connection.schema_name))


def _require_staff(actor: User | None, *roles: str) -> None:
    if actor is not None and not user_has_role(actor, roles or (Role.ADMIN, Role.DOCTOR)):
        raise PermissionDenied("Only this hospital's doctors and admins can do this.")


# --- Patients ---------------------------------------------------------------------


@dataclass(frozen=True)
class PatientIdentity:
    given_name: str
    family_name: str
    sex: str
    birth_date: date
    record_number: str
    phone: str = ""
    email: str = ""

    def as_dict(self) -> dict:
        return {
            "given_name": self.given_name,
            "family_name": self.family_name,
            "sex": self.sex,
            "birth_date": self.birth_date.isoformat(),
            "record_number": self.record_number,
            "phone": self.phone,
            "email": self.email,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PatientIdentity:
        return cls(**{**data, "birth_date": date.fromisoformat(data["birth_date"])})

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}".strip()


def identity_clean(
    *,
    given_name: str,
    family_name: str,
    sex: str,
    birth_date: date | str | None,
    record_number: str,
    phone: str = "",
    email: str = "",
) -> PatientIdentity:
    errors: dict[str, list[str]] = {}
    given_name, family_name = (given_name or "").strip(), (family_name or "").strip()
    record_number = (record_number or "").strip()
    for name, value, limit in (
        ("given_name", given_name, 100),
        ("family_name", family_name, 100),
        ("record_number", record_number, 40),
    ):
        if not value:
            errors[name] = ["This field is required."]
        elif len(value) > limit:
            errors[name] = [f"At most {limit} characters."]
    if sex not in SEXES:
        errors["sex"] = [f"Choose one of: {', '.join(SEXES)}."]
    born = None
    if isinstance(birth_date, date):
        born = birth_date
    elif birth_date:
        try:
            born = date.fromisoformat(str(birth_date))
        except ValueError:
            errors["birth_date"] = ["Enter a date as YYYY-MM-DD."]
    else:
        errors["birth_date"] = ["This field is required."]
    if born and not date(1900, 1, 1) <= born <= timezone.localdate():
        errors["birth_date"] = ["Enter a birth date between 1900 and today."]
    if len(phone or "") > 40:
        errors["phone"] = ["At most 40 characters."]
    if len(email or "") > 200:
        errors["email"] = ["At most 200 characters."]
    if errors:
        raise ValidationError(errors)
    return PatientIdentity(
        given_name=given_name,
        family_name=family_name,
        sex=sex,
        birth_date=born,
        record_number=record_number,
        phone=(phone or "").strip(),
        email=(email or "").strip(),
    )


def _identity_context(patient_id: uuid.UUID, pseudonym: str) -> SectionContext:
    return SectionContext(
        record_id=f"patient-{patient_id}", section="identity", patient_pseudonym=pseudonym
    )


def _identity_seal(
    patient: Patient, identity: PatientIdentity, tenant_slug: str, *, version: int | None = None
) -> None:
    context = _identity_context(patient.id, patient.pseudonym)
    sealed = seal_section(canonical_json(identity.as_dict()), context)
    wrapped = wrap_for_tenant(sealed.data_key, tenant=tenant_slug, context=context, version=version)
    patient.identity_ciphertext = sealed.ciphertext
    patient.identity_nonce = sealed.nonce
    patient.identity_wrap = wrapped.to_dict()
    patient.kek_version = wrapped.version


def patient_identity(patient: Patient) -> PatientIdentity:
    """Decrypt a patient's identity (this hospital's KEK)."""
    import json

    context = _identity_context(patient.id, patient.pseudonym)
    data_key = unwrap_for_tenant(
        WrappedKey.from_dict(patient.identity_wrap), tenant=_hospital().slug, context=context
    )
    plaintext = open_section(
        bytes(patient.identity_ciphertext), bytes(patient.identity_nonce), data_key, context
    )
    return PatientIdentity.from_dict(json.loads(plaintext))


def _patient_identity_payload(
    *, patient: Patient, tenant, action: str, proof: str, links: str | None = None
) -> dict:
    """An ``identity`` payload for a patient: ``register`` (with the proof of
    possession) or ``link`` (with the patient's signature over the link)."""
    payload = {
        "action": action,
        "subject_type": "patient",
        "subject": patient.pseudonym,
        "tenant": tenant.slug,
        "tenant_kind": tenant.kind,
        "key_id": patient.key_id,
        "public_key": patient.signing_public_key,
        "encryption_public_key": patient.encryption_public_key,
        "proof": proof,
    }
    if links is not None:
        payload["links"] = links
    return payload


@transaction.atomic
def patient_create(
    *,
    actor: User | None,
    identity: PatientIdentity,
    username: str = "",
    password: str = "",
    must_change_password: bool = True,
) -> Patient:
    """Register a patient at this hospital, with a sign-in account if a username is given.

    The account holds no name (names are PHI and ``accounts_user`` is plain);
    the encrypted identity does. The patient's keys are registered on the
    chain under a new pseudonym in the same transaction.
    """
    tenant = _hospital()
    _require_staff(actor)
    number_index = blind_index(
        tenant_slug=tenant.slug, kind="record-number", value=identity.record_number
    )
    if Patient.objects.filter(record_number_index=number_index).exists():
        raise ValidationError({"record_number": "A patient with this record number exists."})
    user = None
    if username:
        user = user_create(
            actor=actor,
            username=username,
            role=Role.PATIENT,
            password=password,
            must_change_password=must_change_password,
        )
    pseudonym = pseudonym_new()
    keys = patient_keys_new(pseudonym=pseudonym)
    patient = Patient(
        user=user,
        pseudonym=pseudonym,
        record_number_index=number_index,
        name_index=blind_index(tenant_slug=tenant.slug, kind="name", value=identity.full_name),
        key_id=keys.key_id,
        signing_public_key=keys.signing_public_key,
        sealed_signing_key=keys.sealed_signing_key,
        encryption_public_key=keys.encryption_public_key,
        sealed_encryption_key=keys.sealed_encryption_key,
        key_version=keys.key_version,
        created_by=actor,
    )
    _identity_seal(patient, identity, tenant.slug)
    if user is not None:
        # From now on only the patient's password opens their private keys.
        patient_keys_to_password(
            patient, keys.signing_private, password, encryption=keys.encryption_private
        )
    pending = transaction_submit(
        tenant=tenant,
        kind=TransactionKind.IDENTITY,
        payload=_patient_identity_payload(
            patient=patient,
            tenant=tenant,
            action="register",
            proof=keyring.sign(
                keys.signing_private,
                identity_proof_bytes(subject=patient.pseudonym, key_id=patient.key_id),
            ),
        ),
    )
    patient.identity_tx_hash = pending.hash
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError:  # the same record number, registered at the same moment
        raise ValidationError(
            {"record_number": "A patient with this record number exists."}
        ) from None
    return patient


# --- Records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """An attachment as received: bytes and the name the user gave it."""

    filename: str
    data: bytes
    category: str = Category.IMAGING


def attachment_check(upload: Upload) -> str:
    """The attachment's real content type (by its bytes), or ValidationError."""
    limit = settings.MEDPORTAL_ATTACHMENT_MAX_BYTES
    if not upload.data:
        raise ValidationError({"attachments": [f"{upload.filename}: the file is empty."]})
    if len(upload.data) > limit:
        raise ValidationError(
            {"attachments": [f"{upload.filename}: larger than {limit // (1024 * 1024)} MB."]}
        )
    kind = filetype.guess(upload.data)
    mime = kind.mime if kind else None
    if mime not in ATTACHMENT_TYPES:
        raise ValidationError(
            {"attachments": [f"{upload.filename}: only PDF, PNG or JPEG files can be attached."]}
        )
    if upload.category not in ATTACHMENT_CATEGORIES:
        raise ValidationError({"attachments": ["Choose a category for the attachment."]})
    return mime


def _attachment_plaintext(upload: Upload, mime: str) -> bytes:
    # The name can be PHI ("scan-li-wei.pdf"), so it is encrypted with the bytes.
    header = canonical_json({"filename": upload.filename[:200], "content_type": mime})
    return header + b"\n" + upload.data


def _drug_names(content: dict) -> set[str]:
    return {item["drug"] for item in content["medications"] if item.get("drug")}


def _seal_into_section(
    *,
    record: Record,
    patient: Patient,
    name: str,
    plaintext: bytes,
    store: FileSystemStore,
    tenant_slug: str,
    **fields,
) -> RecordSection:
    context = SectionContext(
        record_id=str(record.id), section=name, patient_pseudonym=record.patient_pseudonym
    )
    sealed = seal_section(plaintext, context)
    sha256 = store.put(sealed.ciphertext)
    wrapped = wrap_for_tenant(sealed.data_key, tenant=tenant_slug, context=context)
    return RecordSection(
        record=record,
        name=name,
        size=len(sealed.ciphertext),
        sha256=sha256,
        nonce=sealed.nonce,
        tenant_wrap=wrapped.to_dict(),
        kek_version=wrapped.version,
        patient_wrap=wrap_for_recipient(
            sealed.data_key,
            recipient_public=unb64(patient.encryption_public_key),
            context=context,
        ),
        patient_key_id=patient.key_id,
        **fields,
    )


@transaction.atomic
def record_create(
    *,
    author: User,
    patient: Patient,
    content: dict,
    attachments: list[Upload] | tuple = (),
    amends: Record | None = None,
) -> Record:
    """Encrypt, store, index, sign and submit one record for ``patient``."""
    tenant = _hospital()
    if not user_has_role(author, (Role.DOCTOR,)):
        raise PermissionDenied("Only doctors write records.")
    if amends is not None:
        if amends.patient_id != patient.id:
            raise ValidationError({"amends": ["An amendment belongs to the same patient."]})
        if amends.is_erased:
            raise ValidationError({"amends": ["An erased record cannot be amended."]})
    clean = content_clean(content)
    checked = [(upload, attachment_check(upload)) for upload in attachments]
    store = record_store()
    record = Record(
        patient=patient,
        patient_pseudonym=patient.pseudonym,
        author=author,
        author_pseudonym=practitioner_pseudonym(tenant_slug=tenant.slug, user_id=author.pk),
        amends=amends,
    )
    sections = [
        _seal_into_section(
            record=record,
            patient=patient,
            name=level,
            plaintext=canonical_json(part),
            store=store,
            tenant_slug=tenant.slug,
            kind=RecordSection.Kind.SECTION,
            level=level,
        )
        for level, part in content_split(clean).items()
    ]
    for position, (upload, mime) in enumerate(checked, start=1):
        sections.append(
            _seal_into_section(
                record=record,
                patient=patient,
                name=f"attachment-{position}",
                plaintext=_attachment_plaintext(upload, mime),
                store=store,
                tenant_slug=tenant.slug,
                kind=RecordSection.Kind.ATTACHMENT,
                level=level_of(upload.category),
                category=upload.category,
                content_type=mime,
            )
        )
    categories = content_categories(clean)
    for upload, _mime in checked:
        if upload.category not in categories:
            categories.append(upload.category)
    categories = [category for category in Category.values if category in categories]
    levels = sorted({section.level for section in sections})
    payload = {
        "patient": record.patient_pseudonym,
        "record": str(record.id),
        "origin": tenant.slug,
        "categories": categories,
        "levels": levels,
        "ciphertexts": {section.name: section.sha256 for section in sections},
        "author": record.author_pseudonym,
    }
    if amends is not None:
        payload["amends"] = str(amends.id)
    pending = transaction_submit(tenant=tenant, kind=TransactionKind.DATA, payload=payload)
    record.categories = categories
    record.levels = levels
    record.tx_hash = pending.hash
    record.save()
    RecordSection.objects.bulk_create(sections)
    index = [
        RecordIndex(
            record=record,
            kind=RecordIndex.Kind.ICD10,
            digest=blind_index(tenant_slug=tenant.slug, kind="icd10", value=item["code"]),
        )
        for item in clean["diagnoses"]
    ] + [
        RecordIndex(
            record=record,
            kind=RecordIndex.Kind.DRUG,
            digest=blind_index(tenant_slug=tenant.slug, kind="drug", value=drug),
        )
        for drug in _drug_names(clean)
    ]
    RecordIndex.objects.bulk_create(index, ignore_conflicts=True)
    return record


def record_amend(
    *, author: User, original: Record, content: dict, attachments: list[Upload] | tuple = ()
) -> Record:
    """A correction: a new record pointing at ``original``; both stay visible."""
    return record_create(
        author=author,
        patient=original.patient,
        content=content,
        attachments=attachments,
        amends=original,
    )


@transaction.atomic
def record_erase(*, actor: User, record: Record, reason: str) -> Record:
    """Destroy a record's data keys for good (crypto-shredding).

    Every wrap of every section goes (the hospital's, the patient's, those kept
    for grantees), the index entries go, the ciphertexts are
    deleted from the store after commit, and an ``erased`` marker goes on the
    chain. The chain keeps the original transaction's hashes: they prove what
    existed and can no longer reveal it.
    """
    tenant = _hospital()
    if not user_has_role(actor, (Role.ADMIN,)):
        raise PermissionDenied("Only a hospital admin can erase a record.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["Say why this record is erased."]})
    record = Record.objects.select_for_update().get(pk=record.pk)
    if record.is_erased:
        raise ValidationError({"record": ["This record is already erased."]})
    sections = list(record.sections.all())
    RecordSection.objects.filter(record=record).update(
        tenant_wrap=None, patient_wrap=None, kek_version=None
    )
    GranteeKeyWrap.objects.filter(section__record=record).delete()
    RecordIndex.objects.filter(record=record).delete()
    pending = transaction_submit(
        tenant=tenant,
        kind=TransactionKind.DATA,
        payload={
            "patient": record.patient_pseudonym,
            "record": str(record.id),
            "origin": tenant.slug,
            "categories": record.categories,
            "levels": record.levels,
            "ciphertexts": {},
            "author": practitioner_pseudonym(tenant_slug=tenant.slug, user_id=actor.pk),
            "erased": True,
        },
    )
    record.erased_at = timezone.now()
    record.erased_by = actor
    record.erasure_reason = reason
    record.erasure_tx_hash = pending.hash
    record.save(update_fields=["erased_at", "erased_by", "erasure_reason", "erasure_tx_hash"])
    store = record_store()
    names = [section.sha256 for section in sections]
    transaction.on_commit(lambda: [store.delete(name) for name in names])
    return record


# --- Key rotation -----------------------------------------------------------------


def kek_rotate_batch(*, to_version: int, batch: int = 500) -> int:
    """Re-wrap up to ``batch`` data keys (sections, then identities) not yet at
    ``to_version``; returns how many it did. Each batch commits on its own, so
    an interrupted rotation resumes where it stopped. Rows locked by a writer
    are waited for, never skipped: 0 means nothing is left at another version."""
    tenant_slug = _hospital().slug
    done = 0
    with transaction.atomic():
        sections = list(
            RecordSection.objects.select_for_update()
            .select_related("record")
            .filter(kek_version__isnull=False)
            .exclude(kek_version=to_version)
            .order_by("pk")[:batch]
        )
        for section in sections:
            context = SectionContext(
                record_id=str(section.record_id),
                section=section.name,
                patient_pseudonym=section.record.patient_pseudonym,
            )
            data_key = unwrap_for_tenant(
                WrappedKey.from_dict(section.tenant_wrap), tenant=tenant_slug, context=context
            )
            wrapped = wrap_for_tenant(
                data_key, tenant=tenant_slug, context=context, version=to_version
            )
            section.tenant_wrap = wrapped.to_dict()
            section.kek_version = to_version
        RecordSection.objects.bulk_update(sections, ["tenant_wrap", "kek_version"])
        done += len(sections)
    if done:
        return done
    with transaction.atomic():
        patients = list(
            Patient.objects.select_for_update()
            .exclude(kek_version=to_version)
            .order_by("pk")[:batch]
        )
        for patient in patients:
            identity = patient_identity(patient)
            _identity_seal(patient, identity, tenant_slug, version=to_version)
        Patient.objects.bulk_update(
            patients, ["identity_ciphertext", "identity_nonce", "identity_wrap", "kek_version"]
        )
    if patients:
        return len(patients)
    # Emergency reasons and review notes are sealed the same way.
    from consent.emergency import emergency_rotate_batch

    return emergency_rotate_batch(to_version=to_version, batch=batch)


# --- Linking accounts across hospitals --------------------------------------------


def _code_digest(code: str) -> str:
    normalised = _normalised_code(code)
    key = keyring.derive_key(purpose="link-code", owner="hub")
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def _patient_of(user: User) -> Patient:
    if not user_has_role(user, (Role.PATIENT,)):
        raise PermissionDenied("Only patients link their accounts.")
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        raise PermissionDenied("This account has no patient profile.")
    return patient


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: object


def patient_signing_key_reseal(*, user: User, old_password: str, new_password: str) -> None:
    """Re-seal the patient's private keys under their new password (a password
    change). Keys the old password does not open (it was set by an admin, not
    changed by the patient) stay as they are: that needs key recovery."""
    patient = Patient.objects.select_for_update().filter(user=user).first()
    if patient is None or not patient.signing_key_password_wrap:
        return
    try:
        private = patient_signing_key(patient, old_password)
        encryption = (
            patient_encryption_key(patient, old_password)
            if patient.encryption_key_password_wrap
            else None
        )
    except (PasswordRequired, WrongPassword):
        logger.warning(
            "patient %s: keys not re-sealed (old password does not open them)",
            patient.pseudonym,
        )
        return
    patient_keys_to_password(patient, private, new_password, encryption=encryption)
    patient.save(update_fields=PASSWORD_FIELDS)


@transaction.atomic
def patient_keys_recover(*, admin: User, patient: Patient, temporary_password: str) -> Patient:
    """A patient lost their password: an admin of a hospital holding them gives the
    account a temporary password and the patient new keys.

    New signing and encryption keys are made (the signing key sealed under the
    temporary password; the patient must choose their own at the next sign-in,
    which re-seals it), an ``identity`` ``rotate`` transaction replaces the old
    key on the chain, and the data keys wrapped for the patient at every
    hospital holding their entries are re-wrapped to the new encryption key
    (through the hub's exchange). Grants already on the chain stay valid: they
    name the pseudonym, not the key. The patient's accounts at other hospitals
    keep reading; to sign consent there they link again. The patient is told.
    """
    tenant = _hospital()
    if not user_has_role(admin, (Role.ADMIN,)):
        raise PermissionDenied("Only a hospital admin recovers a patient's keys.")
    patient = (
        Patient.objects.select_for_update(of=("self",)).select_related("user").get(pk=patient.pk)
    )
    if patient.user is None:
        raise ValidationError({"patient": ["This patient has no portal account."]})
    try:
        validate_password(temporary_password, patient.user)
    except ValidationError as error:
        raise ValidationError({"temporary_password": error.messages}) from None
    old_key_id = patient.key_id
    keys = patient_keys_new(pseudonym=patient.pseudonym)
    patient.key_id = keys.key_id
    patient.signing_public_key = keys.signing_public_key
    patient.encryption_public_key = keys.encryption_public_key
    patient.key_version = keys.key_version
    patient_keys_to_password(
        patient, keys.signing_private, temporary_password, encryption=keys.encryption_private
    )
    transaction_submit(
        tenant=tenant,
        kind=TransactionKind.IDENTITY,
        payload={
            **_patient_identity_payload(
                patient=patient,
                tenant=tenant,
                action="rotate",
                proof=keyring.sign(
                    keys.signing_private,
                    identity_proof_bytes(subject=patient.pseudonym, key_id=patient.key_id),
                ),
            ),
            "replaces": old_key_id,
        },
    )
    patient.save()
    patient.user.set_password(temporary_password)
    patient.user.must_change_password = True
    patient.user.save(update_fields=["password", "must_change_password"])
    from medportal.exchange.services import patient_keys_propagate

    patient_keys_propagate(
        requester_slug=tenant.slug,
        pseudonym=patient.pseudonym,
        keys={
            "key_id": patient.key_id,
            "signing_public_key": patient.signing_public_key,
            "encryption_public_key": patient.encryption_public_key,
            "key_version": patient.key_version,
        },
    )
    from consent.notifications import patient_notify

    patient_notify(
        patient_pseudonyms=patient.pseudonyms,
        kind="key_recovery",
        text=(
            f"{admin.display_name} at {tenant.name} gave you new keys and a temporary "
            "password. If you did not ask for this, tell the hospital at once."
        ),
    )
    return patient


def grantee_wraps_destroy_here(*, bases: Iterable[str]) -> int:
    """In one hospital: destroy the data keys kept for grantees under these grants
    (revoked or replaced). Returns how many went."""
    deleted, _ = GranteeKeyWrap.objects.filter(basis__in=list(bases)).delete()
    return deleted


def grantee_wraps_expire_here(*, now=None) -> int:
    """In one hospital: destroy the data keys kept under grants that have expired."""
    deleted, _ = GranteeKeyWrap.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def patient_keys_here_update(*, pseudonyms: Iterable[str], keys: dict) -> int:
    """In one hospital (called by the hub's exchange): the patient's new public
    keys on their account here, the old private keys dropped (replaced on the
    chain; the new ones come with the next link), and the data keys wrapped for
    the patient re-wrapped to the new encryption key. Returns the sections
    re-wrapped."""
    tenant = connection.tenant
    pseudonyms = list(pseudonyms)
    for patient in Patient.objects.select_for_update().filter(pseudonym__in=pseudonyms):
        if patient.key_id == keys["key_id"]:
            continue  # the hospital that recovered them
        for field, value in keys.items():
            setattr(patient, field, value)
        for field in PASSWORD_FIELDS:
            setattr(patient, field, "")
        patient.save()
    recipient = unb64(keys["encryption_public_key"])
    sections = list(
        RecordSection.objects.select_for_update()
        .select_related("record")
        .filter(record__patient_pseudonym__in=pseudonyms, tenant_wrap__isnull=False)
    )
    for section in sections:
        context = SectionContext(
            record_id=str(section.record_id),
            section=section.name,
            patient_pseudonym=section.record.patient_pseudonym,
        )
        data_key = unwrap_for_tenant(
            WrappedKey.from_dict(section.tenant_wrap), tenant=tenant.slug, context=context
        )
        section.patient_wrap = wrap_for_recipient(
            data_key, recipient_public=recipient, context=context
        )
        section.patient_key_id = keys["key_id"]
    RecordSection.objects.bulk_update(sections, ["patient_wrap", "patient_key_id"])
    return len(sections)


def _normalised_code(code: str) -> str:
    return "".join(ch for ch in (code or "").upper() if ch in LINK_CODE_ALPHABET)


def _signing_key_with_password(patient: Patient, password: str):
    if not patient.signing_key_password_wrap and not patient.sealed_signing_key:
        raise ValidationError(
            {"password": ["Your keys were replaced at another hospital: make the code there."]}
        )
    try:
        return patient_signing_key(patient, password)
    except (PasswordRequired, WrongPassword):
        raise ValidationError({"password": ["That is not your password."]}) from None


def link_code_create(*, user: User, password: str) -> IssuedCode:
    """A one-time code (10 minutes) the patient types in at another hospital.

    Only the code's HMAC is stored, at the hub, with the patient's private keys
    sealed under the code (Argon2id), for the other hospital to re-seal under
    that account's password. The code is shown once."""
    tenant = _hospital()
    patient = _patient_of(user)
    private = _signing_key_with_password(patient, password)
    try:
        encryption = patient_encryption_key(patient, password)
    except PasswordRequired:
        encryption = b""  # replaced elsewhere by a key recovery: signing key only
    raw = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(LINK_CODE_LENGTH))
    now = timezone.now()
    expires = now + timedelta(seconds=settings.MEDPORTAL_LINK_CODE_SECONDS)
    with schema_context(get_public_schema_name()):
        LinkCode.objects.create(
            code_digest=_code_digest(raw),
            origin_id=tenant.pk,
            patient_id=patient.id,
            pseudonym=patient.pseudonym,
            created_at=now,
            expires_at=expires,
            transport_wrap=password_seal(
                keyring.private_key_raw(private) + encryption,
                password=raw,
                key_id=patient.key_id,
            ),
        )
    return IssuedCode(code=f"{raw[:5]}-{raw[5:]}", expires_at=expires)


class LinkRefused(ValidationError):
    pass


def link_code_redeem(*, user: User, code: str, password: str) -> Patient:
    """Join this hospital's account to the pseudonym of the hospital that issued ``code``.

    The hub hands over the patient's private keys sealed under the code; this
    hospital re-seals them under this account's password, the identity under
    the shared pseudonym and submits an ``identity``/``link`` transaction
    signed by the patient's key. Five wrong codes lock linking for 15 minutes.
    """
    tenant = _hospital()
    patient = _patient_of(user)
    now = timezone.now()
    if patient.link_locked_until and patient.link_locked_until > now:
        raise LinkRefused("Too many wrong codes. Try again in a few minutes.")
    if not user.check_password(password or ""):
        raise ValidationError({"password": ["That is not your password."]})
    with transaction.atomic():
        linked = _link_apply(
            tenant=tenant, patient_id=patient.pk, code=code, now=now, password=password
        )
    if isinstance(linked, Patient):
        return linked
    # A wrong code: counted in its own transaction, after the attempt's rolled back.
    failures = patient.link_failures + 1
    locked = now + LINK_LOCKOUT if failures >= LINK_MAX_FAILURES else None
    Patient.objects.filter(pk=patient.pk).update(
        link_failures=0 if locked else failures, link_locked_until=locked
    )
    raise LinkRefused(linked)


def _transport_open(transport: str, *, code: str, key_id: str) -> tuple[Ed25519PrivateKey, bytes]:
    """The (signing, encryption) keys a link code carries; the encryption key is
    empty if the issuing account had none (its keys were recovered elsewhere)."""
    raw = password_open(transport, password=_normalised_code(code), key_id=key_id)
    return Ed25519PrivateKey.from_private_bytes(raw[:32]), raw[32:64]


def _link_apply(*, tenant, patient_id, code: str, now, password: str) -> Patient | str:
    """The link itself, or the reason it was refused (to be counted as a failure)."""
    patient = Patient.objects.select_for_update().get(pk=patient_id)
    with schema_context(get_public_schema_name()):
        link = (
            LinkCode.objects.select_for_update()
            .filter(code_digest=_code_digest(code or ""), used_at__isnull=True, expires_at__gt=now)
            .select_related("origin")
            .first()
        )
        if link is None:
            return "That code is not valid or has expired."
        if link.origin_id == tenant.pk:
            return "That code was made at this hospital: enter it at the other one."
        transport = link.transport_wrap
        link.used_at = now
        link.used_by_id = tenant.pk
        link.transport_wrap = ""  # single use: the sealed key leaves the hub
        link.save(update_fields=["used_at", "used_by", "transport_wrap"])
    if link.pseudonym == patient.pseudonym or link.pseudonym in patient.former_pseudonyms:
        if patient.signing_key_password_wrap or patient.sealed_signing_key:
            raise LinkRefused("These accounts are already linked.")
        # Linked already, but the keys were replaced at the other hospital (a
        # key recovery): this account takes the new private keys, nothing else.
        signing, encryption = _transport_open(transport, code=code, key_id=patient.key_id)
        patient_keys_to_password(patient, signing, password, encryption=encryption)
        patient.save(update_fields=PASSWORD_FIELDS)
        return patient
    with schema_context(link.origin.schema_name):
        source = Patient.objects.get(pk=link.patient_id)
        keys = {
            field: getattr(source, field)
            for field in (
                "key_id",
                "signing_public_key",
                "encryption_public_key",
                "key_version",
            )
        }
    identity = patient_identity(patient)
    previous = patient.pseudonym
    patient.former_pseudonyms = [*patient.former_pseudonyms, previous]
    patient.pseudonym = link.pseudonym
    for field, value in keys.items():
        setattr(patient, field, value)
    _identity_seal(patient, identity, tenant.slug)
    signing, encryption = _transport_open(transport, code=code, key_id=patient.key_id)
    patient_keys_to_password(patient, signing, password, encryption=encryption)
    transaction_submit(
        tenant=tenant,
        kind=TransactionKind.IDENTITY,
        payload=_patient_identity_payload(
            patient=patient,
            tenant=tenant,
            action="link",
            links=previous,
            proof=keyring.sign(
                signing,
                link_proof_bytes(subject=patient.pseudonym, tenant=tenant.slug, links=previous),
            ),
        ),
    )
    patient.link_failures = 0
    patient.link_locked_until = None
    patient.save()
    return patient
