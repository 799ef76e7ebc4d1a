"""Notifications: the patient is told at every hospital where they hold an account,
live over the websocket and by e-mail, with no record content."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail
from django_tenants.utils import tenant_context

from accounts.models import User
from consent.models import Notification
from consent.notifications import (
    notifications_for_user,
    notifications_mark_read,
    notify_external_read,
    patient_hospitals,
    patient_notify,
)
from consent.tasks import notification_email_send
from medportal.realtime import user_group
from records.models import Patient
from tests.conftest import login_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def li(alpha, beta):
    with tenant_context(alpha):
        at_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
    with tenant_context(beta):
        at_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    return at_alpha, at_beta


@pytest.fixture
def locmem_mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return mail.outbox


@pytest.fixture
def inbox(alpha, beta):
    """A person's notifications made during the test (not the demo seed's)."""
    baseline = {}
    for tenant in (alpha, beta):
        with tenant_context(tenant):
            baseline[tenant.slug] = (
                Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0
            )

    def read(tenant, user) -> list[Notification]:
        with tenant_context(tenant):
            return list(Notification.objects.filter(recipient=user, id__gt=baseline[tenant.slug]))

    return read


def test_the_chain_names_both_hospitals_of_a_linked_patient(alpha, beta, li):
    _, at_beta = li
    _, hospitals = patient_hospitals(patient_pseudonyms=at_beta.pseudonyms)
    assert [hospital.slug for hospital in hospitals] == ["alpha", "beta"]
    with tenant_context(alpha):
        other = Patient.objects.get(user__username="alpha-patient-2")
    _, only_alpha = patient_hospitals(patient_pseudonyms=other.pseudonyms)
    assert [hospital.slug for hospital in only_alpha] == ["alpha"]


def test_patient_notify_writes_at_every_hospital_and_pushes_after_commit(
    alpha, beta, li, django_capture_on_commit_callbacks, monkeypatch, inbox
):
    at_alpha, at_beta = li
    pushed = []
    monkeypatch.setattr(
        "medportal.realtime.group_send_many", lambda messages: pushed.extend(messages)
    )
    enqueued = []
    monkeypatch.setattr(
        notification_email_send,
        "apply_async",
        lambda args, headers: enqueued.append((args, headers)),
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delivered = patient_notify(
            patient_pseudonyms=[at_beta.pseudonym], kind="access_request", text="Dr X asks."
        )
        assert pushed == [] and enqueued == []
    for callback in callbacks:
        callback()
    assert {(item.tenant_slug, item.user_id) for item in delivered} == {
        ("alpha", at_alpha.user_id),
        ("beta", at_beta.user_id),
    }
    assert [n.text for n in inbox(alpha, at_alpha.user)] == ["Dr X asks."]
    assert [n.text for n in inbox(beta, at_beta.user)] == ["Dr X asks."]
    assert sorted(group for group, _ in pushed) == sorted(
        [
            user_group(alpha.schema_name, at_alpha.user_id),
            user_group(beta.schema_name, at_beta.user_id),
        ]
    )
    assert all(payload["type"] == "notification" for _, payload in pushed)
    # Ids only in the task, and each in its own hospital's schema.
    assert sorted(enqueued, key=lambda item: item[1]["_schema_name"]) == sorted(
        [([item.notification_id], {"_schema_name": item.schema_name}) for item in delivered],
        key=lambda item: item[1]["_schema_name"],
    )


def test_the_live_event_reaches_the_patients_socket_group(
    alpha, li, django_capture_on_commit_callbacks, monkeypatch
):
    at_alpha, _ = li
    monkeypatch.setattr(notification_email_send, "apply_async", lambda **kwargs: None)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    group = user_group(alpha.schema_name, at_alpha.user_id)
    async_to_sync(layer.group_add)(group, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            patient_notify(
                patient_pseudonyms=at_alpha.pseudonyms, kind="external_read", text="Someone read."
            )
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(group, channel)
    assert message["type"] == "portal.event"
    assert message["payload"]["kind"] == "external_read"
    assert message["payload"]["text"] == "Someone read."


def test_external_read_is_told_once_within_the_quiet_period(alpha, beta, li, inbox):
    at_alpha, at_beta = li
    for _ in range(2):
        notify_external_read(
            patient_pseudonyms=at_beta.pseudonyms,
            # Not the demo's reader: the demo seed told Li Wei of Ben Brown's read.
            reader_name="Quinn Quiet",
            reader_tenant_name="Beta University Hospital",
            origin_tenant_name="Alpha General Hospital",
        )
    inbox = inbox(alpha, at_alpha.user)
    assert [n.kind for n in inbox] == ["external_read"]
    assert inbox[0].text == (
        "Quinn Quiet at Beta University Hospital opened your records from "
        "Alpha General Hospital. It is in your access log."
    )


def test_the_email_task_sends_the_notification_to_the_identity_address_once(alpha, li, locmem_mail):
    at_alpha, _ = li
    delivered = patient_notify(
        patient_pseudonyms=at_alpha.pseudonyms,
        kind="emergency_access",
        text="Ben Brown at Beta University Hospital declared an emergency access.",
    )
    notification_id = next(i.notification_id for i in delivered if i.tenant_slug == "alpha")
    with tenant_context(alpha):
        notification_email_send.run(notification_id)
        notification_email_send.run(notification_id)  # a second run sends nothing
    assert len(locmem_mail) == 1
    email = locmem_mail[0]
    assert email.to == ["li.wei@example.org"]
    assert "Ben Brown at Beta University Hospital declared an emergency access." in email.body
    assert "/consent/notifications/" in email.body
    # Nothing of her record: no diagnosis codes, no name, no record number.
    for fragment in ("I10", "R73", "Li Wei", "Hypertension", "diagnos"):
        assert fragment not in email.body and fragment not in email.subject


def test_notifications_page_lists_and_marks_all_read(alpha, beta, li, inbox):
    at_alpha, _ = li
    patient_notify(patient_pseudonyms=at_alpha.pseudonyms, kind="access_request", text="First.")
    patient_notify(patient_pseudonyms=at_alpha.pseudonyms, kind="emergency_access", text="Second.")
    client = login_client(alpha, "alpha-patient")
    page = client.get("/consent/notifications/")
    assert page.status_code == 200
    body = page.content.decode()
    assert body.index("Second.") < body.index("First.")
    assert "Mark all read" in body
    response = client.post("/consent/notifications/")
    assert response.status_code == 302
    assert all(n.is_read for n in inbox(alpha, at_alpha.user))
    with tenant_context(alpha):
        assert all(n.is_read for n in notifications_for_user(user=at_alpha.user))
        assert notifications_mark_read(user=at_alpha.user) == 0
    # Beta's copies are beta's: reading at alpha leaves them unread.
    _, at_beta = li
    assert [n.is_read for n in inbox(beta, at_beta.user)] == [False, False]


def test_someone_elses_notifications_are_not_listed(alpha, li, inbox):
    at_alpha, _ = li
    with tenant_context(alpha):
        # Her own (the demo invites her to a research request) are read first.
        notifications_mark_read(user=User.objects.get(username="alpha-patient-2"))
    patient_notify(patient_pseudonyms=at_alpha.pseudonyms, kind="access_request", text="Private.")
    client = login_client(alpha, "alpha-patient-2")
    assert "Private." not in client.get("/consent/notifications/").content.decode()
    with tenant_context(alpha):
        other = User.objects.get(username="alpha-patient-2")
        assert notifications_mark_read(user=other) == 0
    assert [n.is_read for n in inbox(alpha, at_alpha.user)] == [False]
