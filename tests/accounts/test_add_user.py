"""`manage.py add_user`: an operator's way to add staff, never patients."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from tests.conftest import user_at

pytestmark = pytest.mark.django_db


NEW_PASSWORD = "a-long-first-password-7"


def _run(monkeypatch, *args):
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
    out = io.StringIO()
    call_command("add_user", *args, "--password-stdin", stdout=out)
    return out.getvalue()


def test_adds_a_doctor_with_an_argon2_password(alpha, monkeypatch):
    output = _run(monkeypatch, "--tenant", "alpha", "--role", "doctor", "--username", "dr-new")
    assert "Added dr-new (doctor) at alpha." in output
    doctor = user_at(alpha, "dr-new")
    assert doctor.password.startswith("argon2$")


def test_refuses_a_patient_and_says_where_patients_are_registered(alpha, monkeypatch):
    with pytest.raises(CommandError, match="New patient page"):
        _run(monkeypatch, "--tenant", "alpha", "--role", "patient", "--username", "p-new")
    with pytest.raises(User.DoesNotExist):
        user_at(alpha, "p-new")


def test_unknown_tenant_is_a_clear_error(monkeypatch):
    with pytest.raises(CommandError, match="no tenant with slug 'nowhere'"):
        _run(monkeypatch, "--tenant", "nowhere", "--role", "doctor", "--username", "x")
