"""`/healthz` against the real database, Redis and a real Celery worker."""

from __future__ import annotations

import pytest
from django.test import override_settings

from medportal.celery import app
from tests.conftest import client_for


@pytest.mark.live
def test_healthz_is_200_when_database_redis_and_worker_are_up(alpha, live_worker):
    response = client_for(alpha).get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["redis"], body["worker"]) == (
        "ok",
        "ok",
        "ok",
        "ok",
    )


@pytest.mark.live
def test_healthz_answers_on_the_hub_too(hub, live_worker):
    assert client_for(hub).get("/healthz").json()["status"] == "ok"


def test_healthz_is_503_when_redis_is_down(alpha):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client_for(alpha).get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["redis"], body["worker"]) == (
        "down",
        "ok",
        "down",
        "down",
    )


def test_healthz_is_503_when_no_worker_serves_the_queue(alpha):
    original = app.conf.task_default_queue
    app.conf.task_default_queue = "nobody-consumes-this-queue"
    try:
        response = client_for(alpha).get("/healthz")
    finally:
        app.conf.task_default_queue = original
    assert response.status_code == 503
    assert (response.json()["worker"], response.json()["redis"]) == ("down", "ok")


def test_healthz_only_answers_get(alpha):
    assert client_for(alpha).post("/healthz").status_code == 405
