from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from chain.selectors import chain_verify_all
from medportal.tenants.selectors import tenant_get_by_slug


class Command(BaseCommand):
    help = (
        "Re-hash the hub's chain and every replica end to end (links, hashes, Merkle "
        "roots, signatures, heads against the hub). Exit 1 at the first bad block."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="verify the hub and only this tenant's replica")
        parser.add_argument("--hash-only", action="store_true", help="skip signature checks")
        parser.add_argument(
            "--incremental", action="store_true", help="start after the last verified height"
        )

    def handle(
        self, *args, tenant: str | None, hash_only: bool, incremental: bool, **options
    ) -> None:
        if tenant and tenant_get_by_slug(tenant) is None:
            raise CommandError(f"no tenant with slug {tenant!r}", returncode=2)
        reports = chain_verify_all(
            only=tenant, hash_only=hash_only, incremental=incremental, record=True
        )
        rows = [("TENANT", "HEIGHT", "HEAD HASH", "STATUS")]
        rows += [(r.tenant, str(r.height), r.head_hash or "-", r.status) for r in reports]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            self.stdout.write("  ".join([*cells, row[3]]))
        failed = [report for report in reports if not report.ok]
        if failed:
            first = failed[0]
            raise CommandError(
                f"{first.tenant}: first bad block at height {first.first_bad_height}: "
                f"{first.reason}",
                returncode=1,
            )
