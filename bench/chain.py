"""Ledger benchmark: append throughput, delivery latency, verification and catch-up rates.

Run against a throw-away database (``medportal_bench`` on the server DATABASE_URL names,
dropped and recreated at start, dropped again at the end)::

    .venv/bin/python -m medportal.devstack exec --prefer-local -- .venv/bin/python bench/chain.py
    ... bench/chain.py --quick

Not a test: it asserts nothing about timings, it prints one table.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "medportal_bench"


@dataclass(frozen=True)
class Sizes:
    append_n: int
    latency_blocks: int
    verify_heights: tuple[int, int]


FULL = Sizes(append_n=2000, latency_blocks=100, verify_heights=(10_000, 100_000))
QUICK = Sizes(append_n=200, latency_blocks=20, verify_heights=(1_000, 5_000))
TENANT_COUNTS = (2, 5, 10)
APPEND_BATCHES = (1, 10, 100)
LATENCY_PAUSE = 0.020
BUILD_CHUNK = 1000


# --- Environment and database (before Django is configured) -------------------------


def configure_environment() -> str:
    """Set what Django needs; point DATABASE_URL at the bench database. Returns the
    original URL (for the maintenance connection)."""
    pid = os.getpid()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("MEDPORTAL_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    os.environ.setdefault("CELERY_QUEUE", f"bench-{pid}")
    os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"bench-{pid}")
    os.environ["PYTHONUNBUFFERED"] = "1"
    original = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/medportal")
    os.environ["DATABASE_URL"] = urlunsplit(urlsplit(original)._replace(path=f"/{BENCH_DB}"))
    return original


def _maintenance_execute(original_url: str, *statements: str) -> None:
    import psycopg

    url = urlunsplit(urlsplit(original_url)._replace(path="/postgres"))
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def database_recreate(original_url: str) -> None:
    _maintenance_execute(
        original_url,
        f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)',
        f'CREATE DATABASE "{BENCH_DB}"',
    )


def database_drop(original_url: str) -> None:
    _maintenance_execute(original_url, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


# --- Helpers (Django configured) -----------------------------------------------------

_counter = itertools.count(1)


def anchor_payload(slug: str) -> dict:
    n = next(_counter)
    return {"tenant": slug, "first_entry": n, "last_entry": n, "root": f"{n:064x}"}


def machine_description() -> list[str]:
    from django.db import connection

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"CPU:        {cpu}",
        f"Cores:      {os.cpu_count()} (load average at start: {load})",
        f"PostgreSQL: {pg_version}",
        f"Python:     {platform.python_version()} ({platform.python_implementation()})",
    ]


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, measure: str, setting: str, result: str, note: str = "") -> None:
        self.rows.append((measure, setting, result, note))
        print(f"  .. {measure} [{setting}]: {result} {note}", flush=True)

    def render(self) -> str:
        header = ("measure", "setting", "result", "notes")
        rows = [header, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]

        def line(row):
            cells = [row[i].ljust(widths[i]) for i in range(3)]
            return "  ".join([*cells, row[3]]).rstrip()

        rule = "  ".join("-" * w for w in widths) + "  " + "-" * 5
        return "\n".join([line(header), rule, *(line(row) for row in self.rows)])


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"


def hospital_create(slug: str, progress=None):
    from medportal.tenants.services import tenant_create

    return tenant_create(kind="hospital", slug=slug, name=f"Bench {slug}", progress=progress).tenant


def hub_height() -> int:
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain.models import ChainState

    with schema_context(get_public_schema_name()):
        return ChainState.objects.get(id=1).height


# --- 1. Append throughput --------------------------------------------------------------


def bench_append(table: Table, author, n: int) -> None:
    """N transactions signed (tenant schema), accepted (hub) and sealed, per batch
    size: each batch is signed with one unsealing of the key, accepted by the hub
    in one database transaction (transactions_accept) and sealed as one block."""
    from django.conf import settings
    from django_tenants.utils import tenant_context

    from chain.services import (
        block_seal,
        envelope_sign,
        signing_key_ensure,
        signing_key_private,
        transactions_accept,
    )

    for batch in APPEND_BATCHES:
        settings.CHAIN_MAX_TRANSACTIONS_PER_BLOCK = batch
        sign_s = accept_s = seal_s = 0.0
        blocks = 0
        done = 0
        while done < n:
            size = min(batch, n - done)
            started = time.perf_counter()
            with tenant_context(author):
                key = signing_key_ensure(owner=author.slug)
                private = signing_key_private(key)
                envelopes = [
                    envelope_sign(
                        kind="anchor", payload=anchor_payload(author.slug), key=key, private=private
                    )
                    for _ in range(size)
                ]
            signed = time.perf_counter()
            transactions_accept(envelopes=envelopes, submitted_by=author.slug)
            accepted = time.perf_counter()
            sign_s += signed - started
            accept_s += accepted - signed
            started = time.perf_counter()
            blocks += len(block_seal(force=True))
            seal_s += time.perf_counter() - started
            done += size
        total = sign_s + accept_s + seal_s
        table.add(
            "append (sign+accept+seal)",
            f"batch {batch:>3}, N={n}",
            f"{rate(n, total)} tx/s",
            f"{blocks} blocks in {total:.1f} s; per tx: sign {sign_s / n * 1e3:.2f} ms, "
            f"accept {accept_s / n * 1e3:.2f} ms, seal {seal_s / n * 1e3:.2f} ms",
        )
    settings.CHAIN_MAX_TRANSACTIONS_PER_BLOCK = 1


# --- 2. Delivery latency with a real worker ---------------------------------------------


class Worker:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from django.conf import settings

        from medportal.health import check_worker

        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "medportal",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "2",
                    "-Q",
                    queue,
                    "--hostname",
                    f"{queue}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it ourselves
            )
        deadline = time.monotonic() + 90
        while check_worker() != "ok":
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not come up in 90 s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def queue_purge() -> int:
    from medportal.celery import app

    try:
        return app.control.purge() or 0
    except Exception:  # noqa: BLE001  (best effort: the broker may be gone on Ctrl-C)
        return 0


def outbox_wait_confirmed(
    block_ids: list[int] | None, timeout: float, interval: float = 0.05
) -> None:
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain.models import Outbox

    deadline = time.monotonic() + timeout
    with schema_context(get_public_schema_name()):
        while True:
            rows = Outbox.objects.filter(confirmed_at__isnull=True)
            if block_ids is not None:
                rows = rows.filter(block_id__in=block_ids)
            if not rows.exists():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{rows.count()} deliveries unconfirmed after {timeout:.0f} s")
            time.sleep(interval)


def replicas_sync_all() -> None:
    from chain.services import replica_sync
    from medportal.tenants.selectors import tenant_list_members

    for tenant in tenant_list_members():
        replica_sync(tenant=tenant)


def _blocks_appended_one_by_one(author, blocks: int, *, wait_for_delivery: bool) -> list[int]:
    """Append ``blocks`` 1-tx blocks from ``author``; returns the blocks' ids. Either
    paced (LATENCY_PAUSE between blocks, deliveries may queue up) or each block only
    after the previous one reached every tenant (latency without a queue)."""
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain.models import Block
    from chain.services import block_seal, transaction_submit

    block_ids: list[int] = []
    for _ in range(blocks):
        transaction_submit(tenant=author, kind="anchor", payload=anchor_payload(author.slug))
        heights = block_seal(force=True)
        with schema_context(get_public_schema_name()):
            new_ids = list(Block.objects.filter(height__in=heights).values_list("id", flat=True))
        block_ids += new_ids
        if wait_for_delivery:
            outbox_wait_confirmed(new_ids, timeout=120, interval=0.01)
        else:
            time.sleep(LATENCY_PAUSE)
    outbox_wait_confirmed(block_ids, timeout=900)
    return block_ids


def _latencies_ms(block_ids: list[int], tenants: int) -> list[float]:
    """Per block: the last tenant's Outbox.confirmed_at - the hub's Block.stored_at."""
    from django.db.models import Count, Max
    from django_tenants.utils import get_public_schema_name, schema_context

    from chain.models import Block, Outbox

    with schema_context(get_public_schema_name()):
        stored = dict(Block.objects.filter(id__in=block_ids).values_list("id", "stored_at"))
        confirmed = (
            Outbox.objects.filter(block_id__in=block_ids)
            .values("block_id")
            .annotate(last=Max("confirmed_at"), rows=Count("id"))
        )
        latencies = []
        for row in confirmed:
            if row["rows"] != tenants:
                raise RuntimeError(f"block {row['block_id']}: {row['rows']} outbox rows")
            latencies.append((row["last"] - stored[row["block_id"]]) / timedelta(milliseconds=1))
    return latencies


def bench_latency(table: Table, author, blocks: int) -> None:
    from unittest import mock

    import chain.services as services
    from medportal.tenants.selectors import tenant_list_members

    created = itertools.count(1)
    runs = (
        (False, blocks, f"paced: {LATENCY_PAUSE * 1e3:.0f} ms pause between blocks"),
        (True, max(3, blocks // 5), "unloaded: next block after the last delivery"),
    )
    for tenants in TENANT_COUNTS:
        while tenant_list_members().count() < tenants:
            hospital_create(f"bench-latency-{next(created)}")
        outbox_wait_confirmed(None, timeout=300)
        for wait_for_delivery, count, how in runs:
            # The bench seals itself; the seal task that transaction_accept schedules
            # would race it on the worker, so it is not sent during this phase.
            with mock.patch.object(services, "_schedule_seal", lambda accepted: None):
                block_ids = _blocks_appended_one_by_one(
                    author, count, wait_for_delivery=wait_for_delivery
                )
            latencies = _latencies_ms(block_ids, tenants)
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            table.add(
                "delivery latency (commit -> all applied)",
                f"{tenants:>2} tenants, {len(latencies)} blocks",
                f"p50 {cuts[49]:,.0f} ms / p99 {cuts[98]:,.0f} ms",
                f"{how}; max {max(latencies):,.0f} ms",
            )


# --- 3. Building a long chain, verification ----------------------------------------------


def chain_extend(author, to_height: int) -> tuple[int, float]:
    """Append 1-tx blocks up to ``to_height``: anchor transactions signed with the
    author's key, blocks signed by the hub's key with the same encoding functions as
    ``chain.services._append``, written with bulk_create, one database transaction per
    BUILD_CHUNK blocks. No outbox rows (delivery is not measured here)."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

    from chain import keys as keyring
    from chain.encoding import block_hash, block_signing_bytes
    from chain.merkle import merkle_root
    from chain.models import Block, ChainState, SigningKey, Transaction
    from chain.services import HUB_OWNER, envelope_sign, signing_key_ensure, signing_key_private

    with tenant_context(author):
        author_key = signing_key_ensure(owner=author.slug)
        author_private = signing_key_private(author_key)
    started = time.perf_counter()
    added = 0
    with schema_context(get_public_schema_name()):
        hub_key = SigningKey.objects.get(owner=HUB_OWNER, is_active=True)
        hub_private = signing_key_private(hub_key)
        while True:
            with transaction.atomic():
                state = ChainState.objects.select_for_update().get(id=1)
                if state.height >= to_height:
                    break
                previous = state.head_hash
                blocks, envelopes = [], []
                for height in range(
                    state.height + 1, min(to_height, state.height + BUILD_CHUNK) + 1
                ):
                    envelope = envelope_sign(
                        kind="anchor",
                        payload=anchor_payload(author.slug),
                        key=author_key,
                        private=author_private,
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


def bench_verify(table: Table, height: int) -> None:
    from django_tenants.utils import get_public_schema_name

    from chain.selectors import chain_verify_schema

    for hash_only in (False, True):
        started = time.perf_counter()
        report = chain_verify_schema(schema_name=get_public_schema_name(), hash_only=hash_only)
        seconds = time.perf_counter() - started
        if not report.ok:
            raise RuntimeError(f"the bench chain does not verify: {report.status}")
        table.add(
            "full verification, " + ("hash only" if hash_only else "with signatures"),
            f"{report.blocks_checked:,} blocks",
            f"{rate(report.blocks_checked, seconds)} blocks/s, "
            f"{rate(report.transactions_checked, seconds)} tx/s",
            f"{seconds:.1f} s, {report.transactions_checked:,} tx",
        )


def bench_catch_up(table: Table) -> None:
    marks: list[tuple[float, int]] = []

    def progress(height: int, target: int) -> None:
        marks.append((time.perf_counter(), height))

    target = hub_height()
    started = time.perf_counter()
    hospital_create("bench-joiner", progress=progress)
    total = time.perf_counter() - started
    blocks = target + 2  # genesis .. target, plus the joiner's own identity block
    note = f"tenant_create total {total:.1f} s (schema + migrations + join)"
    if len(marks) >= 2:
        (first_t, first_h), (last_t, last_h) = marks[0], marks[-1]
        note += f"; steady copy rate {rate(last_h - first_h, last_t - first_t)} blocks/s"
    table.add(
        "catch-up of a joining tenant",
        f"{blocks:,} blocks",
        f"{rate(blocks, total)} blocks/s",
        note,
    )


# --- Main ------------------------------------------------------------------------------


def run(sizes: Sizes, mode: str, work_dir: Path) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from medportal.tenants.services import hub_ensure

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    hub_ensure()
    header = machine_description()
    table = Table()
    settings.CHAIN_MAX_TRANSACTIONS_PER_BLOCK = 1
    author = hospital_create("bench-author")

    print(f"== append throughput (N={sizes.append_n})", flush=True)
    bench_append(table, author, sizes.append_n)

    print("== delivery latency (starting a Celery worker)", flush=True)
    replicas_sync_all()  # the author's replica missed the throughput phase's blocks
    queue_purge()  # delivery and seal tasks queued while no worker ran
    worker = Worker(work_dir / "worker.log")
    try:
        worker.start()
        bench_latency(table, author, sizes.latency_blocks)
    finally:
        worker.stop()
        queue_purge()

    build_notes = []
    for height in sizes.verify_heights:
        print(f"== building the chain to height {height:,}", flush=True)
        added, seconds = chain_extend(author, height)
        build_notes.append(f"+{added:,} blocks in {seconds:.1f} s ({rate(added, seconds)}/s)")
        print(f"== verifying {height + 1:,} blocks", flush=True)
        bench_verify(table, height)

    print("== catch-up of a joining tenant", flush=True)
    bench_catch_up(table)
    queue_purge()  # the joiner's block queued deliveries for the (stopped) worker

    print()
    print(f"MedPortal ledger benchmark ({mode})")
    print("\n".join(header))
    print()
    print(table.render())
    print()
    print(
        "Long chain for verification/catch-up: 1-tx anchor blocks built directly (author-signed"
        " transactions, hub-signed blocks, same encoding as _append) with bulk_create, "
        f"{BUILD_CHUNK} blocks per database transaction: " + "; ".join(build_notes) + "."
    )
    print(
        "Latency = Outbox.confirmed_at of the last tenant - Block.stored_at on the hub "
        "(wall clock, same machine); one Celery worker (prefork, concurrency 2) runs "
        "replica_sync per delivery task."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    args = parser.parse_args()
    sizes, mode = (QUICK, "quick") if args.quick else (FULL, "full")

    sys.path.insert(0, str(ROOT))
    original_url = configure_environment()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.perf_counter()
    database_recreate(original_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-chain-") as work_dir:
            run(sizes, mode, Path(work_dir))
    except KeyboardInterrupt:
        print("interrupted: worker stopped, dropping the bench database", file=sys.stderr)
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001, S110  (Django may not be set up yet)
            pass
        database_drop(original_url)
    print(f"\ntotal run time: {time.perf_counter() - started:.1f} s ({mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
