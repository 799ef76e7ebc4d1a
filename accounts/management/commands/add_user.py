from __future__ import annotations

import getpass
import sys

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import tenant_context

from accounts.services import user_create
from medportal.tenants.selectors import tenant_get_by_slug


class Command(BaseCommand):
    help = (
        "Add a user to a tenant, e.g. the first hub operator or a hospital's first admin. "
        "The password is asked for (or read from standard input with --password-stdin)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug ('hub' for the hub)")
        parser.add_argument("--role", required=True)
        parser.add_argument("--username", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")
        parser.add_argument("--password-stdin", action="store_true")

    def handle(self, *args, **options) -> None:
        tenant = tenant_get_by_slug(options["tenant"])
        if tenant is None:
            raise CommandError(f"no tenant with slug {options['tenant']!r}", returncode=2)
        if options["role"] == "patient":
            # A patient needs an encrypted profile and keys on the chain, which
            # only the records service makes (page "New patient" or the API).
            raise CommandError(
                "patients are registered by hospital staff with the New patient page "
                "(/records/patients/new/) or POST /api/v1/patients/",
                returncode=2,
            )
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
        with tenant_context(tenant):
            try:
                user = user_create(
                    actor=None,
                    username=options["username"],
                    role=options["role"],
                    password=password,
                    email=options["email"],
                    first_name=options["first_name"],
                    last_name=options["last_name"],
                    must_change_password=False,
                )
            except (ValidationError, PermissionDenied) as error:
                messages = getattr(error, "messages", [str(error)])
                raise CommandError("; ".join(messages), returncode=2) from None
        self.stdout.write(
            self.style.SUCCESS(f"Added {user.username} ({user.role}) at {tenant.slug}.")
        )
