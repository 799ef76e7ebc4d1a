"""A patient lost her password: an admin gives her new keys; nothing is lost."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django_tenants.utils import schema_context, tenant_context

from accounts.models import User
from chain.models import PendingTransaction, RegisteredKey
from chain.services import block_seal
from consent.grants import consent_grant
from consent.models import Notification
from consent.policy import grants_current
from records.keys import WrongPassword, patient_encryption_key, patient_signing_key
from records.models import Patient
from records.selectors import patient_history_for_user
from records.services import link_code_create, link_code_redeem, patient_keys_recover
from tests.conftest import PASSWORD, login_client
from tests.records.test_linking import _opens_patient_wraps

pytestmark = pytest.mark.django_db

TEMPORARY = "a-temporary-phrase-31"


@pytest.fixture
def people(alpha, beta):
    with tenant_context(alpha):
        admin = User.objects.get(username="alpha-admin")
        li = Patient.objects.select_related("user").get(user__username="alpha-patient")
    with tenant_context(beta):
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    return admin, li, li_at_beta


def test_recovery_replaces_the_keys_on_the_chain_and_keeps_everything_readable(alpha, beta, people):
    admin, li, li_at_beta = people
    old_key = li.key_id
    grants_before = grants_current(patient_pseudonyms=li.pseudonyms)
    with tenant_context(alpha):
        history_before = {v.id for v in patient_history_for_user(user=li.user)}
        recovered = patient_keys_recover(admin=admin, patient=li, temporary_password=TEMPORARY)
    assert recovered.key_id != old_key
    with schema_context("public"):
        rotation = PendingTransaction.objects.get(
            kind="identity", payload__action="rotate", payload__subject=li.pseudonym
        )
    assert rotation.payload["replaces"] == old_key
    block_seal(force=True)
    with schema_context("public"):
        assert RegisteredKey.objects.get(key_id=old_key).revoked_height is not None
        assert RegisteredKey.objects.get(key_id=recovered.key_id).revoked_height is None
    # The temporary password opens the new keys; the patient must change it first.
    assert patient_signing_key(recovered, TEMPORARY) is not None
    new_encryption = patient_encryption_key(recovered, TEMPORARY)
    assert recovered.sealed_encryption_key == ""
    with tenant_context(alpha):
        user = User.objects.get(pk=li.user_id)
        assert user.must_change_password and user.check_password(TEMPORARY)
        # Every record still reads, from both hospitals, with the new key.
        history_after = patient_history_for_user(user=user)
    assert {v.id for v in history_after} == history_before
    assert all(not v.errors for v in history_after)
    # The copies of her data keys kept for her open with the new key, at both hospitals.
    for tenant in (alpha, beta):
        with tenant_context(tenant):
            assert _opens_patient_wraps(recovered, new_encryption) > 0
    # Her grants are on the chain under her pseudonym: still valid.
    assert grants_current(patient_pseudonyms=li.pseudonyms) == grants_before
    # She is told, at alpha and at beta.
    for tenant, account in ((alpha, li.user_id), (beta, li_at_beta.user_id)):
        with tenant_context(tenant):
            assert Notification.objects.filter(recipient_id=account, kind="key_recovery").exists()


def test_the_linked_account_reads_at_once_and_signs_again_after_relinking(alpha, beta, people):
    admin, li, li_at_beta = people
    with tenant_context(alpha):
        patient_keys_recover(admin=admin, patient=li, temporary_password=TEMPORARY)
    block_seal(force=True)
    with tenant_context(beta):
        at_beta = Patient.objects.select_related("user").get(pk=li_at_beta.pk)
        assert at_beta.key_id != li_at_beta.key_id
        assert all(not v.errors for v in patient_history_for_user(user=at_beta.user))
        with pytest.raises(ValidationError, match="link this account again"):
            consent_grant(
                user=at_beta.user,
                password=PASSWORD,
                grantee_type="tenant",
                grantee_id="beta",
                categories=["labs"],
            )
    with tenant_context(alpha):
        issued = link_code_create(user=li.user, password=TEMPORARY)
    with tenant_context(beta):
        relinked = link_code_redeem(user=at_beta.user, code=issued.code, password=PASSWORD)
        assert patient_signing_key(relinked, PASSWORD) is not None
        consent_grant(
            user=at_beta.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["labs"],
        )


def test_only_an_admin_recovers_and_a_weak_password_changes_nothing(alpha, people):
    _, li, _ = people
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        with pytest.raises(PermissionDenied):
            patient_keys_recover(admin=doctor, patient=li, temporary_password=TEMPORARY)
        admin = User.objects.get(username="alpha-admin")
        with pytest.raises(ValidationError):
            patient_keys_recover(admin=admin, patient=li, temporary_password="123")
        assert Patient.objects.get(pk=li.pk).key_id == li.key_id
    with pytest.raises(WrongPassword):
        patient_signing_key(li, TEMPORARY)


def test_the_recovery_page_is_for_admins(alpha, people):
    _, li, _ = people
    assert (
        login_client(alpha, "alpha-doctor").get(f"/records/patients/{li.id}/recover/").status_code
        == 404
    )
    client = login_client(alpha, "alpha-admin")
    assert b"New keys (lost password)" in client.get(f"/records/patients/{li.id}/").content
    mismatch = client.post(
        f"/records/patients/{li.id}/recover/",
        {"temporary_password": TEMPORARY, "temporary_password_again": "other"},
    )
    assert mismatch.status_code == 400
    done = client.post(
        f"/records/patients/{li.id}/recover/",
        {"temporary_password": TEMPORARY, "temporary_password_again": TEMPORARY},
    )
    assert done.status_code == 302
    with tenant_context(alpha):
        assert Patient.objects.get(pk=li.pk).key_id != li.key_id
