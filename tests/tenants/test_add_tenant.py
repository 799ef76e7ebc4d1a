from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

from medportal.tenants.models import Domain, Tenant
from tests.conftest import PROJECT_ROOT, child_environment


def schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [name])
        return cursor.fetchone() is not None


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_add_tenant_creates_schema_and_domain(db):
    output = StringIO()
    call_command("add_tenant", kind="hospital", slug="gamma-care", name="Gamma Care", stdout=output)
    assert "Created hospital 'gamma-care'" in output.getvalue()
    tenant = Tenant.objects.get(slug="gamma-care")
    assert (tenant.kind, tenant.name, tenant.schema_name) == (
        "hospital",
        "Gamma Care",
        "gamma_care",
    )
    assert list(Domain.objects.filter(tenant=tenant).values_list("domain", flat=True)) == [
        "gamma-care.localhost"
    ]
    assert schema_exists("gamma_care")


def test_add_tenant_twice_changes_nothing_and_says_so(db):
    call_command("add_tenant", kind="research", slug="delta", name="Delta Lab", stdout=StringIO())
    before = (Tenant.objects.count(), Domain.objects.count())
    output = StringIO()
    call_command("add_tenant", kind="research", slug="delta", name="Delta Lab", stdout=output)
    assert "already exists" in output.getvalue()
    assert "nothing changed" in output.getvalue()
    assert (Tenant.objects.count(), Domain.objects.count()) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "hospital", "--slug", "Bad_Slug!", "--name", "X"], "invalid slug 'Bad_Slug!'"),
        (["--kind", "hospital", "--slug", "public", "--name", "X"], "reserved"),
        (["--kind", "clinic", "--slug", "epsilon", "--name", "X"], "unknown kind 'clinic'"),
        (
            ["--kind", "research", "--slug", "alpha", "--name", "Alpha General Hospital"],
            "already taken by a hospital",
        ),
        (
            ["--kind", "hospital", "--slug", "alpha", "--name", "Another Name"],
            "already exists with the name 'Alpha General Hospital'",
        ),
    ],
)
def test_add_tenant_refuses_bad_input_with_exit_2(db, args, message):
    with schema_context(get_public_schema_name()):
        tenants_before = sorted(Tenant.objects.values_list("slug", "kind", "name"))
    result = manage("add_tenant", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(Tenant.objects.values_list("slug", "kind", "name")) == tenants_before


def test_list_tenants_prints_slug_kind_domain_schema(db):
    output = StringIO()
    call_command("list_tenants", stdout=output)
    lines = [line.split() for line in output.getvalue().splitlines()]
    assert lines[0] == ["SLUG", "KIND", "DOMAIN", "SCHEMA"]
    assert ["alpha", "hospital", "alpha.localhost", "alpha"] in lines
    assert ["beta", "hospital", "beta.localhost", "beta"] in lines
    assert ["northwind", "research", "northwind.localhost", "northwind"] in lines
    assert ["hub", "hub", "localhost", "public"] in lines


def test_unknown_host_is_a_friendly_404(db):
    from django.test import Client

    response = Client(HTTP_HOST="nowhere.localhost").get("/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"Traceback" not in response.content


def test_host_outside_base_domain_is_refused_with_empty_404(db):
    from django.test import Client

    response = Client(HTTP_HOST="evil.example.com").get("/")
    # django-tenants answers a host outside ALLOWED_HOSTS with an empty 404.
    assert response.status_code == 404
    assert response.content == b""
