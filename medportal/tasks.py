from __future__ import annotations

import time

from celery import shared_task

from medportal.health import redis_client, redis_key


@shared_task(ignore_result=True)
def heartbeat() -> None:
    """Beat -> broker -> worker -> Redis: `healthz` shows how long ago this ran."""
    redis_client().set(redis_key("beat-heartbeat"), str(time.time()), ex=24 * 60 * 60)
