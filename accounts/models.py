from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import connection, models

from accounts.roles import Role, roles_for_tenant_kind


class User(AbstractUser):
    """A person with one role at one tenant. Each schema has its own users."""

    role = models.CharField(max_length=16, choices=Role.choices)
    # Set when someone else chose the password (staff adding a user, a reset).
    must_change_password = models.BooleanField(default=False)

    class Meta:
        ordering = ["last_name", "first_name", "username"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="user_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.get_full_name() or self.username

    def clean(self) -> None:
        super().clean()
        tenant = getattr(connection, "tenant", None)
        kind = getattr(tenant, "kind", None)
        if kind and self.role not in roles_for_tenant_kind(kind):
            allowed = ", ".join(sorted(roles_for_tenant_kind(kind)))
            raise ValidationError(
                {"role": f"At this tenant a user's role must be one of: {allowed}."}
            )

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username
