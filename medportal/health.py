"""`GET /healthz`: database, Redis and worker status as JSON, 503 when one is down."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 1.0


def redis_key(name: str) -> str:
    """A Redis key of this deployment: named after its Celery queue, so that two
    deployments (or a test run beside `make run`) sharing one Redis never mix."""
    return f"medportal:{settings.CELERY_TASK_DEFAULT_QUEUE}:{name}"


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
    )


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001  (any failure means "down")
        logger.warning("healthz: database check failed: %s", type(error).__name__)
        return "down"
    return "ok"


def check_redis() -> tuple[str, float | None]:
    try:
        client = redis_client()
        client.ping()
        raw = client.get(redis_key("beat-heartbeat"))
    except redis.RedisError as error:
        logger.warning("healthz: redis check failed: %s", type(error).__name__)
        return "down", None
    heartbeat_age = round(time.time() - float(raw), 1) if raw else None
    return "ok", heartbeat_age


def check_worker() -> str:
    """A worker is up when one answers and consumes the queue tasks are sent to."""
    from medportal.celery import app

    queue = app.conf.task_default_queue
    try:
        replies = app.control.inspect(timeout=PROBE_TIMEOUT_SECONDS).active_queues() or {}
    except Exception as error:  # noqa: BLE001  (broker unreachable and the like)
        logger.warning("healthz: worker check failed: %s", type(error).__name__)
        return "down"
    for queues in replies.values():
        if any(entry.get("name") == queue for entry in queues or []):
            return "ok"
    return "down"


@never_cache
@require_GET
def healthz(request) -> JsonResponse:
    database = check_database()
    redis_status, heartbeat_age = check_redis()
    worker = check_worker() if redis_status == "ok" else "down"
    healthy = database == redis_status == worker == "ok"
    body = {
        "status": "ok" if healthy else "down",
        "database": database,
        "redis": redis_status,
        "worker": worker,
        # Informational: seconds since beat last reached a worker (None: not yet).
        "beat_heartbeat_age_seconds": heartbeat_age,
    }
    return JsonResponse(body, status=200 if healthy else 503)
