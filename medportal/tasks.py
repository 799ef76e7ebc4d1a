from __future__ import annotations

import time

from celery import shared_task

from medportal.health import HEARTBEAT_KEY, redis_client


@shared_task(ignore_result=True)
def heartbeat() -> None:
    """Beat -> broker -> worker -> Redis: `healthz` shows how long ago this ran."""
    redis_client().set(HEARTBEAT_KEY, str(time.time()), ex=24 * 60 * 60)
