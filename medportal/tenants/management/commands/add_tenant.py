from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from medportal.tenants.models import TenantKind
from medportal.tenants.services import TenantError, tenant_create


class Command(BaseCommand):
    help = "Create a hospital or research tenant (schema, domain). Safe to run twice."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--kind", required=True, help=f"one of {', '.join(TenantKind.values)}")
        parser.add_argument("--slug", required=True, help="host name part, e.g. alpha")
        parser.add_argument("--name", required=True, help='display name, e.g. "Alpha General"')

    def handle(self, *args, kind: str, slug: str, name: str, **options) -> None:
        def progress(height: int, target: int) -> None:
            self.stdout.write(f"  chain: {height + 1} of {target + 1} blocks applied and verified")

        try:
            result = tenant_create(kind=kind, slug=slug, name=name, progress=progress)
        except TenantError as error:
            raise CommandError(str(error), returncode=2) from None
        tenant = result.tenant
        if result.created:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created {tenant.get_kind_display().lower()} {tenant.slug!r} "
                    f"({tenant.name}) at {tenant.url()} in schema {tenant.schema_name!r}."
                )
            )
        else:
            self.stdout.write(
                f"Tenant {tenant.slug!r} already exists ({tenant.get_kind_display().lower()}, "
                f"{tenant.name}); nothing changed."
            )
