from __future__ import annotations

from django.contrib.auth import logout
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from accounts.receivers import SESSION_TENANT_KEY


class TenantBoundSessionMiddleware:
    """Refuse a session that was not created at this tenant.

    Sessions already live in each tenant's schema and cookies are host-only; this
    is the third lock, so that a session store shared by mistake (a cache
    backend, say) still cannot carry a login from one tenant to another.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if request.session.get(SESSION_TENANT_KEY) != connection.schema_name:
                logout(request)
        return self.get_response(request)


class PasswordChangeRequiredMiddleware:
    """Send a user whose password someone else chose to the password-change page."""

    ALLOWED_URL_NAMES = ("accounts:password_change", "accounts:logout", "healthz")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.must_change_password:
            allowed = {reverse(name) for name in self.ALLOWED_URL_NAMES}
            if request.path not in allowed and not request.path.startswith("/static/"):
                if request.path.startswith("/api/"):
                    return JsonResponse(
                        {"detail": "Change your password in the portal before using the API."},
                        status=403,
                    )
                return redirect("accounts:password_change")
        return self.get_response(request)
