from __future__ import annotations

from django.conf import settings
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class TenantKind(models.TextChoices):
    HUB = "hub", "Hub"
    HOSPITAL = "hospital", "Hospital"
    RESEARCH = "research", "Research organisation"


class Tenant(TenantMixin):
    """A hospital, a research organisation, or the hub (the public schema)."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=TenantKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    # The schema is created (and migrated) when the tenant is first saved.
    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        ordering = ["kind", "slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=TenantKind.values), name="tenant_kind_valid"
            ),
            # Only the hub lives in the public schema, and there is one hub.
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(kind="hub"), name="tenant_single_hub"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_hub(self) -> bool:
        return self.kind == TenantKind.HUB

    @property
    def is_hospital(self) -> bool:
        return self.kind == TenantKind.HOSPITAL

    @property
    def is_research(self) -> bool:
        return self.kind == TenantKind.RESEARCH

    @property
    def domain_name(self) -> str:
        if self.is_hub:
            return settings.BASE_DOMAIN
        return f"{self.slug}.{settings.BASE_DOMAIN}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of a page on this tenant's host, for links and printed output."""
        port = settings.PUBLIC_PORT
        default_port = 443 if settings.SITE_SCHEME == "https" else 80
        netloc = self.domain_name if port == default_port else f"{self.domain_name}:{port}"
        return f"{settings.SITE_SCHEME}://{netloc}{path}"


class Domain(DomainMixin):
    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain
