"""The one role check, in the shapes each interface needs.

``user_has_role`` is the rule; ``role_required`` (function views),
``RoleRequiredMixin`` (class views), ``HasRole`` (DRF) and
``consumer_user_has_role`` (Channels) all call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connection
from rest_framework.permissions import BasePermission

from accounts.roles import roles_for_tenant_kind


def user_has_role(user: Any, roles: Iterable[str], tenant: Any = None) -> bool:
    """True when ``user`` is signed in, active, holds one of ``roles``, and that role
    belongs to the tenant's kind (a hospital has no operators, the hub no patients).

    The user was loaded from the current tenant's schema, so being found at all
    already means they belong to it.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    tenant = tenant if tenant is not None else getattr(connection, "tenant", None)
    kind = getattr(tenant, "kind", None)
    if kind is None or user.role not in roles_for_tenant_kind(kind):
        return False
    return user.role in set(roles)


def role_required(*roles: str) -> Callable:
    """Function-view decorator: sign-in page for anonymous users, 403 for wrong roles."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not user_has_role(request.user, roles, getattr(request, "tenant", None)):
                raise PermissionDenied("Your role does not give access to this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class RoleRequiredMixin:
    """Class-view mixin; set ``allowed_roles``."""

    allowed_roles: tuple[str, ...] = ()

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user_has_role(request.user, self.allowed_roles, getattr(request, "tenant", None)):
            raise PermissionDenied("Your role does not give access to this page.")
        return super().dispatch(request, *args, **kwargs)


class HasRole(BasePermission):
    """DRF permission; use ``HasRole.of("doctor", "admin")`` in ``permission_classes``."""

    allowed_roles: tuple[str, ...] = ()
    message = "Your role does not give access to this resource."

    @classmethod
    def of(cls, *roles: str) -> type[HasRole]:
        return type(f"HasRole_{'_'.join(roles)}", (cls,), {"allowed_roles": roles})

    def has_permission(self, request, view) -> bool:
        allowed = self.allowed_roles or getattr(view, "allowed_roles", ())
        return user_has_role(request.user, allowed, getattr(request, "tenant", None))


def consumer_user_has_role(scope: dict, roles: Iterable[str]) -> bool:
    """For Channels consumers: the scope carries the tenant and user the ASGI
    middleware resolved from the host and session."""
    return user_has_role(scope.get("user"), roles, scope.get("tenant"))
