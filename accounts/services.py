"""Writes about people: creating users, changing passwords."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction

from accounts.models import User
from accounts.roles import ADMIN_SITE_ROLES, CREATABLE_ROLES, Role, roles_for_tenant_kind


def _current_tenant_kind() -> str | None:
    return getattr(getattr(connection, "tenant", None), "kind", None)


@transaction.atomic
def user_create(
    *,
    actor: User | None,
    username: str,
    role: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    must_change_password: bool = True,
) -> User:
    """Create a user at the current tenant.

    ``actor`` is the person adding them (None for operators' commands and the
    demo seed). Doctors add patients and doctors; admins add anyone of their
    hospital. Someone who did not choose their own password must change it at
    first sign-in.
    """
    kind = _current_tenant_kind()
    if role not in roles_for_tenant_kind(kind or ""):
        raise ValidationError({"role": f"Role {role!r} does not exist at this tenant."})
    if actor is not None and role not in CREATABLE_ROLES.get(actor.role, ()):
        raise PermissionDenied(f"A {actor.get_role_display().lower()} cannot add a {role}.")
    username = User.normalize_username(username.strip())
    if not username:
        raise ValidationError({"username": "A username is required."})
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": "That username is already taken at this hospital."})
    user = User(
        username=username,
        role=role,
        first_name=first_name.strip(),
        last_name=last_name.strip(),
        email=User.objects.normalize_email(email.strip()),
        is_staff=role in ADMIN_SITE_ROLES,
        must_change_password=must_change_password,
    )
    try:
        validate_password(password, user)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from None
    user.set_password(password)
    user.full_clean()
    user.save()
    if role == Role.DOCTOR:
        from medportal.exchange.services import practitioner_publish

        practitioner_publish(user=user)
    if user.email:
        from accounts.tasks import welcome_email_send

        schema_name = connection.schema_name
        transaction.on_commit(
            lambda: welcome_email_send.apply_async(
                args=[user.pk], headers={"_schema_name": schema_name}
            )
        )
    return user


@transaction.atomic
def user_password_change(*, user: User, new_password: str, old_password: str) -> None:
    """Set a password the user chose themselves (the form checked the old one).

    A patient's signing key is sealed under their password: it is re-sealed
    under the new one in the same transaction, so it never exists unsealed at
    rest and the old password stops opening it."""
    user.set_password(new_password)
    user.must_change_password = False
    user.save(update_fields=["password", "must_change_password"])
    if user.role == Role.PATIENT:
        from records.services import patient_signing_key_reseal

        patient_signing_key_reseal(user=user, old_password=old_password, new_password=new_password)
