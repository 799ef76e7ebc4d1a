"""Library hooks: stamp each new login with the tenant it belongs to."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.db import connection
from django.dispatch import receiver

SESSION_TENANT_KEY = "_medportal_tenant"


@receiver(user_logged_in, dispatch_uid="accounts.stamp_session_tenant")
def stamp_session_tenant(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_TENANT_KEY] = connection.schema_name
