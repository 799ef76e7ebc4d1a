from __future__ import annotations

from django.contrib import admin

from medportal.admin_sites import RoleAdminMixin, hub_admin_site
from medportal.tenants.models import Domain, Tenant


class DomainInline(RoleAdminMixin, admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant, site=hub_admin_site)
class TenantAdmin(RoleAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "schema_name", "created_at"]
    list_filter = ["kind"]
    search_fields = ["slug", "name"]
    inlines = [DomainInline]

    def get_readonly_fields(self, request, obj=None):
        # Schema and kind are fixed at creation (use `manage.py add_tenant`).
        return ["schema_name", "slug", "kind", "created_at"] if obj else []

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
