"""Writes about consent: a patient grants or revokes access, signed with their key.

A grant is an ``access`` transaction: patient pseudonym, grantee (a doctor by
practitioner pseudonym, or a whole hospital by slug), categories, purpose,
optional expiry. A revocation is a later ``access`` transaction for the same
grantee and purpose with no categories: the latest one wins
(``consent.policy.grants_current``). The hub refuses an ``access`` transaction
that is not signed by the patient's own registered key.

The patient's signing key is sealed under their password (Argon2id,
``records.keys``): every consent change asks for the password again, and the
portal alone cannot sign for a patient.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from chain.encoding import format_time
from chain.models import PendingTransaction, TransactionKind
from chain.services import envelope_sign, transactions_accept
from records.categories import Category, Level, categories_at
from records.keys import PasswordRequired, WrongPassword, patient_signing_key
from records.models import Patient

PURPOSES = ("treatment", "second_opinion", "research")
GRANTEE_TYPES = ("practitioner", "tenant")


def categories_expand(selection: Iterable[str]) -> list[str]:
    """Category names and whole levels (``"normal"``…) → category names, in table order."""
    wanted: set[str] = set()
    for name in selection:
        if name in Level.values:
            wanted.update(categories_at(name))
        elif name in Category.values:
            wanted.add(name)
        else:
            raise ValidationError({"categories": [f"{name!r} is not a category or a level."]})
    return [category for category in Category.values if category in wanted]


def _patient_for(user: User) -> Patient:
    if not user_has_role(user, (Role.PATIENT,)):
        raise PermissionDenied("Only patients grant access to their records.")
    patient = Patient.objects.filter(user=user).first()
    if patient is None:
        raise PermissionDenied("This account has no patient profile.")
    return patient


def _signing_key(user: User, patient: Patient, password: str):
    """The patient's signing key, opened with the password they typed just now."""
    if user.must_change_password:
        # The temporary password was chosen by staff: it must not sign consent.
        raise PermissionDenied("Choose your own password before you change your consent.")
    if not patient.signing_key_password_wrap and not patient.sealed_signing_key:
        raise ValidationError(
            {
                "password": [
                    "Your keys were replaced at another hospital: link this account "
                    "again (Link hospitals) to sign here."
                ]
            }
        )
    try:
        return patient_signing_key(patient, password)
    except (PasswordRequired, WrongPassword):
        raise ValidationError({"password": ["That is not your password."]}) from None


def _submit(user: User, patient: Patient, password: str, payload: dict) -> PendingTransaction:
    """Sign and submit; then destroy the data keys kept for this grantee under the
    grant this one replaces (a revocation, or a new grant for the same grantee
    and purpose): from now on they exist only if the new grant allows a read."""
    from consent.policy import grants_current
    from medportal.exchange.services import grantee_wraps_destroy, patient_pseudonyms

    envelope = envelope_sign(
        kind=TransactionKind.ACCESS,
        payload=payload,
        key=patient,  # has the key_id; the private key is given below
        private=_signing_key(user, patient, password),
    )
    pseudonyms = patient_pseudonyms(
        requester_slug=connection.tenant.slug, pseudonym=patient.pseudonym
    )
    grantee = payload["grantee"]
    replaced = [
        grant.tx_hash
        for grant in grants_current(patient_pseudonyms=pseudonyms)
        if (grant.grantee_type, grant.grantee_id, grant.purpose)
        == (grantee["type"], grantee["id"], payload["purpose"])
    ]
    pending = transactions_accept(envelopes=[envelope], submitted_by=connection.tenant.slug)[0]
    grantee_wraps_destroy(pseudonyms=pseudonyms, bases=replaced)
    return pending


@transaction.atomic
def consent_grant(
    *,
    user: User,
    password: str,
    grantee_type: str,
    grantee_id: str,
    categories: Iterable[str],
    purpose: str = "treatment",
    expires_at: datetime | None = None,
) -> PendingTransaction:
    """The signed-in patient lets a doctor or a hospital read these categories."""
    patient = _patient_for(user)
    errors: dict[str, list[str]] = {}
    if grantee_type not in GRANTEE_TYPES:
        errors["grantee_type"] = ["Choose a doctor or a hospital."]
    if not grantee_id or len(grantee_id) > 64:
        errors["grantee_id"] = ["Choose who may read."]
    if purpose not in PURPOSES:
        errors["purpose"] = [f"Choose one of: {', '.join(PURPOSES)}."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["The expiry must be in the future."]
    if errors:
        raise ValidationError(errors)
    chosen = categories_expand(categories)
    if not chosen:
        raise ValidationError({"categories": ["Choose at least one category."]})
    return _submit(
        user,
        patient,
        password,
        {
            "patient": patient.pseudonym,
            "grantee": {"type": grantee_type, "id": grantee_id},
            "categories": chosen,
            "purpose": purpose,
            "expires_at": format_time(expires_at) if expires_at else None,
        },
    )


@transaction.atomic
def consent_revoke(
    *, user: User, password: str, grantee_type: str, grantee_id: str, purpose: str = "treatment"
) -> PendingTransaction:
    """Withdraw a grant: from the next read on, the grantee is refused."""
    patient = _patient_for(user)
    if grantee_type not in GRANTEE_TYPES or purpose not in PURPOSES or not grantee_id:
        raise ValidationError({"grant": ["There is no such grant to revoke."]})
    return _submit(
        user,
        patient,
        password,
        {
            "patient": patient.pseudonym,
            "grantee": {"type": grantee_type, "id": grantee_id},
            "categories": [],
            "purpose": purpose,
            "expires_at": None,
        },
    )


@transaction.atomic
def consent_research(
    *,
    user: User,
    password: str,
    request_id: str,
    categories: Iterable[str],
    expires_at: datetime | None = None,
) -> PendingTransaction:
    """The signed-in patient opts in to a research request (``categories``) or
    withdraws (no categories). Called by ``medportal.research.services``, which
    checks that she was invited and that the request is open."""
    patient = _patient_for(user)
    chosen = categories_expand(categories)
    return _submit(
        user,
        patient,
        password,
        {
            "patient": patient.pseudonym,
            "grantee": {"type": "request", "id": request_id},
            "categories": chosen,
            "purpose": "research",
            "expires_at": format_time(expires_at) if chosen and expires_at else None,
        },
    )
