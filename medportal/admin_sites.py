"""One admin site for the hub's operators, one for each hospital's admins.

Separate sites so that a hospital admin never sees the hub's tenant registry
(which would otherwise be reachable through PostgreSQL's search_path).
"""

from __future__ import annotations

from django.contrib import admin

from accounts.permissions import user_has_role
from accounts.roles import Role


class HubAdminSite(admin.AdminSite):
    site_header = "MedPortal hub administration"
    site_title = "MedPortal hub"
    index_title = "Hub"

    def has_permission(self, request) -> bool:
        return user_has_role(request.user, (Role.OPERATOR,), getattr(request, "tenant", None))


class TenantAdminSite(admin.AdminSite):
    site_header = "MedPortal hospital administration"
    site_title = "MedPortal"
    index_title = "Hospital"

    def has_permission(self, request) -> bool:
        return user_has_role(request.user, (Role.ADMIN,), getattr(request, "tenant", None))

    def each_context(self, request):
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            context["site_header"] = f"{tenant.name}: administration"
        return context


class RoleAdminMixin:
    """Everyone the site lets in may use the models registered on it: access
    is decided by role (``has_permission`` above), not by Django's per-model
    permission rows, which would have to be kept in sync in every schema."""

    def has_module_permission(self, request) -> bool:
        return self.admin_site.has_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.admin_site.has_permission(request)

    def has_add_permission(self, request, *args) -> bool:
        return self.admin_site.has_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self.admin_site.has_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.admin_site.has_permission(request)


hub_admin_site = HubAdminSite(name="admin")
tenant_admin_site = TenantAdminSite(name="admin")
