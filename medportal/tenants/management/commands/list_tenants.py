from __future__ import annotations

from django.core.management.base import BaseCommand

from medportal.tenants.selectors import tenant_list


class Command(BaseCommand):
    help = "List tenants: slug, kind, domain, schema."

    def handle(self, *args, **options) -> None:
        rows = [("SLUG", "KIND", "DOMAIN", "SCHEMA")]
        for tenant in tenant_list():
            domains = ", ".join(domain.domain for domain in tenant.domains.all()) or "-"
            rows.append((tenant.slug, tenant.kind, domains, tenant.schema_name))
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())
