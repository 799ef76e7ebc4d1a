"""Research benchmark: matching and building a de-identified release at one
hospital, and a secure aggregate (Shamir shares) over five hospitals.

Run against a throw-away database (``medportal_bench_research`` on the server
DATABASE_URL names, dropped and recreated at start, dropped again at the end),
with a throw-away ciphertext store::

    .venv/bin/python -m medportal.devstack exec --prefer-local -- .venv/bin/python bench/research.py
    ... bench/research.py --quick

Not a test: it asserts nothing about timings, it prints one table.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chain as chain_bench  # noqa: E402  (set-up shared with the ledger bench)
from bench import records as records_bench  # noqa: E402  (the doctors' password)
from bench.harness import main_with_throwaway_database  # noqa: E402

BENCH_DB = "medportal_bench_research"
PASSWORD = records_bench.PASSWORD  # nobody signs in: the bench calls services
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
SEED = 20_261_125


@dataclass(frozen=True)
class Sizes:
    patients: int  # at the large hospital
    records: int  # at the large hospital
    small_patients: int  # at each of the four other hospitals (the aggregate)
    small_records_per_patient: int


FULL = Sizes(patients=10_000, records=100_000, small_patients=500, small_records_per_patient=5)
QUICK = Sizes(patients=500, records=5_000, small_patients=50, small_records_per_patient=5)
OPT_IN = 0.9  # of the matching patients
SEED_BATCH = 100  # services called per database transaction while seeding
GRANT_BATCH = 500  # signed opt-ins per call of the hub's gate
SMALL_HOSPITALS = 4
ROWS_PER_ENTRY = 5  # see _content
CATEGORIES = ["encounters", "diagnoses", "medications", "vitals"]
# A patient's "condition" (on the first entry); the other entries are everyday visits.
CONDITIONS = (("I10", 0.55), ("I11.9", 0.15), ("I25.9", 0.1), ("E11.9", 0.1), ("J45.9", 0.1))
EVERYDAY = ("J20.9", "M54.5", "K21.9", "R51", "J06.9", "L30.9", "N39.0", "R10.4")
DRUGS = ("Amlodipine", "Lisinopril", "Metformin", "Atorvastatin", "Salbutamol", "Omeprazole")


# --- Seeding through the services ---------------------------------------------------------


def _content(rng: random.Random, code: str, today: date) -> dict:
    """A typical entry: visit, one diagnosis, one drug, two vital signs. One
    (normal-level) section, so every part of it is releasable."""
    visit = today - timedelta(days=rng.randrange(1, 5 * 365))
    return {
        "encounter": {
            "visit_date": visit.isoformat(),
            "department": "General medicine",
            "chief_complaint": "Follow-up visit",
        },
        "diagnoses": [{"code": code, "text": "Seen in clinic"}],
        "medications": [
            {
                "drug": rng.choice(DRUGS),
                "dose": "5 mg",
                "route": "oral",
                "frequency": "once daily",
                "start": visit.isoformat(),
            }
        ],
        "vitals": [
            {"kind": "systolic_bp", "value": str(rng.randrange(105, 185)), "unit": "mm[Hg]"},
            {"kind": "heart_rate", "value": str(rng.randrange(50, 110)), "unit": "/min"},
        ],
    }


def _condition(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for code, share in CONDITIONS:
        total += share
        if roll < total:
            return code
    return CONDITIONS[-1][0]


def staff_create(hospital) -> tuple:
    from django_tenants.utils import tenant_context

    from accounts.roles import Role
    from accounts.services import user_create

    with tenant_context(hospital):
        made = [
            user_create(
                actor=None,
                username=f"bench-{role}",
                role=role,
                password=PASSWORD,
                must_change_password=False,
            )
            for role in (Role.ADMIN, Role.DOCTOR)
        ]
    return tuple(made)


def records_write(hospital, doctor, items: list[tuple]) -> None:
    """Entries exactly as records.services.record_create writes them, for many at
    once: the same validation (content_clean), split into sections, encryption
    and store (record_create's own _seal_into_section), blind indexes and signed
    ``data`` transactions, but one signing pass and one call of the hub's gate
    (chain.services.transactions_submit) and bulk inserts for the whole batch.
    record_create makes ~20 queries per entry, which would make seeding 100,000
    entries take most of an hour. ``items`` are (patient, content) pairs; the
    caller runs this in ``hospital``'s schema, in one database transaction."""
    from chain.encoding import canonical_json
    from chain.models import TransactionKind
    from chain.services import transactions_submit
    from records import services as record_services
    from records.categories import Category
    from records.content import content_categories, content_clean, content_split
    from records.keys import blind_index, practitioner_pseudonym
    from records.models import Record, RecordIndex, RecordSection

    store = record_services.record_store()
    author_pseudonym = practitioner_pseudonym(tenant_slug=hospital.slug, user_id=doctor.pk)
    built = []
    for patient, content in items:
        clean = content_clean(content)
        record = Record(
            patient=patient,
            patient_pseudonym=patient.pseudonym,
            author=doctor,
            author_pseudonym=author_pseudonym,
        )
        sections = [
            record_services._seal_into_section(
                record=record,
                patient=patient,
                name=level,
                plaintext=canonical_json(part),
                store=store,
                tenant_slug=hospital.slug,
                kind=RecordSection.Kind.SECTION,
                level=level,
            )
            for level, part in content_split(clean).items()
        ]
        present = set(content_categories(clean))
        record.categories = [category for category in Category.values if category in present]
        record.levels = sorted({section.level for section in sections})
        built.append((record, sections, clean))
    pending = transactions_submit(
        tenant=hospital,
        items=[
            (
                TransactionKind.DATA,
                {
                    "patient": record.patient_pseudonym,
                    "record": str(record.id),
                    "origin": hospital.slug,
                    "categories": record.categories,
                    "levels": record.levels,
                    "ciphertexts": {section.name: section.sha256 for section in sections},
                    "author": record.author_pseudonym,
                },
            )
            for record, sections, _clean in built
        ],
    )
    for (record, _sections, _clean), submitted in zip(built, pending, strict=True):
        record.tx_hash = submitted.hash
    Record.objects.bulk_create([record for record, _sections, _clean in built])
    RecordSection.objects.bulk_create([s for _record, sections, _clean in built for s in sections])
    RecordIndex.objects.bulk_create(
        [
            RecordIndex(
                record=record,
                kind=kind,
                digest=blind_index(tenant_slug=hospital.slug, kind=name, value=value),
            )
            for record, _sections, clean in built
            for kind, name, values in (
                (RecordIndex.Kind.ICD10, "icd10", [item["code"] for item in clean["diagnoses"]]),
                (RecordIndex.Kind.DRUG, "drug", record_services._drug_names(clean)),
            )
            for value in values
        ],
        ignore_conflicts=True,
    )


def hospital_seed(hospital, doctor, *, patients: int, records: int, rng) -> float:
    """``patients`` patients (records.services.patient_create, no sign-in account)
    and ``records`` entries spread evenly over them (records_write), SEED_BATCH
    per database transaction. Returns the seconds it took."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from records.services import identity_clean, patient_create

    started = time.perf_counter()
    today = timezone.localdate()
    with tenant_context(hospital):
        made = []
        for first in range(0, patients, SEED_BATCH):
            with transaction.atomic():
                for number in range(first, min(first + SEED_BATCH, patients)):
                    age = rng.randrange(18, 90)
                    made.append(
                        patient_create(
                            actor=doctor,
                            identity=identity_clean(
                                given_name="Bench",
                                family_name=f"Patient {number}",
                                sex="female" if rng.random() < 0.52 else "male",
                                birth_date=date(today.year - age, rng.randrange(1, 13), 14),
                                record_number=f"{hospital.slug}-{number}",
                            ),
                        )
                    )
        plan = [
            (patient, _content(rng, _condition(rng) if n == 0 else rng.choice(EVERYDAY), today))
            for index, patient in enumerate(made)
            for n in range(records // patients + (1 if index < records % patients else 0))
        ]
        for first in range(0, len(plan), SEED_BATCH):
            with transaction.atomic():
                records_write(hospital, doctor, plan[first : first + SEED_BATCH])
            if first and first % 10_000 == 0:
                print(f"   {hospital.slug}: {first:,} of {len(plan):,} entries", flush=True)
    return time.perf_counter() - started


def seeding_check(hospital, doctor, rng) -> None:
    """A few patients' entries must read back as record_create's do: every
    section's pointer on the chain, decrypting to valid content."""
    from django_tenants.utils import tenant_context

    from records.models import Patient
    from records.selectors import records_for_staff

    with tenant_context(hospital):
        ids = list(Patient.objects.values_list("pk", flat=True))
        for patient in Patient.objects.filter(pk__in=rng.sample(ids, min(5, len(ids)))):
            views = records_for_staff(user=doctor, patient=patient)
            if not views or any(view.errors or not view.content for view in views):
                raise RuntimeError(f"the seeded entries of {patient.pk} do not read back")


def chain_settle(hospitals) -> float:
    """Seal what waits and bring the hospitals' replicas up to the head (what the
    worker does in a running system), so reads find their pointers locally."""
    from chain.services import block_seal, replica_sync

    started = time.perf_counter()
    block_seal(force=True)
    for hospital in hospitals:
        replica_sync(tenant=hospital)
    return time.perf_counter() - started


def opt_ins_sign(hospital, request, patients, rng) -> tuple[list, float]:
    """OPT_IN of ``patients`` opt in: the ``access`` transaction that
    consent.grants.consent_research signs (grantee the request, purpose research,
    its categories, expiring with it), signed with each patient's own key and
    put through the hub's gate (chain.services.transactions_accept) GRANT_BATCH at
    a time. The patients have no portal password (opening a password-sealed key
    is Argon2id, ~0.1 s each), so the service's password step is skipped."""
    from django_tenants.utils import tenant_context

    from chain.encoding import format_time
    from chain.models import TransactionKind
    from chain.services import envelope_sign, transactions_accept
    from consent.grants import categories_expand
    from records.keys import patient_signing_key

    started = time.perf_counter()
    chosen = [patient for patient in patients if rng.random() < OPT_IN]
    categories = categories_expand(request.categories)
    with tenant_context(hospital):
        envelopes = [
            envelope_sign(
                kind=TransactionKind.ACCESS,
                payload={
                    "patient": patient.pseudonym,
                    "grantee": {"type": "request", "id": str(request.id)},
                    "categories": categories,
                    "purpose": "research",
                    "expires_at": format_time(request.expires_at),
                },
                key=patient,  # has the key_id
                private=patient_signing_key(patient),
            )
            for patient in chosen
        ]
    for first in range(0, len(envelopes), GRANT_BATCH):
        transactions_accept(
            envelopes=envelopes[first : first + GRANT_BATCH], submitted_by=hospital.slug
        )
    return chosen, time.perf_counter() - started


def request_file(organisation, researcher, **data):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from medportal.research.services import request_save, request_submit

    with tenant_context(organisation):
        draft = request_save(
            user=researcher,
            data={
                "purpose": "Benchmark",
                "investigator": "Dr Bench",
                "ethics_reference": "BENCH-1",
                "categories": CATEGORIES,
                "expires_at": (timezone.localdate() + timedelta(days=90)).isoformat(),
                **data,
            },
            document=SimpleUploadedFile("approval.pdf", PDF),
        )
        return request_submit(user=researcher, request=draft)


def approve(hospital, admin, request) -> list:
    """The hospital's admin approves; returns the matching patients (whom the
    approval's task would invite)."""
    from django_tenants.utils import tenant_context

    from medportal.research.release import patients_matching
    from medportal.research.services import participation_decide

    with tenant_context(hospital):
        participation_decide(admin=admin, request=request, approve=True, reason="Benchmark")
        return patients_matching(request)


class Stopwatch:
    """Wraps a module function, adding up the time spent in it (for the parts of
    a service that the service calls itself)."""

    def __init__(self, module, name: str) -> None:
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.original = getattr(module, name)

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.name, self.original)


# --- 1. A release of rows at one hospital -----------------------------------------------


def bench_release(table, notes, hospital, staff, organisation, researcher, sizes, rng) -> None:
    from django_tenants.utils import tenant_context

    from medportal.research import release as release_module
    from medportal.research import services
    from medportal.research.keys import research_store
    from records.models import Record

    admin, _doctor = staff
    request = request_file(
        organisation, researcher, title="Hypertension, rows", codes="I1", age_min="18", k="5"
    )
    started = time.perf_counter()
    matching = approve(hospital, admin, request)
    seconds = time.perf_counter() - started
    chosen, sign_seconds = opt_ins_sign(hospital, request, matching, rng)
    opted = len(chosen)
    settle = chain_settle([hospital])
    notes.append(
        f"rows request I1* aged 18+, k=5: {len(matching):,} of {sizes.patients:,} patients match,"
        f" {opted:,} opt in (signed in {sign_seconds:.1f} s; sealed and synced in {settle:.1f} s)"
    )
    with (
        tenant_context(hospital),
        Stopwatch(release_module, "patients_matching") as matching_watch,
        Stopwatch(services, "part_build") as build_watch,
        Stopwatch(services, "archive_write") as archive_watch,
    ):
        started = time.perf_counter()
        made = services.release_make(admin=admin, request=request)
        total = time.perf_counter() - started
    with tenant_context(organisation):
        archive = services.dataset_open(user=researcher, release=made)
    sealed = len(research_store().get(made.sha256))
    with tenant_context(hospital):
        read = Record.objects.filter(patient__in=chosen).count()
    # Every entry of an opted-in patient gives five rows (visit, diagnosis, drug, two
    # vital signs), kept or suppressed: fewer means an entry did not read back.
    if made.rows + made.suppressed != ROWS_PER_ENTRY * read:
        raise RuntimeError(f"{made.rows + made.suppressed} rows from {read} entries")
    building = build_watch.seconds - matching_watch.seconds
    rest = total - build_watch.seconds - archive_watch.seconds
    setting = f"{sizes.patients:,} patients, {sizes.records:,} entries"
    table.add(
        "match (release.patients_matching)",
        setting,
        f"{matching_watch.seconds:,.2f} s",
        f"{len(matching):,} patients match (blind-index lookup, then age/sex from each"
        f" sealed identity); approve + first match took {seconds:,.2f} s",
    )
    table.add(
        "build the part (release.part_build, less matching)",
        f"{opted:,} opted in",
        f"{building:,.2f} s",
        f"{made.rows:,} rows kept, {made.suppressed:,} suppressed; grants from the chain,"
        f" every entry read through the policy and logged; {building / max(opted, 1) * 1e3:.1f}"
        " ms per patient",
    )
    table.add(
        "write the archive (release.archive_write)",
        f"{made.rows:,} rows",
        f"{archive_watch.seconds:,.2f} s",
        f"zip {len(archive) / 1e6:,.1f} MB (CSV + FHIR NDJSON + dictionary + README)",
    )
    table.add(
        "seal, store, sign (rest of release_make)",
        "HPKE to the organisation",
        f"{rest:,.2f} s",
        f"sealed file {sealed / 1e6:,.1f} MB; release_make end to end {total:,.2f} s",
    )


# --- 2. A secure aggregate over five hospitals ---------------------------------------------


def bench_aggregate(table, notes, hospitals, organisation, researcher, rng) -> None:
    from django_tenants.utils import tenant_context

    from medportal.research.models import ResearchRequest
    from medportal.research.services import aggregate_advance, release_make

    request = request_file(
        organisation,
        researcher,
        title="Hypertension and diabetes, secure count",
        codes="I10, E11",
        age_min="18",
        answer="aggregate",
        k="5",
    )
    opted_total = 0
    for hospital, (admin, _doctor), _patients in hospitals:
        matching = approve(hospital, admin, request)
        chosen, _ = opt_ins_sign(hospital, request, matching, rng)
        opted_total += len(chosen)
    settle = chain_settle([hospital for hospital, _staff, _patients in hospitals])
    notes.append(
        f"aggregate request I10, E11 aged 18+ at {len(hospitals)} hospitals:"
        f" {opted_total:,} patients opted in (sealed and synced in {settle:.1f} s)"
    )
    for hospital, (admin, _doctor), patients in hospitals:
        with tenant_context(hospital):
            started = time.perf_counter()
            release_make(admin=admin, request=request)
            seconds = time.perf_counter() - started
        table.add(
            f"aggregate release_make at {hospital.slug}",
            f"{patients:,} patients",
            f"{seconds:,.2f} s",
            f"counts of {len(request.criteria['codes'])} codes x age bands x sex,"
            f" split into {len(hospitals) + 1} shares, each sealed for its holder",
        )
    started = time.perf_counter()
    finished = aggregate_advance(request_id=str(request.id))
    seconds = time.perf_counter() - started
    if not finished:
        raise RuntimeError("the secure count did not finish")
    result = ResearchRequest.objects.get(pk=request.pk).aggregate_result
    shown = sum(1 for value in result["cells"].values() if isinstance(value, int) and value)
    table.add(
        "aggregate_advance (sum per holder, reconstruct)",
        f"{len(hospitals)} hospitals + hub",
        f"{seconds:,.2f} s",
        f"{len(result['cells'])} cells, {shown} non-zero cells at or above k",
    )


# --- Main ------------------------------------------------------------------------------------


def run(sizes: Sizes, mode: str) -> None:
    import django

    django.setup()
    from unittest import mock

    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    import chain.services as chain_services
    from accounts.roles import Role
    from accounts.services import user_create
    from medportal.research import tasks as research_tasks
    from medportal.tenants.services import hub_ensure, tenant_create

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    hub_ensure()
    header = chain_bench.machine_description()
    table = chain_bench.Table()
    notes: list[str] = []
    rng = random.Random(SEED)
    # No worker runs: seals, deliveries and the research tasks (invitations, the
    # aggregate's next step) are not sent; the bench does their work itself.
    with (
        mock.patch.object(chain_services, "_schedule_seal", lambda accepted: None),
        mock.patch.object(chain_services, "outbox_dispatch", lambda **kwargs: None),
        mock.patch.object(research_tasks, "invitations_make_task", mock.Mock()),
        mock.patch.object(research_tasks, "aggregate_advance_task", mock.Mock()),
    ):
        organisation = tenant_create(
            kind="research", slug="bench-org", name="Bench Research"
        ).tenant
        with tenant_context(organisation):
            researcher = user_create(
                actor=None,
                username="bench-researcher",
                role=Role.RESEARCHER,
                password=PASSWORD,
                must_change_password=False,
            )
        large = chain_bench.hospital_create("bench-large")
        small = [chain_bench.hospital_create(f"bench-small-{n}") for n in range(SMALL_HOSPITALS)]
        staff = {hospital.slug: staff_create(hospital) for hospital in (large, *small)}

        print(f"== seeding {sizes.patients:,} patients and {sizes.records:,} entries", flush=True)
        seconds = hospital_seed(
            large,
            staff[large.slug][1],
            patients=sizes.patients,
            records=sizes.records,
            rng=rng,
        )
        small_records = sizes.small_patients * sizes.small_records_per_patient
        for hospital in small:
            seconds += hospital_seed(
                hospital,
                staff[hospital.slug][1],
                patients=sizes.small_patients,
                records=small_records,
                rng=rng,
            )
        settle = chain_settle([large, *small])
        seeding_check(large, staff[large.slug][1], rng)
        notes.append(
            "seeded with records.services.patient_create and bench.research.records_write"
            f" (record_create's steps, {SEED_BATCH} entries per batch): {sizes.patients:,}"
            f" patients and {sizes.records:,} entries"
            f" at the large hospital, {sizes.small_patients:,} and {small_records:,} at each of"
            f" {SMALL_HOSPITALS} others ({seconds:.0f} s; sealed and synced in {settle:.0f} s)"
        )

        print("== release of rows at the large hospital", flush=True)
        bench_release(table, notes, large, staff[large.slug], organisation, researcher, sizes, rng)
        print(f"== secure aggregate over {1 + SMALL_HOSPITALS} hospitals", flush=True)
        hospitals = [(large, staff[large.slug], sizes.patients)] + [
            (hospital, staff[hospital.slug], sizes.small_patients) for hospital in small
        ]
        bench_aggregate(table, notes, hospitals, organisation, researcher, rng)
    chain_bench.queue_purge()

    print()
    print(f"MedPortal research benchmark ({mode})")
    print("\n".join(header))
    print()
    print(table.render())
    print()
    print("Set-up: " + "; ".join(notes) + ".")
    print(
        "Timings: wall clock of one call each, no warm-up (a release is made once). The"
        " match, build and archive figures are the parts of one release_make call, timed"
        " around the functions it calls. Entries carry one normal-level section (visit,"
        " diagnosis, drug, two vital signs), all of it releasable. Opt-ins are the signed"
        " access transactions consent_research makes, built directly (see opt_ins_sign)."
    )


def main() -> int:
    return main_with_throwaway_database(
        description=__doc__.splitlines()[0],
        database=BENCH_DB,
        prefix="bench-research-",
        quick=QUICK,
        full=FULL,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
