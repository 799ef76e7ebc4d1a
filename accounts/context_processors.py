from __future__ import annotations

from django.db import connection

from accounts.navigation import navigation_for


def portal(request) -> dict:
    tenant = getattr(request, "tenant", None) or getattr(connection, "tenant", None)
    user = getattr(request, "user", None)
    return {
        "portal_tenant": tenant if getattr(tenant, "kind", None) else None,
        "portal_navigation": navigation_for(user, tenant),
    }
