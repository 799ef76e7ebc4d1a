from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from consent.selectors import access_log_verify
from medportal.tenants.models import TenantKind
from medportal.tenants.selectors import tenant_get_by_slug, tenant_list_members


class Command(BaseCommand):
    help = (
        "Re-hash every hospital's access log (entry hashes, previous_hash links, "
        "anchored Merkle roots against the chain). Exit 1 at the first bad entry."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="verify only this hospital's access log")

    def handle(self, *args, tenant: str | None, **options) -> None:
        if tenant:
            found = tenant_get_by_slug(tenant)
            if found is None:
                raise CommandError(f"no tenant with slug {tenant!r}", returncode=2)
            if found.kind != TenantKind.HOSPITAL:
                raise CommandError(
                    f"{tenant!r} is not a hospital: it keeps no access log", returncode=2
                )
            hospitals = [found]
        else:
            hospitals = list(tenant_list_members().filter(kind=TenantKind.HOSPITAL))
        reports = [access_log_verify(tenant=hospital) for hospital in hospitals]
        rows = [("TENANT", "ENTRIES", "ANCHORS", "STATUS")]
        rows += [
            (r.tenant, str(r.entries_checked), str(r.anchors_checked), r.status) for r in reports
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            self.stdout.write("  ".join([*cells, row[3]]))
        failed = [report for report in reports if not report.ok]
        if failed:
            first = failed[0]
            where = (
                f"first bad entry {first.first_bad_entry}"
                if first.first_bad_entry is not None
                else "anchor mismatch"
            )
            raise CommandError(f"{first.tenant}: {where}: {first.reason}", returncode=1)
