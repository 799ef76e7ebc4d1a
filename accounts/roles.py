"""Roles, which tenant kind each belongs to, and who may create whom.

One table in code; every page, API view, websocket consumer and admin check
reads it through ``accounts.permissions``.
"""

from __future__ import annotations

from django.db import models

from medportal.tenants.models import TenantKind


class Role(models.TextChoices):
    OPERATOR = "operator", "Hub operator"
    ADMIN = "admin", "Hospital administrator"
    DOCTOR = "doctor", "Doctor"
    PATIENT = "patient", "Patient"
    RESEARCHER = "researcher", "Researcher"


ROLES_BY_TENANT_KIND: dict[str, frozenset[str]] = {
    TenantKind.HUB: frozenset({Role.OPERATOR}),
    TenantKind.HOSPITAL: frozenset({Role.ADMIN, Role.DOCTOR, Role.PATIENT}),
    TenantKind.RESEARCH: frozenset({Role.RESEARCHER}),
}

# Who may add whom through the portal's pages (and the API later on).
CREATABLE_ROLES: dict[str, tuple[str, ...]] = {
    Role.ADMIN: (Role.PATIENT, Role.DOCTOR, Role.ADMIN),
    Role.DOCTOR: (Role.PATIENT, Role.DOCTOR),
}

STAFF_ROLES = frozenset({Role.ADMIN, Role.DOCTOR})
# Roles that get into the Django admin of their own tenant.
ADMIN_SITE_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})


def roles_for_tenant_kind(kind: str) -> frozenset[str]:
    return ROLES_BY_TENANT_KIND.get(kind, frozenset())
