from __future__ import annotations

from django.conf import settings
from django.test import override_settings

from tests.conftest import PASSWORD, client_for


def attempt(client, username: str, password: str, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def fail_until_locked(client, username: str, **extra) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, username, "wrong-password", **extra).status_code == 200
    assert attempt(client, username, "wrong-password", **extra).status_code == 429


def test_repeated_failures_lock_the_account_even_with_the_right_password(alpha):
    client = client_for(alpha)
    fail_until_locked(client, "alpha-doctor")
    response = attempt(client, "alpha-doctor", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_lockout_is_per_username_and_address(alpha):
    fail_until_locked(client_for(alpha, REMOTE_ADDR="10.0.0.1"), "alpha-doctor")
    # The same person from another address, and another person from the
    # locked address, can still sign in.
    assert (
        attempt(client_for(alpha, REMOTE_ADDR="10.0.0.2"), "alpha-doctor", PASSWORD).status_code
        == 302
    )
    assert (
        attempt(client_for(alpha, REMOTE_ADDR="10.0.0.1"), "alpha-admin", PASSWORD).status_code
        == 302
    )


def test_lockout_at_one_hospital_does_not_lock_another(alpha, beta):
    fail_until_locked(client_for(alpha), "alpha-doctor")
    assert attempt(client_for(beta), "beta-doctor", PASSWORD).status_code == 302


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_behind_a_proxy_the_forwarded_client_address_is_used(alpha):
    proxy = {"REMOTE_ADDR": "192.0.2.10"}
    fail_until_locked(
        client_for(alpha, **proxy), "alpha-doctor", HTTP_X_FORWARDED_FOR="203.0.113.5"
    )
    # Another client behind the same proxy is not locked out...
    other = attempt(
        client_for(alpha, **proxy), "alpha-doctor", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.6"
    )
    assert other.status_code == 302
    # ...and the locked client cannot escape by prepending a forged address.
    forged = attempt(
        client_for(alpha, **proxy),
        "alpha-doctor",
        PASSWORD,
        HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.5",
    )
    assert forged.status_code == 429


def test_without_a_trusted_proxy_a_forged_header_changes_nothing(alpha):
    fail_until_locked(client_for(alpha), "alpha-doctor")
    response = attempt(
        client_for(alpha), "alpha-doctor", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.77"
    )
    assert response.status_code == 429


def test_client_ip_takes_the_address_the_trusted_proxy_saw(rf):
    from accounts.security import client_ip

    request = rf.get("/", REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
    with override_settings(TRUSTED_PROXY_COUNT=0):
        assert client_ip(request) == "192.0.2.10"
    with override_settings(TRUSTED_PROXY_COUNT=1):
        assert client_ip(request) == "203.0.113.5"
    with override_settings(TRUSTED_PROXY_COUNT=2):
        assert client_ip(request) == "6.6.6.6"
    with override_settings(TRUSTED_PROXY_COUNT=3):
        assert client_ip(request) == "192.0.2.10"
    garbage = rf.get("/", REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="not-an-ip")
    with override_settings(TRUSTED_PROXY_COUNT=1):
        assert client_ip(garbage) == "192.0.2.10"
