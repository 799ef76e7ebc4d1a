"""Linking a patient's accounts at two hospitals with a one-time code."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from chain.models import PendingTransaction
from medportal.exchange.models import LinkCode
from records.models import Patient
from records.selectors import patient_history_for_user
from records.services import (
    LinkRefused,
    PatientIdentity,
    link_code_create,
    link_code_redeem,
    patient_create,
)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _new_patient(tenant, username, number):
    with tenant_context(tenant):
        return patient_create(
            actor=None,
            identity=PatientIdentity(
                given_name="Sam",
                family_name="Okafor",
                sex="male",
                birth_date=date(1990, 1, 2),
                record_number=number,
            ),
            username=username,
            password="correct-horse-battery-9",
            must_change_password=False,
        )


def test_a_code_links_two_accounts_once_and_is_recorded_on_the_chain(alpha, beta):
    at_alpha = _new_patient(alpha, "sam-a", "SA-1")
    at_beta = _new_patient(beta, "sam-b", "SB-1")
    old_beta_pseudonym = at_beta.pseudonym
    with tenant_context(alpha):
        issued = link_code_create(user=at_alpha.user, password=PASSWORD)
    with schema_context("public"):
        stored = LinkCode.objects.get(pseudonym=at_alpha.pseudonym)
        # Only the HMAC of the code is kept.
        assert issued.code.replace("-", "") not in stored.code_digest
    with tenant_context(beta):
        linked = link_code_redeem(user=at_beta.user, password=PASSWORD, code=issued.code.lower())
        assert linked.pseudonym == at_alpha.pseudonym
        assert linked.former_pseudonyms == [old_beta_pseudonym]
        assert Patient.objects.get(pk=at_beta.pk).key_id == at_alpha.key_id
        with pytest.raises(LinkRefused, match="not valid or has expired"):
            link_code_redeem(user=at_beta.user, password=PASSWORD, code=issued.code)
    with schema_context("public"):
        link_tx = PendingTransaction.objects.get(
            kind="identity",
            payload__action="link",
            payload__tenant="beta",
            payload__subject=at_alpha.pseudonym,
        )
        assert link_tx.payload["links"] == old_beta_pseudonym
        assert "Sam" not in str(link_tx.payload) and "Okafor" not in str(link_tx.payload)


def test_expired_or_same_hospital_codes_are_refused_and_nothing_changes(alpha, beta):
    at_alpha = _new_patient(alpha, "sam-a", "SA-2")
    at_beta = _new_patient(beta, "sam-b", "SB-2")
    with tenant_context(alpha):
        same_place = link_code_create(user=at_alpha.user, password=PASSWORD)
        with pytest.raises(LinkRefused, match="made at this hospital"):
            link_code_redeem(user=at_alpha.user, password=PASSWORD, code=same_place.code)
        expired = link_code_create(user=at_alpha.user, password=PASSWORD)
    with schema_context("public"):
        LinkCode.objects.filter(pseudonym=at_alpha.pseudonym).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    with tenant_context(beta):
        with pytest.raises(LinkRefused, match="expired"):
            link_code_redeem(user=at_beta.user, password=PASSWORD, code=expired.code)
        assert Patient.objects.get(pk=at_beta.pk).pseudonym == at_beta.pseudonym


def test_five_wrong_codes_lock_linking(alpha, beta):
    at_alpha = _new_patient(alpha, "sam-a", "SA-3")
    at_beta = _new_patient(beta, "sam-b", "SB-3")
    with tenant_context(beta):
        for _ in range(5):
            with pytest.raises(LinkRefused, match="not valid"):
                link_code_redeem(user=at_beta.user, password=PASSWORD, code="AAAAA-AAAAA")
    with tenant_context(alpha):
        good = link_code_create(user=at_alpha.user, password=PASSWORD)
    with tenant_context(beta):
        with pytest.raises(LinkRefused, match="Too many wrong codes"):
            link_code_redeem(user=at_beta.user, password=PASSWORD, code=good.code)
        assert Patient.objects.get(pk=at_beta.pk).pseudonym == at_beta.pseudonym


def test_before_linking_a_patient_sees_nothing_from_the_other_hospital(alpha, beta):
    at_beta = _new_patient(beta, "sam-b", "SB-4")
    with tenant_context(beta):
        assert patient_history_for_user(user=at_beta.user) == []


def test_the_signing_key_opens_only_with_the_patients_password(alpha):
    from records.keys import PasswordRequired, WrongPassword, patient_signing_key

    at_alpha = _new_patient(alpha, "sam-a", "SA-9")
    assert at_alpha.sealed_signing_key == ""  # no master-key copy once there is a password
    with pytest.raises(PasswordRequired):
        patient_signing_key(at_alpha)
    with pytest.raises(WrongPassword):
        patient_signing_key(at_alpha, "a-guess")
    assert patient_signing_key(at_alpha, PASSWORD) is not None


def test_a_password_change_reseals_the_signing_key(alpha):
    from accounts.services import user_password_change
    from records.keys import WrongPassword, patient_signing_key

    at_alpha = _new_patient(alpha, "sam-a", "SA-10")
    with tenant_context(alpha):
        user_password_change(
            user=at_alpha.user, new_password="a-brand-new-phrase-77", old_password=PASSWORD
        )
        fresh = Patient.objects.get(pk=at_alpha.pk)
    assert patient_signing_key(fresh, "a-brand-new-phrase-77") is not None
    with pytest.raises(WrongPassword):
        patient_signing_key(fresh, PASSWORD)


def test_linking_reseals_the_key_under_the_second_accounts_password(alpha, beta):
    from records.keys import WrongPassword, patient_signing_key

    at_alpha = _new_patient(alpha, "sam-a", "SA-11")
    at_beta = _new_patient(beta, "sam-b", "SB-11")
    with tenant_context(beta):
        at_beta.user.set_password("beta-only-phrase-55")
        at_beta.user.save()
    with tenant_context(alpha):
        issued = link_code_create(user=at_alpha.user, password=PASSWORD)
    with tenant_context(beta):
        with pytest.raises(ValidationError, match="not your password"):
            link_code_redeem(user=at_beta.user, code=issued.code, password=PASSWORD)
        linked = link_code_redeem(
            user=at_beta.user, code=issued.code, password="beta-only-phrase-55"
        )
    assert patient_signing_key(linked, "beta-only-phrase-55").public_key() is not None
    with pytest.raises(WrongPassword):
        patient_signing_key(linked, PASSWORD)
    with schema_context("public"):
        assert LinkCode.objects.get(pseudonym=at_alpha.pseudonym).transport_wrap == ""


def _opens_patient_wraps(patient, key: bytes) -> int:
    """How many of the patient's stored data-key copies ``key`` opens."""
    from records.crypto import SectionContext, unwrap_for_recipient
    from records.models import RecordSection

    opened = 0
    for section in RecordSection.objects.filter(
        record__patient_pseudonym__in=patient.pseudonyms, patient_wrap__isnull=False
    ).select_related("record"):
        context = SectionContext(
            record_id=str(section.record_id),
            section=section.name,
            patient_pseudonym=section.record.patient_pseudonym,
        )
        assert unwrap_for_recipient(
            bytes(section.patient_wrap), recipient_private=key, context=context
        )
        opened += 1
    return opened


def test_the_encryption_key_too_opens_only_with_the_patients_password(alpha):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from chain.encoding import b64
    from records.keys import PasswordRequired, WrongPassword, patient_encryption_key

    with tenant_context(alpha):
        li = Patient.objects.get(user__username="alpha-patient")
    assert li.sealed_encryption_key == "" and li.encryption_key_password_wrap
    with pytest.raises(PasswordRequired):
        patient_encryption_key(li)
    with pytest.raises(WrongPassword):
        patient_encryption_key(li, "a-guess")
    raw = patient_encryption_key(li, PASSWORD)
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    assert b64(public.public_bytes(Encoding.Raw, PublicFormat.Raw)) == li.encryption_public_key
    # It opens the copies of her data keys kept for her.
    with tenant_context(alpha):
        assert _opens_patient_wraps(li, raw) > 0
        # ... while she reads through the portal without it.
        history = patient_history_for_user(user=li.user)
    assert history and all(not view.errors for view in history)


def test_a_password_change_and_a_link_carry_the_encryption_key(alpha, beta):
    from accounts.services import user_password_change
    from records.keys import WrongPassword, patient_encryption_key

    at_alpha = _new_patient(alpha, "sam-a", "SA-12")
    at_beta = _new_patient(beta, "sam-b", "SB-12")
    raw = patient_encryption_key(at_alpha, PASSWORD)
    with tenant_context(alpha):
        user_password_change(
            user=at_alpha.user, new_password="a-brand-new-phrase-78", old_password=PASSWORD
        )
        fresh = Patient.objects.get(pk=at_alpha.pk)
    assert patient_encryption_key(fresh, "a-brand-new-phrase-78") == raw
    with pytest.raises(WrongPassword):
        patient_encryption_key(fresh, PASSWORD)
    with tenant_context(alpha):
        issued = link_code_create(user=fresh.user, password="a-brand-new-phrase-78")
    with tenant_context(beta):
        linked = link_code_redeem(user=at_beta.user, code=issued.code, password=PASSWORD)
    assert linked.sealed_encryption_key == ""
    assert patient_encryption_key(linked, PASSWORD) == raw
