from __future__ import annotations

from django.db import connection
from django.utils.functional import SimpleLazyObject

from accounts.navigation import navigation_for


def _display_name(user, tenant) -> str:
    """A patient's account holds no name (it is in their encrypted profile)."""
    if not getattr(user, "is_authenticated", False):
        return ""
    if user.role == "patient" and getattr(tenant, "kind", None) == "hospital":
        from records.selectors import patient_display_name

        return patient_display_name(user=user) or user.display_name
    return user.display_name


def portal(request) -> dict:
    tenant = getattr(request, "tenant", None) or getattr(connection, "tenant", None)
    user = getattr(request, "user", None)
    return {
        "portal_tenant": tenant if getattr(tenant, "kind", None) else None,
        "portal_navigation": navigation_for(user, tenant),
        # Lazy: evaluated only by pages that show it.
        "portal_user_name": SimpleLazyObject(lambda: _display_name(user, tenant)),
    }
