"""Websockets on a real ASGI server: tenant from the host, user from that
tenant's session, events only for that tenant."""

from __future__ import annotations

import json
import socket

import pytest
from django.conf import settings
from django_tenants.utils import tenant_context
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from medportal.realtime import event_send
from tests.conftest import login_client

pytestmark = pytest.mark.live


def open_socket(server, host: str, *, cookie: str | None = None, origin: str | None = "same"):
    sock = socket.create_connection(("127.0.0.1", server.port))
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
    if origin == "same":
        origin = f"http://{host}:{server.port}"
    return connect(
        f"ws://{host}:{server.port}/ws/events/",
        sock=sock,
        origin=origin,
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
    )


@pytest.fixture(scope="module")
def sessions(committed, django_db_blocker):
    with django_db_blocker.unblock():
        cookies = {
            slug: login_client(committed[slug], username)
            .cookies[settings.SESSION_COOKIE_NAME]
            .value
            for slug, username in (("alpha", "alpha-doctor"), ("beta", "beta-doctor"))
        }
    return cookies


def test_each_tenant_receives_its_own_events_only(live_server_process, sessions):
    with (
        open_socket(live_server_process, "alpha.localhost", cookie=sessions["alpha"]) as alpha,
        open_socket(live_server_process, "beta.localhost", cookie=sessions["beta"]) as beta,
    ):
        assert json.loads(alpha.recv(timeout=10)) == {
            "type": "hello",
            "tenant": "alpha",
            "role": "doctor",
        }
        assert json.loads(beta.recv(timeout=10)) == {
            "type": "hello",
            "tenant": "beta",
            "role": "doctor",
        }
        event_send(schema_name="alpha", payload={"type": "test", "n": 1})
        event_send(schema_name="beta", payload={"type": "test", "n": 2})
        assert json.loads(alpha.recv(timeout=10)) == {"type": "test", "n": 1}
        # beta's first event is its own: alpha's never reached it.
        assert json.loads(beta.recv(timeout=10)) == {"type": "test", "n": 2}


def test_user_events_reach_only_that_user(
    live_server_process, sessions, committed, django_db_blocker
):
    from accounts.models import User

    with django_db_blocker.unblock(), tenant_context(committed["alpha"]):
        doctor_id = User.objects.get(username="alpha-doctor").pk
        patient_id = User.objects.get(username="alpha-patient").pk
    with open_socket(live_server_process, "alpha.localhost", cookie=sessions["alpha"]) as alpha:
        alpha.recv(timeout=10)
        event_send(schema_name="alpha", user_id=patient_id, payload={"for": "patient"})
        event_send(schema_name="alpha", user_id=doctor_id, payload={"for": "doctor"})
        assert json.loads(alpha.recv(timeout=10)) == {"for": "doctor"}


def test_anonymous_socket_is_closed_with_4401(live_server_process):
    with open_socket(live_server_process, "alpha.localhost") as anonymous:
        with pytest.raises(Exception) as closed:
            anonymous.recv(timeout=10)
    assert getattr(closed.value, "rcvd", None) is not None
    assert closed.value.rcvd.code == 4401


def test_unknown_host_is_refused(live_server_process):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(live_server_process, "nowhere.localhost")
    assert refused.value.response.status_code == 403


def test_foreign_origin_is_refused(live_server_process, sessions):
    # A page on beta may not open alpha's socket, although both hosts are allowed.
    with pytest.raises(InvalidStatus) as refused:
        open_socket(
            live_server_process,
            "alpha.localhost",
            cookie=sessions["alpha"],
            origin=f"http://beta.localhost:{live_server_process.port}",
        )
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        open_socket(
            live_server_process,
            "alpha.localhost",
            cookie=sessions["alpha"],
            origin="http://evil.example.com",
        )


def test_missing_origin_is_refused(live_server_process, sessions):
    with pytest.raises(InvalidStatus):
        open_socket(live_server_process, "alpha.localhost", cookie=sessions["alpha"], origin=None)


def test_alpha_cookie_gives_nothing_at_beta(live_server_process, sessions):
    with open_socket(live_server_process, "beta.localhost", cookie=sessions["alpha"]) as beta:
        with pytest.raises(Exception) as closed:
            beta.recv(timeout=10)
    assert closed.value.rcvd.code == 4401
