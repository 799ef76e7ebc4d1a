"""What each role can do next: the navigation bar and the home page share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.urls import NoReverseMatch, reverse

from accounts.permissions import user_has_role
from accounts.roles import Role


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    description: str
    roles: tuple[str, ...]

    @property
    def url(self) -> str:
        return reverse(self.url_name)


NAV_ITEMS: tuple[NavItem, ...] = (
    NavItem("Home", "home", "Your overview.", tuple(Role.values)),
    NavItem(
        "People",
        "accounts:people",
        "Staff and patients of this hospital; add someone.",
        (Role.ADMIN, Role.DOCTOR),
    ),
    NavItem(
        "Add a person",
        "accounts:person_create",
        "Register a new patient or colleague.",
        (Role.ADMIN, Role.DOCTOR),
    ),
    NavItem(
        "Patients",
        "records:patient_list",
        "Find a patient by record number or name, open their chart, add an entry.",
        (Role.ADMIN, Role.DOCTOR),
    ),
    NavItem(
        "My records",
        "records:mine",
        "Your records from every hospital you linked, and a summary to print.",
        (Role.PATIENT,),
    ),
    NavItem(
        "Link hospitals",
        "records:link",
        "Join your accounts at two hospitals so each shows all your records.",
        (Role.PATIENT,),
    ),
    NavItem(
        "Sharing",
        "consent:sharing",
        "Who may read which of your records; grant, revoke, answer requests.",
        (Role.PATIENT,),
    ),
    NavItem(
        "Who saw my records",
        "consent:access_log",
        "Every read of your records and every refused attempt, from every hospital.",
        (Role.PATIENT,),
    ),
    NavItem(
        "Access requests",
        "consent:requests",
        "Requests you sent to patients for access to their records, and the answers.",
        (Role.DOCTOR,),
    ),
    NavItem(
        "Emergency reviews",
        "consent:emergency_reviews",
        "Emergency accesses declared at this hospital, to be marked justified or not.",
        (Role.ADMIN,),
    ),
    NavItem(
        "Research requests",
        "research:list",
        "Your organisation's data requests: file one, follow the answers, download datasets.",
        (Role.RESEARCHER,),
    ),
    NavItem(
        "Research requests",
        "research:review_list",
        "Requests from research organisations: approve or decline, then release your part.",
        (Role.ADMIN,),
    ),
    NavItem(
        "Research",
        "research:invitations",
        "Research requests that match your records: take part or not, and whether to be asked.",
        (Role.PATIENT,),
    ),
    NavItem(
        "Notifications",
        "consent:notifications",
        "What happened to your records, and answers to your requests.",
        (Role.ADMIN, Role.DOCTOR, Role.PATIENT),
    ),
    NavItem(
        "Chain",
        "chain:explorer",
        "The ledger: blocks, their transactions and how this copy verified.",
        tuple(Role.values),
    ),
    NavItem(
        "Dashboard",
        "hub:dashboard",
        "Every tenant's replica: height, lag, delivery and verification.",
        (Role.OPERATOR,),
    ),
    NavItem(
        "Tenants",
        "hub:tenants",
        "Hospitals and research organisations on this hub.",
        (Role.OPERATOR,),
    ),
    NavItem(
        "Admin",
        "admin:index",
        "The administration site for this tenant.",
        (Role.ADMIN, Role.OPERATOR),
    ),
    NavItem("API", "api-docs", "Interactive documentation of the REST API.", tuple(Role.values)),
    NavItem("Password", "accounts:password_change", "Change your password.", tuple(Role.values)),
)


def navigation_for(user: Any, tenant: Any) -> list[NavItem]:
    if user is None or not getattr(user, "is_authenticated", False) or tenant is None:
        return []
    items = []
    for item in NAV_ITEMS:
        if not user_has_role(user, item.roles, tenant):
            continue
        try:
            item.url  # noqa: B018  (only URLs this host's URLconf has)
        except NoReverseMatch:
            continue
        items.append(item)
    return items
