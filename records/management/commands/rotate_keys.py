from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from medportal.tenants.models import TenantKind
from medportal.tenants.selectors import tenant_get_by_slug, tenant_list_members
from records.models import Patient, RecordSection
from records.services import kek_rotate_batch


class Command(BaseCommand):
    help = (
        "Re-wrap every record section's and patient identity's data key under one KEK "
        "version (default: MEDPORTAL_KEK_VERSION), in committed batches. Resumable: "
        "only wraps not yet at the target version are touched, so run it again after "
        "an interruption."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="rotate only this hospital (slug)")
        parser.add_argument(
            "--to-version", type=int, help="target KEK version (default: MEDPORTAL_KEK_VERSION)"
        )
        parser.add_argument(
            "--batch", type=int, default=500, help="data keys per database transaction"
        )

    def handle(self, *args, tenant: str | None, to_version: int | None, batch: int, **options):
        current = getattr(settings, "MEDPORTAL_KEK_VERSION", 1)
        target = current if to_version is None else to_version
        if target < 1:
            raise CommandError(f"--to-version must be a positive integer, not {target}")
        if target > current:
            raise CommandError(
                f"--to-version {target} is above the current MEDPORTAL_KEK_VERSION {current}: "
                "deploy the new version first, then rotate to it"
            )
        retired = set(getattr(settings, "MEDPORTAL_KEK_RETIRED_VERSIONS", []) or [])
        if target in retired:
            raise CommandError(f"--to-version {target} is listed in MEDPORTAL_KEK_RETIRED_VERSIONS")
        if batch < 1:
            raise CommandError(f"--batch must be a positive integer, not {batch}")
        with schema_context(get_public_schema_name()):
            if tenant:
                found = tenant_get_by_slug(tenant)
                if found is None:
                    raise CommandError(f"no tenant with slug {tenant!r}", returncode=2)
                if found.kind != TenantKind.HOSPITAL:
                    raise CommandError(
                        f"tenant {tenant!r} is a {found.kind}, not a hospital: it holds no records",
                        returncode=2,
                    )
                hospitals = [found]
            else:
                hospitals = list(tenant_list_members().filter(kind=TenantKind.HOSPITAL))
        grand_total = 0
        for hospital in hospitals:
            total = 0
            self.stdout.write(f"{hospital.slug}: re-wrapping data keys to KEK version {target}")
            with tenant_context(hospital):
                while True:
                    done = kek_rotate_batch(to_version=target, batch=batch)
                    if not done:
                        break
                    total += done
                    self.stdout.write(f"{hospital.slug}: {total} re-wrapped so far")
                # kek_rotate_batch skips rows locked by another transaction, so a 0
                # can come early: count what is really left before calling it done.
                left = (
                    RecordSection.objects.filter(kek_version__isnull=False)
                    .exclude(kek_version=target)
                    .count()
                    + Patient.objects.exclude(kek_version=target).count()
                )
            if left:
                raise CommandError(
                    f"{hospital.slug}: {left} data key(s) were locked by other transactions "
                    "and are not re-wrapped yet; run rotate_keys again"
                )
            self.stdout.write(f"{hospital.slug}: done, {total} re-wrapped")
            grand_total += total
        self.stdout.write(
            self.style.SUCCESS(
                f"All {len(hospitals)} hospital(s) at KEK version {target} "
                f"({grand_total} data keys re-wrapped in this run)."
            )
        )
        older = ", ".join(str(v) for v in range(1, target) if v not in retired)
        if older:
            hint = f"You can now list version(s) {older} in MEDPORTAL_KEK_RETIRED_VERSIONS"
        else:
            hint = "No older KEK version is left to list in MEDPORTAL_KEK_RETIRED_VERSIONS"
        if tenant:
            hint += " once every other hospital has been rotated too"
        self.stdout.write(hint + ".")
