"""The demo data `make run` seeds: one function, safe to run again."""

from __future__ import annotations

from dataclasses import dataclass

from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.roles import Role
from accounts.services import user_create
from medportal.tenants.models import Tenant, TenantKind
from medportal.tenants.services import hub_ensure, tenant_create

DEMO_TENANTS = (
    (TenantKind.HOSPITAL, "alpha", "Alpha General Hospital"),
    (TenantKind.HOSPITAL, "beta", "Beta University Hospital"),
    (TenantKind.RESEARCH, "northwind", "Northwind Research Institute"),
    # A second organisation, to show that one cannot read another's datasets.
    (TenantKind.RESEARCH, "southbank", "Southbank Health Analytics"),
)

# (tenant slug or "hub", username, role, first name, last name). Patients' names
# are not stored on their accounts: they go into the encrypted patient profile
# (records.demo.DEMO_PATIENTS).
DEMO_USERS = (
    ("hub", "operator", Role.OPERATOR, "Olga", "Operator"),
    ("alpha", "alpha-admin", Role.ADMIN, "Amir", "Adams"),
    ("alpha", "alpha-doctor", Role.DOCTOR, "Ana", "Alvarez"),
    # alpha-patient and beta-patient are one person with an account at each hospital.
    ("alpha", "alpha-patient", Role.PATIENT, "Li", "Wei"),
    ("alpha", "alpha-patient-2", Role.PATIENT, "Maria", "Garcia"),
    ("beta", "beta-admin", Role.ADMIN, "Bea", "Baker"),
    ("beta", "beta-doctor", Role.DOCTOR, "Ben", "Brown"),
    ("beta", "beta-patient", Role.PATIENT, "Li", "Wei"),
    ("beta", "beta-patient-2", Role.PATIENT, "Tom", "Jensen"),
    ("northwind", "northwind-researcher", Role.RESEARCHER, "Nora", "North"),
    ("southbank", "southbank-researcher", Role.RESEARCHER, "Sam", "South"),
)


@dataclass(frozen=True)
class DemoLogin:
    url: str
    username: str
    role: str
    created: bool


def demo_seed(*, password: str) -> list[DemoLogin]:
    hub = hub_ensure().tenant
    tenants: dict[str, Tenant] = {"hub": hub}
    for kind, slug, name in DEMO_TENANTS:
        tenants[slug] = tenant_create(kind=kind, slug=slug, name=name).tenant
    logins = []
    for slug, username, role, first_name, last_name in DEMO_USERS:
        tenant = tenants[slug]
        with tenant_context(tenant):
            created = not User.objects.filter(username=username).exists()
            if role == Role.PATIENT:
                from records.demo import demo_patient_ensure

                created = demo_patient_ensure(username=username, password=password)[1]
            elif created:
                user_create(
                    actor=None,
                    username=username,
                    role=role,
                    password=password,
                    first_name=first_name,
                    last_name=last_name,
                    must_change_password=False,
                )
        logins.append(DemoLogin(url=tenant.url("/"), username=username, role=role, created=created))
    from records.demo import demo_records_seed

    demo_records_seed(tenants=tenants, password=password)
    # Patients' keys must be on the chain before they sign consent.
    _chain_settle(tenants)
    from consent.demo import consent_demo_seed
    from medportal.exchange.services import practitioners_backfill

    # Doctors made before the directory existed (older development databases).
    practitioners_backfill()
    consent_demo_seed(tenants=tenants, password=password)
    _chain_settle(tenants)
    from medportal.research.demo import research_demo_seed

    research_demo_seed(tenants=tenants, password=password)
    _chain_settle(tenants)
    return logins


def _chain_settle(tenants: dict[str, Tenant]) -> None:
    """Seal what the seed submitted and bring every replica up to date now, so
    the demo's pages show blocks at once (a worker would do it a moment later)."""
    from chain.services import block_seal, replica_sync

    block_seal(force=True)
    for slug, tenant in tenants.items():
        if slug != "hub":
            replica_sync(tenant=tenant)
