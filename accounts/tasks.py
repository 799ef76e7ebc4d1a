from __future__ import annotations

import logging

from celery import shared_task
from django.contrib.sessions.backends.db import SessionStore
from django.core.mail import send_mail
from django_tenants.utils import tenant_context

from medportal.celery import TenantTask

logger = logging.getLogger(__name__)


@shared_task(base=TenantTask, bind=True, max_retries=5, default_retry_delay=30)
def welcome_email_send(self, user_id: int) -> None:
    """Tell a newly added person where to sign in. Never includes the password."""
    from django.db import connection

    from accounts.models import User

    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or not user.email:
        return
    tenant = connection.tenant
    try:
        send_mail(
            subject=f"Your MedPortal account at {tenant.name}",
            message=(
                f"Hello {user.display_name},\n\n"
                f"An account was created for you at {tenant.name}.\n"
                f"Sign in at {tenant.url('/accounts/login/')} with the username "
                f"'{user.username}' and the temporary password you were given; "
                "you will be asked to choose your own.\n"
            ),
            from_email=None,
            recipient_list=[user.email],
        )
    except OSError as error:
        raise self.retry(exc=error) from None


@shared_task
def sessions_clear_expired() -> int:
    """Remove expired sessions from every schema (the hub's and each tenant's)."""
    from medportal.tenants.selectors import tenant_list

    count = 0
    for tenant in tenant_list():
        with tenant_context(tenant):
            SessionStore.clear_expired()
            count += 1
    logger.info("cleared expired sessions in %d schemas", count)
    return count
