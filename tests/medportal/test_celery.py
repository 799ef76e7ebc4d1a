"""Tasks carry their tenant into a real worker, and refuse to run without one."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from accounts.tasks import sessions_clear_expired, welcome_email_send
from medportal.celery import TenantTaskInPublicSchema, app
from tests.conftest import wait_for


def test_celery_settings_survive_a_killed_worker():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.broker_transport_options["visibility_timeout"] >= 3600
    assert {"sessions-clear-expired", "worker-heartbeat"} <= set(app.conf.beat_schedule)


@pytest.mark.live
def test_task_runs_in_the_tenant_it_was_sent_from(committed, live_worker, django_db_blocker):
    """A doctor adds a patient with an e-mail; the worker finds that user in
    alpha's schema (the same id in another schema is someone else or nobody)
    and writes the welcome e-mail with alpha's address."""
    alpha = committed["alpha"]
    username = f"welcome-{uuid.uuid4().hex[:8]}"
    email = f"{username}@example.org"
    with django_db_blocker.unblock(), tenant_context(alpha):
        doctor = User.objects.get(username="alpha-doctor")
        # Committed for real (no test transaction), so the on_commit hook fires
        # and the worker process can read the row.
        user = user_create(
            actor=doctor,
            username=username,
            role="patient",
            password="temporary-pass-123",
            email=email,
        )
    try:

        def mail_arrived():
            for message in live_worker.mail_dir.glob("*.log"):
                text = message.read_text()
                if email in text:
                    return text
            return None

        text = wait_for(mail_arrived, timeout=30, what="the welcome e-mail")
        assert "Your MedPortal account at Alpha General Hospital" in text
        assert "http://alpha.localhost:" in text
        assert f"'{username}'" in text
        assert "temporary-pass-123" not in text
    finally:
        with django_db_blocker.unblock(), tenant_context(alpha):
            User.objects.filter(pk=user.pk).delete()


def test_tenant_task_refuses_to_run_in_the_public_schema(db):
    result = welcome_email_send.apply(args=[1])
    assert result.failed()
    assert isinstance(result.result, TenantTaskInPublicSchema)


def test_sessions_clear_expired_visits_every_schema(alpha, beta):
    def expired_session(tenant) -> str:
        with tenant_context(tenant):
            session = SessionStore()
            session["x"] = 1
            session.set_expiry(-60)
            session.create()
            Session.objects.filter(session_key=session.session_key).update(
                expire_date=timezone.now() - timezone.timedelta(minutes=1)
            )
            return session.session_key

    keys = {alpha: expired_session(alpha), beta: expired_session(beta)}
    assert sessions_clear_expired() == 5  # hub, alpha, beta, northwind, southbank
    for tenant, key in keys.items():
        with tenant_context(tenant):
            assert not Session.objects.filter(session_key=key).exists()
