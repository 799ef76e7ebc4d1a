from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from chain.services import RepairRefused, ReplicaError, replica_repair
from medportal.tenants.selectors import tenant_get_by_slug


class Command(BaseCommand):
    help = "Re-copy a tenant's replica from the hub (refused if the hub's chain is broken)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")

    def handle(self, *args, slug: str, **options) -> None:
        tenant = tenant_get_by_slug(slug)
        if tenant is None or tenant.is_hub:
            raise CommandError(f"no replica for {slug!r}: give a tenant's slug", returncode=2)

        def progress(height: int, target: int) -> None:
            self.stdout.write(f"  {height + 1} of {target + 1} blocks copied and verified")

        try:
            result = replica_repair(tenant=tenant, progress=progress)
        except (RepairRefused, ReplicaError) as error:
            raise CommandError(f"repair refused: {error}", returncode=1) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Replica of {slug} re-copied from the hub: {result.applied} blocks, head at "
                f"{result.height}."
            )
        )
