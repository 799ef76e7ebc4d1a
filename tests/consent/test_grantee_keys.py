"""Data keys wrapped for a grantee hospital: kept while the grant holds, destroyed
when the patient revokes or replaces it, when it expires, and on erasure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.grants import consent_grant, consent_revoke
from consent.tasks import grantee_wraps_expire_task
from records.models import GranteeKeyWrap, Patient
from records.selectors import records_elsewhere_for_staff
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(alpha, beta):
    with tenant_context(beta):
        doctor = User.objects.get(username="beta-doctor")
        li_at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    with tenant_context(alpha):
        li_at_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
    return doctor, li_at_beta, li_at_alpha


def _read(beta, doctor, patient):
    with tenant_context(beta):
        return records_elsewhere_for_staff(user=doctor, patient=patient)


def _kept(alpha):
    with tenant_context(alpha):
        return list(GranteeKeyWrap.objects.order_by("id").values_list("id", "grantee", "basis"))


def _grant(alpha, li, **extra):
    with tenant_context(alpha):
        return consent_grant(
            user=li.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["normal"],
            **extra,
        )


def test_a_read_under_a_grant_keeps_the_keys_and_a_revocation_destroys_them(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha = people
    grant = _grant(alpha, li_at_alpha)
    first = _read(beta, doctor, li_at_beta)
    kept = _kept(alpha)
    assert kept and {(grantee, basis) for _, grantee, basis in kept} == {("beta", grant.hash)}
    # One key per section read: the normal sections of her alpha entries.
    opened = sum(1 for view in first if view.content is not None)
    assert len(kept) == opened
    # The next read hands out the same kept keys; none are made again.
    second = _read(beta, doctor, li_at_beta)
    assert _kept(alpha) == kept
    assert [v.content for v in second] == [v.content for v in first]

    with tenant_context(alpha):
        consent_revoke(
            user=li_at_alpha.user, password=PASSWORD, grantee_type="tenant", grantee_id="beta"
        )
    assert _kept(alpha) == []
    after = _read(beta, doctor, li_at_beta)
    assert all(view.content is None for view in after)
    assert _kept(alpha) == []  # a refused read makes none


def test_a_replacing_grant_destroys_the_keys_of_the_one_it_replaces(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha = people
    first = _grant(alpha, li_at_alpha)
    _read(beta, doctor, li_at_beta)
    assert {basis for _, _, basis in _kept(alpha)} == {first.hash}
    with tenant_context(alpha):
        narrower = consent_grant(
            user=li_at_alpha.user,
            password=PASSWORD,
            grantee_type="tenant",
            grantee_id="beta",
            categories=["labs"],
        )
    assert _kept(alpha) == []
    _read(beta, doctor, li_at_beta)
    assert {basis for _, _, basis in _kept(alpha)} <= {narrower.hash}


def test_keys_kept_under_an_expired_grant_are_destroyed_by_the_beat_task(alpha, beta, people):
    doctor, li_at_beta, li_at_alpha = people
    _grant(alpha, li_at_alpha, expires_at=timezone.now() + timedelta(hours=1))
    _read(beta, doctor, li_at_beta)
    with tenant_context(alpha):
        assert GranteeKeyWrap.objects.filter(expires_at__isnull=False).exists()
    # Nothing has expired yet: the task keeps them.
    assert grantee_wraps_expire_task.apply().get() == 0
    assert _kept(alpha)
    with tenant_context(alpha):
        GranteeKeyWrap.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert grantee_wraps_expire_task.apply().get() > 0
    assert _kept(alpha) == []


def test_erasing_a_record_destroys_the_keys_kept_for_grantees(alpha, beta, people):
    from records.models import Record
    from records.services import record_erase

    doctor, li_at_beta, li_at_alpha = people
    _grant(alpha, li_at_alpha)
    _read(beta, doctor, li_at_beta)
    with tenant_context(alpha):
        record = Record.objects.filter(sections__grantee_wraps__isnull=False).first()
        admin = User.objects.get(username="alpha-admin")
        record_erase(actor=admin, record=record, reason="Entered for the wrong patient")
        assert not GranteeKeyWrap.objects.filter(section__record=record).exists()
        assert GranteeKeyWrap.objects.exclude(section__record=record).exists()
