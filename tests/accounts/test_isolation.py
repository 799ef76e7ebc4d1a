"""Nothing about a login, a session or a row crosses from one tenant to another."""

from __future__ import annotations

from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django_tenants.utils import tenant_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from accounts.receivers import SESSION_TENANT_KEY
from tests.conftest import client_for, login_client, user_at


def test_alpha_user_cannot_log_in_at_beta(alpha, beta):
    client = client_for(beta)
    response = client.post(
        "/accounts/login/", {"username": "alpha-doctor", "password": settings.DEMO_PASSWORD}
    )
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert client.get("/api/v1/me").status_code == 401


def test_alpha_user_cannot_log_in_at_hub(alpha, hub):
    client = client_for(hub)
    response = client.post(
        "/accounts/login/", {"username": "alpha-admin", "password": settings.DEMO_PASSWORD}
    )
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_alpha_session_cookie_is_not_accepted_at_beta(alpha, beta):
    alpha_client = login_client(alpha, "alpha-doctor")
    cookie = alpha_client.cookies[settings.SESSION_COOKIE_NAME].value
    assert alpha_client.get("/api/v1/me").json()["username"] == "alpha-doctor"

    beta_client = client_for(beta)
    beta_client.cookies[settings.SESSION_COOKIE_NAME] = cookie
    assert beta_client.get("/api/v1/me").status_code == 401
    response = beta_client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_session_stamped_for_another_tenant_is_refused(alpha, beta):
    beta_doctor = user_at(beta, "beta-doctor")
    with tenant_context(beta):
        session = SessionStore()
        session["_auth_user_id"] = str(beta_doctor.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = beta_doctor.get_session_auth_hash()
        session[SESSION_TENANT_KEY] = alpha.schema_name  # not beta
        session.create()
    client = client_for(beta)
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    assert client.get("/api/v1/me").status_code == 401


def test_alpha_token_is_not_accepted_at_beta(alpha, beta):
    with tenant_context(alpha):
        token = Token.objects.create(user=User.objects.get(username="alpha-doctor"))
    me_at_alpha = client_for(alpha).get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert me_at_alpha.status_code == 200
    assert me_at_alpha.json()["tenant"]["slug"] == "alpha"
    me_at_beta = client_for(beta).get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert me_at_beta.status_code == 401


def test_orm_in_alpha_context_never_returns_beta_rows(alpha, beta):
    with tenant_context(alpha):
        alpha_usernames = set(User.objects.values_list("username", flat=True))
        assert not User.objects.filter(username__startswith="beta-").exists()
    with tenant_context(beta):
        beta_usernames = set(User.objects.values_list("username", flat=True))
    # The demo's staff and patients, and its research patients (research.demo.SEEDED).
    alpha_research = {f"alpha-research-{n}" for n in range(1, 7)}
    beta_research = {"beta-research-1", "beta-research-2"}
    assert alpha_usernames == {
        "alpha-admin",
        "alpha-doctor",
        "alpha-patient",
        "alpha-patient-2",
    } | alpha_research
    assert beta_usernames == {
        "beta-admin",
        "beta-doctor",
        "beta-patient",
        "beta-patient-2",
    } | beta_research


def test_same_person_has_separate_accounts_at_each_hospital(alpha, beta):
    alpha_patient = user_at(alpha, "alpha-patient")
    beta_patient = user_at(beta, "beta-patient")
    # Patient accounts hold no name: it lives in the encrypted patient profile.
    assert alpha_patient.get_full_name() == beta_patient.get_full_name() == ""
    assert alpha_patient.pk != beta_patient.pk or alpha_patient.password != beta_patient.password
    assert alpha_patient.role == beta_patient.role == "patient"
