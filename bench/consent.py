"""Consent benchmark: policy-check latency with many grants, cross-hospital read latency.

Run against a throw-away database (``medportal_bench_consent`` on the server
DATABASE_URL names, dropped and recreated at start, dropped again at the end),
with a throw-away ciphertext store::

    .venv/bin/python -m medportal.devstack exec --prefer-local -- .venv/bin/python bench/consent.py
    ... bench/consent.py --quick

Not a test: it asserts nothing about timings, it prints one table.
"""

from __future__ import annotations

import inspect
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chain as chain_bench  # noqa: E402  (set-up shared with the ledger bench)
from bench import records as records_bench  # noqa: E402  (patients and record contents)
from bench.harness import main_with_throwaway_database  # noqa: E402

BENCH_DB = "medportal_bench_consent"
PASSWORD = records_bench.PASSWORD  # the patients' accounts are made by records_bench.patient_new


@dataclass(frozen=True)
class Sizes:
    grants: int  # access transactions on the chain
    grant_patients: int  # spread over this many patients
    policy_calls: int
    history_entries: int
    history_reads: int


FULL = Sizes(
    grants=10_000, grant_patients=100, policy_calls=500, history_entries=20, history_reads=50
)
QUICK = Sizes(
    grants=1_000, grant_patients=20, policy_calls=200, history_entries=20, history_reads=50
)
WARM_UP = 20
GRANT_CATEGORIES = ("normal",)  # each built grant: every normal-level category
READ_GRANT = ("normal", "restricted", "very_restricted")  # the cross-hospital grant


def with_password(function, **kwargs):
    """Call a service that asks for the patient's password once the
    password-wrapped keys are in, and does not before."""
    if "password" in inspect.signature(function).parameters:
        kwargs["password"] = PASSWORD
    return function(**kwargs)


def cuts_of(timings: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    return cuts[49], cuts[98]


def timed(call, repeats: int) -> list[float]:
    for _ in range(WARM_UP):
        call()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1e3)
    return timings


# --- Building the grants ------------------------------------------------------------------


def grantee_of(number: int) -> dict:
    """Half the grants name a hospital, half a doctor (neither needs to exist)."""
    if number % 2:
        return {"type": "practitioner", "id": f"bench-doctor-{number}"}
    return {"type": "tenant", "id": f"bench-grantee-{number}"}


def grants_build(patients: list, per_patient: int) -> tuple[int, float]:
    """``per_patient`` grants from every patient, each to a different grantee,
    interleaved in chain order (round robin over the patients, so one patient's
    grants are spread over the whole chain): ``access`` transactions signed with
    each patient's own key (``records.keys.patient_signing_key``), in 1-tx blocks
    signed by the hub's key with the encoding of ``chain.services._append``,
    bulk-inserted, one database transaction per ``BUILD_CHUNK`` blocks (as
    ``bench.chain.chain_extend`` builds its long chain). No outbox rows."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain import keys as keyring
    from chain.encoding import block_hash, block_signing_bytes
    from chain.merkle import merkle_root
    from chain.models import Block, ChainState, SigningKey, Transaction, TransactionKind
    from chain.services import HUB_OWNER, envelope_sign, signing_key_private
    from consent.grants import categories_expand
    from records.keys import patient_signing_key

    started = time.perf_counter()
    categories = categories_expand(GRANT_CATEGORIES)
    signers = [(patient, patient_signing_key(patient)) for patient in patients]
    order = ((g, signer) for g in range(per_patient) for signer in signers)
    added = 0
    with schema_context(get_public_schema_name()):
        hub_key = SigningKey.objects.get(owner=HUB_OWNER, is_active=True)
        hub_private = signing_key_private(hub_key)
        while True:
            chunk = list(itertools.islice(order, chain_bench.BUILD_CHUNK))
            if not chunk:
                break
            with transaction.atomic():
                state = ChainState.objects.select_for_update().get(id=1)
                previous = state.head_hash
                blocks, envelopes = [], []
                for height, (g, (patient, private)) in enumerate(chunk, start=state.height + 1):
                    envelope = envelope_sign(
                        kind=TransactionKind.ACCESS,
                        payload={
                            "patient": patient.pseudonym,
                            "grantee": grantee_of(g),
                            "categories": categories,
                            "purpose": "treatment",
                            "expires_at": None,
                        },
                        key=patient,  # has the key_id
                        private=private,
                    )
                    header = {
                        "height": height,
                        "previous_hash": previous,
                        "created_at": timezone.now(),
                        "proposer": HUB_OWNER,
                        "merkle_root": merkle_root([envelope.hash]),
                        "transaction_count": 1,
                    }
                    signature = keyring.sign(hub_private, block_signing_bytes(**header))
                    previous = block_hash(hub_signature=signature, **header)
                    blocks.append(Block(**header, hub_signature=signature, hash=previous))
                    envelopes.append(envelope)
                Block.objects.bulk_create(blocks)
                Transaction.objects.bulk_create(
                    [
                        Transaction(block=block, index=0, hash=envelope.hash, **envelope.fields())
                        for block, envelope in zip(blocks, envelopes, strict=True)
                    ]
                )
                state.height, state.head_hash = blocks[-1].height, blocks[-1].hash
                state.save(update_fields=["height", "head_hash"])
                added += len(blocks)
    return added, time.perf_counter() - started


def chain_verified(table_notes: list[str]) -> None:
    """The built chain must verify like any other (hashes and signatures)."""
    from django_tenants.utils import get_public_schema_name

    from chain.selectors import chain_verify_schema

    started = time.perf_counter()
    report = chain_verify_schema(schema_name=get_public_schema_name())
    if not report.ok:
        raise RuntimeError(f"the bench chain does not verify: {report.status}")
    table_notes.append(
        f"the hub's chain verifies with signatures ({report.blocks_checked:,} blocks, "
        f"{report.transactions_checked:,} tx, {time.perf_counter() - started:.1f} s)"
    )


def sealed_query_indexes(pseudonym: str) -> str:
    """The indexes PostgreSQL uses for grants_current's sealed-transaction query."""
    import re

    from django.db.models import Q
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain.models import Transaction, TransactionKind

    with schema_context(get_public_schema_name()):
        plan = (
            Transaction.objects.filter(
                Q(kind=TransactionKind.ACCESS, payload__patient__in=[pseudonym])
            )
            .order_by("block__height", "index")
            .values_list("hash", "payload")
            .explain()
        )
    names = sorted(
        set(re.findall(r"Index (?:Only )?Scan (?:Backward )?using (\S+)", plan))
        | set(re.findall(r"Bitmap Index Scan on (\S+)", plan))
    )
    return ", ".join(names) if names else "no index (sequential scan)"


# --- 1. Policy checks ----------------------------------------------------------------------


def bench_policy(table, notes: list[str], hospital, doctor, sizes: Sizes) -> None:
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from chain.services import block_seal
    from consent.policy import Requester, SectionRef, access_decide, grants_current

    per_patient = sizes.grants // sizes.grant_patients
    with tenant_context(hospital):
        patients = [
            records_bench.patient_new(doctor, f"grant-{i}") for i in range(sizes.grant_patients)
        ]
    block_seal(force=True)  # the patients' keys must be registered before they sign
    added, seconds = grants_build(patients, per_patient)
    notes.append(
        f"{added:,} grants ({sizes.grant_patients} patients x {per_patient}, each to a"
        " different hospital or doctor, interleaved) built directly: access transactions"
        " signed with each patient's own key, 1-tx blocks signed by the hub with the encoding"
        f" of _append, bulk_create, {chain_bench.BUILD_CHUNK} blocks per database transaction"
        f" ({seconds:.1f} s, {chain_bench.rate(added, seconds)} grants/s)"
    )
    chain_verified(notes)

    patient = patients[len(patients) // 2]
    pseudonyms = frozenset({patient.pseudonym})
    # The doctor's hospital holds the patient's last grant (the policy scans them all).
    last = per_patient - 1 if (per_patient - 1) % 2 == 0 else per_patient - 2
    requester = Requester(
        role="doctor", tenant_slug=grantee_of(last)["id"], practitioner="bench-reader-0001"
    )
    section = SectionRef(
        origin=hospital.slug,
        level="normal",
        categories=("encounters", "diagnoses", "medications", "vitals"),
        author="bench-author-0001",
    )
    now = timezone.now()
    grants = grants_current(patient_pseudonyms=pseudonyms)
    if len(grants) != per_patient:
        raise RuntimeError(f"grants_current found {len(grants)} grants, not {per_patient}")
    decision = access_decide(requester=requester, patient_pseudonyms=pseudonyms, section=section)
    if not decision.allowed or not decision.reason.startswith("grant:"):
        raise RuntimeError(f"the bench requester is not allowed: {decision.reason}")

    def decide():
        access_decide(requester=requester, patient_pseudonyms=pseudonyms, section=section, now=now)

    def fetch():
        grants_current(patient_pseudonyms=pseudonyms)

    calls = sizes.policy_calls
    p50, p99 = cuts_of(timed(decide, calls))
    table.add(
        "access_decide, grants=None (reads the chain)",
        f"{sizes.grants:,} grants on chain, {calls} calls",
        f"p50 {p50:,.2f} ms / p99 {p99:,.2f} ms",
        f"doctor at another hospital, normal section, allowed by a tenant grant"
        f" (patient holds {per_patient} grants)",
    )
    p50, p99 = cuts_of(timed(fetch, calls))
    table.add(
        "grants_current alone",
        f"{per_patient} of {sizes.grants:,} grants, {calls} calls",
        f"p50 {p50:,.2f} ms / p99 {p99:,.2f} ms",
        f"sealed + pending query, latest per grantee; plan uses: "
        f"{sealed_query_indexes(patient.pseudonym)}",
    )


# --- 2. Cross-hospital read ------------------------------------------------------------------


def bench_elsewhere(table, notes: list[str], sizes: Sizes) -> None:
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from accounts.roles import Role
    from accounts.services import user_create
    from chain.services import block_seal, replica_sync
    from consent.grants import consent_grant
    from records.models import Patient
    from records.selectors import records_elsewhere_for_staff
    from records.services import link_code_create, link_code_redeem, record_create

    hospital_a = chain_bench.hospital_create("bench-consent-a")
    hospital_b = chain_bench.hospital_create("bench-consent-b")
    doctors = {}
    for hospital in (hospital_a, hospital_b):
        with tenant_context(hospital):
            doctors[hospital.slug] = user_create(
                actor=None,
                username=f"bench-doctor-{hospital.slug}",
                role=Role.DOCTOR,
                password=PASSWORD,
                must_change_password=False,
            )
    doctor_a, doctor_b = doctors[hospital_a.slug], doctors[hospital_b.slug]
    with tenant_context(hospital_a):
        at_a = records_bench.patient_new(doctor_a, "read-a", username="bench-patient-a")
    with tenant_context(hospital_b):
        at_b = records_bench.patient_new(doctor_b, "read-b", username="bench-patient-b")
    block_seal(force=True)
    with tenant_context(hospital_a):
        issued = with_password(link_code_create, user=User.objects.get(pk=at_a.user_id))
    with tenant_context(hospital_b):
        with_password(link_code_redeem, user=User.objects.get(pk=at_b.user_id), code=issued.code)
    with tenant_context(hospital_a):
        patient_a = Patient.objects.get(pk=at_a.pk)
        for i in range(sizes.history_entries):
            record_create(author=doctor_a, patient=patient_a, content=records_bench.content(i))
        with_password(
            consent_grant,
            user=User.objects.get(pk=at_a.user_id),
            grantee_type="tenant",
            grantee_id=hospital_b.slug,
            categories=list(READ_GRANT),
        )
    started = time.perf_counter()
    block_seal(force=True)
    for hospital in (hospital_a, hospital_b):
        replica_sync(tenant=hospital)
    notes.append(
        "hospitals A and B joined after the grants were built (catch-up at join), their"
        f" replicas synced again before the reads ({time.perf_counter() - started:.1f} s)"
    )

    entries = sizes.history_entries
    with tenant_context(hospital_b):
        patient_b = Patient.objects.get(pk=at_b.pk)
        doctor = User.objects.get(pk=doctor_b.pk)

        def read():
            return records_elsewhere_for_staff(user=doctor, patient=patient_b)

        views = read()  # a check before the timings
        if len(views) != entries or any(
            view.errors or view.withheld or not view.content or view.origin_slug != hospital_a.slug
            for view in views
        ):
            raise RuntimeError(f"the {entries} entries from {hospital_a.slug} do not read back")
        reads = sizes.history_reads
        p50, p99 = cuts_of(timed(read, reads))
    table.add(
        "cross-hospital read (records_elsewhere_for_staff)",
        f"{entries} entries x 2 sections, {reads} reads",
        f"p50 {p50:,.1f} ms / p99 {p99:,.1f} ms",
        f"doctor at B, entries at A, tenant grant to B; {p50 / entries:.2f} ms/entry at p50",
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
    from medportal.tenants.services import hub_ensure

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    hub_ensure()
    header = chain_bench.machine_description()
    table = chain_bench.Table()
    notes: list[str] = []
    # No worker runs: the seal task each commit would schedule is not sent (the
    # bench seals itself), and delivery runs in-process (replica_sync).
    with (
        mock.patch.object(chain_services, "_schedule_seal", lambda accepted: None),
        mock.patch.object(chain_services, "outbox_dispatch", lambda **kwargs: None),
    ):
        hospital = chain_bench.hospital_create("bench-grants")
        with tenant_context(hospital):
            doctor = user_create(
                actor=None,
                username="bench-doctor",
                role=Role.DOCTOR,
                password=PASSWORD,
                must_change_password=False,
            )
        print(f"== policy checks with {sizes.grants:,} grants", flush=True)
        bench_policy(table, notes, hospital, doctor, sizes)
        print(f"== cross-hospital read of {sizes.history_entries} entries", flush=True)
        bench_elsewhere(table, notes, sizes)
    chain_bench.queue_purge()

    print()
    print(f"MedPortal consent benchmark ({mode})")
    print("\n".join(header))
    print()
    print(table.render())
    print()
    print("Set-up: " + "; ".join(notes) + ".")
    print(
        f"Timings: wall clock per call after {WARM_UP} warm-up calls. access_decide is given"
        " no grants, so it fetches them from the hub's chain (sealed and pending) as a single"
        " read would; the decision itself loops over the patient's grants. The cross-hospital"
        " read: patients made at A and B with records.services.patient_create, linked with"
        " link_code_create/link_code_redeem, entries written with record_create, the grant"
        f" ({', '.join(READ_GRANT)}) with consent.grants.consent_grant; each read goes through"
        " the exchange (policy per section, re-wrap for B, pointer check, decrypt, access-log"
        " append at A)."
    )


def main() -> int:
    return main_with_throwaway_database(
        description=__doc__.splitlines()[0],
        database=BENCH_DB,
        prefix="bench-consent-",
        quick=QUICK,
        full=FULL,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
