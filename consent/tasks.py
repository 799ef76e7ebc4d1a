"""Thin tasks: enter the right schema, call a service."""

from __future__ import annotations

from celery import shared_task

from medportal.celery import TenantTask


@shared_task(ignore_result=True)
def access_log_anchor_task() -> int:
    """Beat, in the public schema: anchor every hospital's new access-log entries."""
    from consent.services import access_log_anchor_hospitals

    return access_log_anchor_hospitals()


@shared_task(ignore_result=True)
def grantee_wraps_expire_task() -> int:
    """Beat, in the public schema: destroy data keys kept under expired grants."""
    from medportal.exchange.services import grantee_wraps_expire_all

    return grantee_wraps_expire_all()


@shared_task(base=TenantTask, bind=True, max_retries=5, default_retry_delay=30, ignore_result=True)
def notification_email_send(self, notification_id: int) -> None:
    """In the notification's hospital schema: e-mail it to its recipient. Takes the
    id only; the address is read (and decrypted) here, never passed in."""
    from consent.notifications import notification_email

    try:
        notification_email(notification_id=notification_id)
    except OSError as error:
        raise self.retry(exc=error) from None
