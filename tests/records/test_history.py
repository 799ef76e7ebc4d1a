"""Who reads what: a linked patient sees every hospital's records, others see none."""

from __future__ import annotations

import pytest
from django.http import Http404
from django_tenants.utils import tenant_context

from accounts.models import User
from records.models import Patient
from records.selectors import (
    patient_history_for_user,
    patient_list_for_user,
    record_search_for_user,
    record_view_for_user,
    records_for_staff,
)

pytestmark = pytest.mark.django_db


def _user(tenant, username):
    with tenant_context(tenant):
        return User.objects.get(username=username)


def test_demo_li_wei_is_one_pseudonym_at_alpha_and_beta(alpha, beta):
    with tenant_context(alpha):
        alpha_li = Patient.objects.get(user__username="alpha-patient")
    with tenant_context(beta):
        beta_li = Patient.objects.get(user__username="beta-patient")
    assert alpha_li.pseudonym == beta_li.pseudonym
    assert len(beta_li.former_pseudonyms) == 1
    assert alpha_li.key_id == beta_li.key_id


@pytest.mark.parametrize("slug", ["alpha", "beta"])
def test_linked_patient_sees_both_hospitals_records_from_either_portal(request, slug):
    tenant = request.getfixturevalue(slug)
    with tenant_context(tenant):
        user = User.objects.get(username=f"{slug}-patient")
        history = patient_history_for_user(user=user)
    assert {view.origin_slug for view in history} == {"alpha", "beta"}
    assert all(not view.errors for view in history)
    complaints = {view.content["encounter"]["chief_complaint"] for view in history}
    assert "Wheeze at night" in complaints
    assert "Blood pressure review" in complaints
    assert [view.created_at for view in history] == sorted(
        (view.created_at for view in history), reverse=True
    )
    assert all(view.block_height is not None for view in history)


def test_unlinked_patient_sees_only_their_own_hospital(alpha):
    with tenant_context(alpha):
        user = User.objects.get(username="alpha-patient-2")
        history = patient_history_for_user(user=user)
    assert [view.origin_slug for view in history] == ["alpha"]
    assert history[0].content["diagnoses"][0]["code"] == "E11.9"


def test_patient_cannot_open_another_patients_record(alpha):
    with tenant_context(alpha):
        li = User.objects.get(username="alpha-patient")
        maria = Patient.objects.get(user__username="alpha-patient-2")
        maria_record = maria.records.get()
        with pytest.raises(Http404):
            record_view_for_user(user=li, record_id=maria_record.id)
        with pytest.raises(Http404):
            patient_list_for_user(user=li)


def test_staff_read_their_hospitals_records_only(alpha, beta):
    with tenant_context(beta):
        beta_doctor = User.objects.get(username="beta-doctor")
        beta_li = Patient.objects.get(user__username="beta-patient")
        views = records_for_staff(user=beta_doctor, patient=beta_li)
    assert {view.origin_slug for view in views} == {"beta"}
    assert views[0].content["diagnoses"][0]["code"] == "J45.9"


def test_doctor_finds_patients_and_records_by_blind_index(alpha):
    with tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        by_number = patient_list_for_user(user=doctor, query="a-100234")
        by_name = patient_list_for_user(user=doctor, query="  li   WEI ")
        partial = patient_list_for_user(user=doctor, query="Li")
        by_code = record_search_for_user(user=doctor, icd10="i10")
        by_drug = record_search_for_user(user=doctor, drug="METFORMIN")
        code_owner = [record.patient.user.username for record in by_code]
        drug_owner = [record.patient.user.username for record in by_drug]
    assert [row.identity.record_number for row in by_number] == ["A-100234"]
    assert [row.identity.full_name for row in by_name] == ["Li Wei"]
    assert partial == []
    # Li Wei, and the demo's research patients with I10 (research.demo.SEEDED).
    assert sorted(code_owner) == [
        "alpha-patient",
        *(f"alpha-research-{n}" for n in (1, 2, 3, 5, 6)),
    ]
    assert drug_owner == ["alpha-patient-2"]
