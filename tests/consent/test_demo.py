"""The demo's consent state: what issue 6's checker will look at first."""

from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.models import AccessLogEntry
from records.models import Patient
from records.selectors import records_elsewhere_for_staff

pytestmark = pytest.mark.django_db


def test_beta_doctor_reads_li_weis_normal_alpha_entries_and_not_the_rest(beta):
    with tenant_context(beta):
        doctor = User.objects.get(username="beta-doctor")
        li = Patient.objects.get(user__username="beta-patient")
        views = records_elsewhere_for_staff(user=doctor, patient=li)
    assert views and all(view.origin_slug == "alpha" for view in views)
    assert all(view.content is not None for view in views)
    assert any(view.withheld == ["restricted"] for view in views)
    assert all(view.content["notes"] == [] for view in views)


@pytest.mark.parametrize("slug", ["alpha", "beta"])
def test_both_hospitals_access_logs_have_entries(request, slug):
    with tenant_context(request.getfixturevalue(slug)):
        assert AccessLogEntry.objects.filter(decision="allow").exists()
