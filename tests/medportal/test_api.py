from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django_tenants.utils import tenant_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from tests.conftest import client_for, login_client


def test_me_returns_user_role_and_tenant_with_a_session(alpha):
    response = login_client(alpha, "alpha-doctor").get("/api/v1/me")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("username", "name", "role", "tenant")} == {
        "username": "alpha-doctor",
        "name": "Ana Alvarez",
        "role": "doctor",
        "tenant": {"slug": "alpha", "name": "Alpha General Hospital", "kind": "hospital"},
    }


def test_me_works_with_a_token_at_the_hub(hub):
    with tenant_context(hub):
        token = Token.objects.create(user=User.objects.get(username="operator"))
    response = client_for(hub).get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert (response.json()["role"], response.json()["tenant"]["kind"]) == ("operator", "hub")


def test_me_without_credentials_is_401_with_a_message(alpha):
    response = client_for(alpha).get("/api/v1/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_obtaining_a_token_needs_the_password(alpha):
    from django.conf import settings

    client = client_for(alpha)
    bad = client.post("/api/v1/auth/token", {"username": "alpha-doctor", "password": "nope"})
    assert bad.status_code == 400
    good = client.post(
        "/api/v1/auth/token", {"username": "alpha-doctor", "password": settings.DEMO_PASSWORD}
    )
    assert good.status_code == 200
    token = good.json()["token"]
    me = client_for(alpha).get("/api/v1/me", HTTP_AUTHORIZATION=f"Token {token}")
    assert me.json()["username"] == "alpha-doctor"


@pytest.mark.parametrize("urlconf", ["medportal.urls_tenant", "medportal.urls_public"])
def test_openapi_schema_generates_and_validates_without_warnings(db, tmp_path: Path, urlconf):
    target = tmp_path / "schema.yaml"
    call_command(
        "spectacular",
        "--fail-on-warn",
        "--validate",
        "--urlconf",
        urlconf,
        "--file",
        str(target),
        stdout=StringIO(),
        stderr=StringIO(),
    )
    text = target.read_text()
    assert "/api/v1/me:" in text
    assert "openapi: 3" in text


def test_schema_and_docs_are_served(alpha):
    client = login_client(alpha, "alpha-doctor")
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/me" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
