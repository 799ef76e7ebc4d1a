from __future__ import annotations

from django.db.models import QuerySet

from medportal.tenants.models import Tenant, TenantKind


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.prefetch_related("domains").order_by("kind", "slug")


def tenant_list_members() -> QuerySet[Tenant]:
    """Every tenant with a schema of its own (everyone but the hub)."""
    return Tenant.objects.exclude(kind=TenantKind.HUB).order_by("slug")


def tenant_get_by_slug(slug: str) -> Tenant | None:
    return Tenant.objects.filter(slug=slug).first()
