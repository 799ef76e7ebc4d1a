from __future__ import annotations

from django.test import override_settings
from django.urls import path

from tests.conftest import client_for, login_client


def test_404_page_is_friendly_and_leaks_nothing(alpha):
    response = client_for(alpha).get("/no/such/page/?secret=1")
    assert response.status_code == 404
    content = response.content.decode()
    assert "Page not found" in content
    for leak in ("Traceback", "urlpatterns", "secret", "medportal.urls", "DEBUG"):
        assert leak not in content


def test_403_page_is_friendly(alpha):
    response = login_client(alpha, "alpha-patient").get("/accounts/people/")
    assert response.status_code == 403
    assert "You do not have access to this page" in response.content.decode()


def boom(request):
    raise RuntimeError("database password is hunter2")


urlpatterns = [path("boom/", boom)]
handler500 = "medportal.errors.server_error"


@override_settings(ROOT_URLCONF=__name__)
def test_500_page_is_friendly_and_leaks_nothing(alpha):
    response = client_for(alpha, raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    content = response.content.decode()
    assert "Something went wrong on our side" in content
    assert "hunter2" not in content
    assert "Traceback" not in content


def test_csrf_failure_is_a_friendly_403(alpha):
    client = client_for(alpha, enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "a", "password": "b"})
    assert response.status_code == 403
    assert "Your form expired" in response.content.decode()
