"""Records benchmark: end-to-end write rate and patient-history read latency.

Run against a throw-away database (``medportal_bench_records`` on the server
DATABASE_URL names, dropped and recreated at start, dropped again at the end),
with a throw-away ciphertext store::

    .venv/bin/python -m medportal.devstack exec --prefer-local -- .venv/bin/python bench/records.py
    ... bench/records.py --quick

Not a test: it asserts nothing about timings, it prints one table.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chain as chain_bench  # noqa: E402  (set-up shared with the ledger bench)
from bench.harness import main_with_throwaway_database  # noqa: E402

BENCH_DB = "medportal_bench_records"
PASSWORD = secrets.token_urlsafe(24)  # nobody signs in: the bench calls services


@dataclass(frozen=True)
class Sizes:
    create_n: int
    history_sizes: tuple[int, ...]


FULL = Sizes(create_n=200, history_sizes=(10, 100, 1000))
QUICK = Sizes(create_n=50, history_sizes=(10, 100))


def read_repeats(entries: int) -> int:
    return 50 if entries <= 10 else 20 if entries <= 100 else 10


def content(n: int) -> dict:
    """A typical record: two sensitivity levels (two sections), a diagnosis, a drug."""
    return {
        "encounter": {
            "visit_date": "2024-06-01",
            "department": "General medicine",
            "chief_complaint": f"Bench visit {n}: cough for two weeks",
        },
        "diagnoses": [{"code": "J20.9", "text": "Acute bronchitis"}],
        "medications": [
            {
                "drug": "Amoxicillin",
                "dose": "500 mg",
                "route": "oral",
                "frequency": "three times daily",
                "start": "2024-06-01",
            }
        ],
        "vitals": [{"kind": "temperature", "value": "37.9", "unit": "Cel"}],
        "notes": [{"category": "mental_health", "text": "Anxious about the cough."}],
    }


def patient_new(doctor, number: str, *, username: str = ""):
    from records.services import identity_clean, patient_create

    return patient_create(
        actor=doctor,
        identity=identity_clean(
            given_name="Bench",
            family_name=f"Patient {number}",
            sex="unknown",
            birth_date=date(1970, 1, 1),
            record_number=f"BENCH-{number}",
        ),
        username=username,
        password=PASSWORD if username else "",
        must_change_password=False,
    )


def chain_settle(hospital) -> None:
    """Seal what waits on the hub and copy it to the hospital's replica, so reads
    find their pointers where a running system would (the local replica)."""
    from chain.services import block_seal, replica_sync

    block_seal(force=True)
    replica_sync(tenant=hospital)


def bench_create(table, hospital, doctor, n: int) -> None:
    from django_tenants.utils import tenant_context

    from records.services import record_create

    with tenant_context(hospital):
        patient = patient_new(doctor, "create")
        record_create(author=doctor, patient=patient, content=content(0))  # warm-up
        started = time.perf_counter()
        timings = []
        for i in range(n):
            one = time.perf_counter()
            record_create(author=doctor, patient=patient, content=content(i + 1))
            timings.append((time.perf_counter() - one) * 1e3)
        seconds = time.perf_counter() - started
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    table.add(
        "record_create end to end",
        f"N={n}, 2 sections",
        f"{chain_bench.rate(n, seconds)} records/s",
        f"encrypt+store+sign+submit, one commit each; {seconds:.2f} s; "
        f"p50 {cuts[49]:.1f} ms / p99 {cuts[98]:.1f} ms per record",
    )


def bench_history(table, hospital, doctor, entries: int) -> None:
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from records.selectors import patient_history_for_user
    from records.services import record_create

    with tenant_context(hospital):
        patient = patient_new(doctor, f"history-{entries}", username=f"bench-patient-{entries}")
        for i in range(entries):
            record_create(author=doctor, patient=patient, content=content(i))
    chain_settle(hospital)
    repeats = read_repeats(entries)
    with tenant_context(hospital):
        user = User.objects.get(pk=patient.user_id)
        views = patient_history_for_user(user=user)  # warm-up, and a check
        if len(views) != entries or any(view.errors or not view.content for view in views):
            raise RuntimeError(f"history of {entries} entries does not read back cleanly")
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            patient_history_for_user(user=user)
            timings.append((time.perf_counter() - started) * 1e3)
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    table.add(
        "patient history read (patient_history_for_user)",
        f"{entries:>4} entries, {repeats} reads",
        f"p50 {cuts[49]:,.1f} ms / p99 {cuts[98]:,.1f} ms",
        f"through the exchange, re-wrapped for her hospital;"
        f" {cuts[49] / entries:.2f} ms/entry at p50",
    )


def run(sizes: Sizes, mode: str) -> None:
    import django

    django.setup()
    from unittest import mock

    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    import chain.services as chain_services
    from accounts.roles import Role
    from accounts.services import user_create
    from medportal.tenants.services import hub_ensure

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    hub_ensure()
    header = chain_bench.machine_description()
    table = chain_bench.Table()
    hospital = chain_bench.hospital_create("bench-records")
    with tenant_context(hospital):
        doctor = user_create(
            actor=None,
            username="bench-doctor",
            role=Role.DOCTOR,
            password=PASSWORD,
            must_change_password=False,
        )
    # No worker runs: the seal task each commit would schedule is not sent (the
    # bench seals itself before the reads), and delivery runs in-process.
    with (
        mock.patch.object(chain_services, "_schedule_seal", lambda accepted: None),
        mock.patch.object(chain_services, "outbox_dispatch", lambda **kwargs: None),
    ):
        print(f"== record_create (N={sizes.create_n})", flush=True)
        bench_create(table, hospital, doctor, sizes.create_n)
        for entries in sizes.history_sizes:
            print(f"== patient history of {entries} entries", flush=True)
            bench_history(table, hospital, doctor, entries)
    chain_bench.queue_purge()

    print()
    print(f"MedPortal records benchmark ({mode})")
    print("\n".join(header))
    print()
    print(table.render())
    print()
    print(
        "Writes: each record_create is its own database transaction (the ciphertext blobs"
        " are fsynced before it); the hub's pending transactions are sealed before the reads."
        " Reads: wall clock of patient_history_for_user in the patient's own hospital, after"
        " one warm-up read."
    )


def main() -> int:
    return main_with_throwaway_database(
        description=__doc__.splitlines()[0],
        database=BENCH_DB,
        prefix="bench-records-",
        quick=QUICK,
        full=FULL,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
