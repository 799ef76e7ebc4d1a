"""Thin tasks: enter the right schema, call a service."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def access_log_anchor_task() -> int:
    """Beat, in the public schema: anchor every hospital's new access-log entries."""
    from consent.services import access_log_anchor_hospitals

    return access_log_anchor_hospitals()
