from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from accounts.models import User
from accounts.roles import STAFF_ROLES


def people_list_for_user(*, user: User, role: str | None = None) -> QuerySet[User]:
    """People of this hospital that a staff member may see."""
    if user.role not in STAFF_ROLES:
        raise PermissionDenied("Only hospital staff can list people.")
    people = User.objects.filter(is_active=True).order_by("role", "last_name", "first_name")
    if role:
        people = people.filter(role=role)
    return people
