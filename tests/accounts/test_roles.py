"""The role check, through pages, the admin and the service."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.permissions import user_has_role
from accounts.roles import Role
from accounts.services import user_create
from tests.conftest import PASSWORD, client_for, login_client, user_at

NEW_PERSON = {
    "role": "doctor",
    "first_name": "Sam",
    "last_name": "Taylor",
    "username": "s.taylor",
    "email": "",
    "password": "a-long-temporary-pass-42",
}


def usernames(tenant) -> set[str]:
    with tenant_context(tenant):
        return set(User.objects.values_list("username", flat=True))


@pytest.mark.parametrize("path", ["/accounts/people/", "/accounts/people/new/"])
def test_patient_opening_a_staff_page_gets_403(alpha, path):
    client = login_client(alpha, "alpha-patient")
    response = client.get(path)
    assert response.status_code == 403
    assert b"You do not have access to this page" in response.content


def test_patient_posting_the_add_person_form_gets_403_and_nothing_changes(alpha):
    before = usernames(alpha)
    client = login_client(alpha, "alpha-patient")
    response = client.post("/accounts/people/new/", NEW_PERSON)
    assert response.status_code == 403
    assert usernames(alpha) == before


def test_researcher_cannot_open_people_pages(northwind):
    client = login_client(northwind, "northwind-researcher")
    assert client.get("/accounts/people/").status_code == 403


def test_anonymous_visitor_is_sent_to_sign_in(alpha):
    response = client_for(alpha).get("/accounts/people/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/accounts/people/"


def test_doctor_adds_a_colleague_who_must_then_change_password(alpha):
    client = login_client(alpha, "alpha-doctor")
    response = client.post("/accounts/people/new/", NEW_PERSON)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/people/"
    person = user_at(alpha, "s.taylor")
    assert (person.role, person.get_full_name(), person.must_change_password) == (
        "doctor",
        "Sam Taylor",
        True,
    )
    assert person.password.startswith("argon2$")

    newcomer = login_client(alpha, "s.taylor", NEW_PERSON["password"])
    response = newcomer.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/"
    assert newcomer.get("/api/v1/me").status_code == 403
    response = newcomer.post(
        "/accounts/password/",
        {
            "old_password": NEW_PERSON["password"],
            "new_password1": "my-own-secret-phrase-7",
            "new_password2": "my-own-secret-phrase-7",
        },
    )
    assert response.status_code == 302
    assert newcomer.get("/").status_code == 200
    assert user_at(alpha, "s.taylor").must_change_password is False


def test_doctor_cannot_add_an_admin_and_nothing_changes(alpha):
    before = usernames(alpha)
    client = login_client(alpha, "alpha-doctor")
    response = client.post("/accounts/people/new/", {**NEW_PERSON, "role": "admin"})
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert usernames(alpha) == before


def test_patients_are_not_added_on_the_people_page_and_nothing_changes(alpha):
    before = usernames(alpha)
    client = login_client(alpha, "alpha-doctor")
    response = client.post("/accounts/people/new/", {**NEW_PERSON, "role": "patient"})
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert usernames(alpha) == before


def test_admin_can_add_an_admin(alpha):
    client = login_client(alpha, "alpha-admin")
    response = client.post(
        "/accounts/people/new/", {**NEW_PERSON, "role": "admin", "username": "second-admin"}
    )
    assert response.status_code == 302
    assert user_at(alpha, "second-admin").role == "admin"


def test_add_person_form_shows_field_errors_and_keeps_input(alpha):
    client = login_client(alpha, "alpha-doctor")
    response = client.post(
        "/accounts/people/new/", {**NEW_PERSON, "username": "alpha-patient", "password": "short"}
    )
    assert response.status_code == 400
    content = response.content.decode()
    assert "That username is already taken at this hospital." in content
    assert 'value="Sam"' in content


def test_weak_password_is_refused_by_the_form(alpha):
    before = usernames(alpha)
    client = login_client(alpha, "alpha-doctor")
    response = client.post("/accounts/people/new/", {**NEW_PERSON, "password": "12345678901"})
    assert response.status_code == 400
    assert "This password is entirely numeric." in response.content.decode()
    assert usernames(alpha) == before


def test_service_refuses_a_role_the_actor_may_not_create(alpha):
    doctor = user_at(alpha, "alpha-doctor")
    with tenant_context(alpha), pytest.raises(PermissionDenied):
        user_create(actor=doctor, username="x", role=Role.ADMIN, password="long-enough-pass-1")
    assert "x" not in usernames(alpha)


def test_service_refuses_a_role_foreign_to_the_tenant_kind(alpha):
    from django.core.exceptions import ValidationError

    with tenant_context(alpha), pytest.raises(ValidationError) as error:
        user_create(actor=None, username="op2", role=Role.OPERATOR, password="long-enough-pass-1")
    assert "does not exist at this tenant" in str(error.value)


@pytest.mark.parametrize(
    ("slug", "username", "allowed", "denied"),
    [
        ("alpha", "alpha-admin", {Role.ADMIN}, {Role.DOCTOR, Role.PATIENT, Role.OPERATOR}),
        ("alpha", "alpha-doctor", {Role.DOCTOR}, {Role.ADMIN, Role.PATIENT}),
        ("alpha", "alpha-patient", {Role.PATIENT}, {Role.DOCTOR, Role.ADMIN}),
        ("hub", "operator", {Role.OPERATOR}, {Role.ADMIN}),
        ("northwind", "northwind-researcher", {Role.RESEARCHER}, {Role.DOCTOR}),
    ],
)
def test_user_has_role_matrix(db, slug, username, allowed, denied):
    from medportal.tenants.models import Tenant

    tenant = Tenant.objects.get(slug=slug)
    user = user_at(tenant, username)
    for role in allowed:
        assert user_has_role(user, [role], tenant)
    for role in denied:
        assert not user_has_role(user, [role], tenant)


def test_role_of_another_tenant_kind_is_never_enough(alpha, northwind):
    # A (mis-created) operator row in a hospital schema gets nothing there.
    researcher = user_at(northwind, "northwind-researcher")
    assert not user_has_role(researcher, [Role.RESEARCHER], alpha)


def test_inactive_user_has_no_role(alpha):
    doctor = user_at(alpha, "alpha-doctor")
    doctor.is_active = False
    assert not user_has_role(doctor, [Role.DOCTOR], alpha)


def test_hospital_admin_uses_the_admin_of_their_hospital_only(alpha):
    client = login_client(alpha, "alpha-admin")
    index = client.get("/admin/")
    assert index.status_code == 200
    assert b"Alpha General Hospital: administration" in index.content
    assert client.get("/admin/accounts/user/").status_code == 200
    # The hub's tenant registry is not on a hospital's admin site.
    assert client.get("/admin/tenants/tenant/").status_code == 404


def test_doctor_is_kept_out_of_the_admin(alpha):
    client = login_client(alpha, "alpha-doctor")
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_operator_uses_the_hub_admin_and_tenant_page(hub):
    client = login_client(hub, "operator")
    assert client.get("/admin/tenants/tenant/").status_code == 200
    response = client.get("/hub/tenants/")
    assert response.status_code == 200
    assert b"Alpha General Hospital" in response.content


def test_admin_user_form_refuses_a_role_foreign_to_the_hospital(alpha):
    client = login_client(alpha, "alpha-admin")
    before = usernames(alpha)
    response = client.post(
        "/admin/accounts/user/add/",
        {
            "username": "sneaky-op",
            "role": "operator",
            "first_name": "",
            "last_name": "",
            "email": "",
            "usable_password": "true",
            "password1": "long-enough-pass-1",
            "password2": "long-enough-pass-1",
        },
    )
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content or b"must be one of" in response.content
    assert usernames(alpha) == before


@pytest.mark.parametrize(
    ("slug", "username", "marker"),
    [
        ("hub", "operator", b'data-role="operator"'),
        ("alpha", "alpha-admin", b'data-role="admin"'),
        ("alpha", "alpha-doctor", b'data-role="doctor"'),
        ("alpha", "alpha-patient", b'data-role="patient"'),
        ("beta", "beta-doctor", b'data-role="doctor"'),
        ("beta", "beta-patient", b'data-role="patient"'),
        ("northwind", "northwind-researcher", b'data-role="researcher"'),
    ],
)
def test_each_demo_user_lands_on_their_role_home(db, slug, username, marker):
    from medportal.tenants.models import Tenant

    client = login_client(Tenant.objects.get(slug=slug), username, PASSWORD)
    response = client.get("/")
    assert response.status_code == 200
    assert marker in response.content
    assert b"What you can do next" in response.content


def test_logout_needs_post_and_ends_the_session(alpha):
    client = login_client(alpha, "alpha-doctor")
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/api/v1/me").status_code == 401


def test_add_person_page_sends_patient_registration_to_the_records_page(alpha):
    response = login_client(alpha, "alpha-doctor").get("/accounts/people/new/")
    assert response.status_code == 200
    assert b'href="/records/patients/new/"' in response.content
    assert b'value="patient"' not in response.content
