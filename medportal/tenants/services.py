"""Creating tenants: one function used by the command, the demo seed and the tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from chain.services import hub_genesis_ensure, tenant_join
from medportal.tenants.models import Domain, Tenant, TenantKind

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
SLUG_MAX_LENGTH = 40
# Words that would clash with the hub's own host names or PostgreSQL schemas.
RESERVED_SLUGS = frozenset(
    {"public", "www", "api", "admin", "static", "media", "ws", "hub", "information-schema"}
)
HUB_SLUG = "hub"


class TenantError(ValueError):
    """A tenant cannot be created as asked; the message says why, for a person."""


@dataclass(frozen=True)
class TenantResult:
    tenant: Tenant
    created: bool


def slug_validate(slug: str) -> None:
    if not slug or len(slug) > SLUG_MAX_LENGTH or not SLUG_PATTERN.match(slug):
        raise TenantError(
            f"invalid slug {slug!r}: use 1-{SLUG_MAX_LENGTH} lower-case letters, digits and "
            "single hyphens, starting with a letter (e.g. 'alpha' or 'st-marys')"
        )
    if slug.startswith("pg-") or slug in RESERVED_SLUGS:
        raise TenantError(f"invalid slug {slug!r}: it is reserved")


def schema_name_for(slug: str) -> str:
    # Slugs have no underscores, so the mapping is one to one.
    return slug.replace("-", "_")


def hub_ensure(*, name: str = "MedPortal Hub") -> TenantResult:
    """The hub is the public schema on BASE_DOMAIN; create its rows once."""
    tenant = Tenant.objects.filter(kind=TenantKind.HUB).first()
    created = False
    if tenant is None:
        with transaction.atomic():
            tenant = Tenant(
                schema_name=settings.PUBLIC_SCHEMA_NAME,
                slug=HUB_SLUG,
                name=name,
                kind=TenantKind.HUB,
            )
            tenant.save(verbosity=0)
            created = True
    Domain.objects.get_or_create(
        domain=tenant.domain_name, defaults={"tenant": tenant, "is_primary": True}
    )
    hub_genesis_ensure()
    return TenantResult(tenant=tenant, created=created)


def tenant_create(
    *, kind: str, slug: str, name: str, progress: Callable[[int, int], None] | None = None
) -> TenantResult:
    """Create a hospital or research tenant with its schema and domain.

    The new tenant's key is registered on the chain and its replica receives
    every block (``progress(height, target)`` is called as it catches up).
    Idempotent: asking again for the same slug, kind and name returns the existing
    tenant with ``created=False`` (and finishes joining if an earlier run was cut
    short); a slug taken by another kind, or with another name, is a ``TenantError``.
    """
    if kind not in TenantKind.values:
        raise TenantError(f"unknown kind {kind!r}: choose one of {', '.join(TenantKind.values)}")
    name = (name or "").strip()
    if not name:
        raise TenantError("a display name is required (--name)")
    if kind == TenantKind.HUB:
        if slug != HUB_SLUG:
            raise TenantError(f"the hub's slug is always {HUB_SLUG!r}")
        return hub_ensure(name=name)
    slug_validate(slug)

    existing = Tenant.objects.filter(slug=slug).first()
    if existing is not None:
        if existing.kind != kind:
            raise TenantError(
                f"slug {slug!r} is already taken by a {existing.get_kind_display().lower()} "
                f"({existing.name})"
            )
        if existing.name != name:
            raise TenantError(
                f"slug {slug!r} already exists with the name {existing.name!r}; "
                "rename it in the hub's admin if that is what you want"
            )
        tenant_join(tenant=existing, progress=progress)
        return TenantResult(tenant=existing, created=False)

    hub_ensure()
    schema_name = schema_name_for(slug)
    if Tenant.objects.filter(schema_name=schema_name).exists():
        raise TenantError(f"schema {schema_name!r} already exists")
    tenant = Tenant(schema_name=schema_name, slug=slug, name=name, kind=kind)
    # Creating the schema runs every tenant migration; quiet, as the command
    # prints its own summary.
    tenant.save(verbosity=0)
    Domain.objects.create(domain=tenant.domain_name, tenant=tenant, is_primary=True)
    tenant_join(tenant=tenant, progress=progress)
    return TenantResult(tenant=tenant, created=True)
