"""Delivery with the real parts: a Celery worker (prefork) on Redis, PostgreSQL,
tasks sent after commit, the beat-driven sweep. Everything here is committed."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from django_tenants.utils import schema_context

from chain.models import Block, PendingTransaction, Transaction
from chain.selectors import chain_status, chain_verify_all
from chain.services import transaction_submit
from medportal.tenants.models import Tenant
from medportal.tenants.services import tenant_create
from tests.chain.helpers import anchor_payload, append_blocks
from tests.conftest import start_worker, wait_for

pytestmark = pytest.mark.live


def hub_head() -> int:
    with schema_context("public"):
        return Block.objects.order_by("-height").values_list("height", flat=True).first()


def converged() -> bool:
    with schema_context("public"):
        if PendingTransaction.objects.exists():
            return False
    statuses = chain_status()
    return all(status.behind == 0 for status in statuses)


def assert_replicas_identical_and_verified() -> None:
    with schema_context("public"):
        hub = list(Block.objects.order_by("height").values_list("height", "hash"))
        hub_transactions = Transaction.objects.count()
    for tenant in Tenant.objects.exclude(kind="hub"):
        with schema_context(tenant.schema_name):
            assert list(Block.objects.order_by("height").values_list("height", "hash")) == hub
            assert Transaction.objects.count() == hub_transactions
    reports = chain_verify_all()
    assert [(r.tenant, r.reason) for r in reports if not r.ok] == []


@pytest.fixture
def drained(committed, live_worker, django_db_blocker):
    """Leave no delivery in flight for the tests that follow."""
    with django_db_blocker.unblock():
        yield
        wait_for(converged, timeout=120, interval=0.25, what="every replica at the hub's head")


def test_three_hospitals_converge_after_200_transactions_from_all(
    drained, committed, django_db_blocker
):
    with django_db_blocker.unblock():
        gamma = tenant_create(kind="hospital", slug="gamma", name="Gamma Hospital").tenant
        hospitals = [committed["alpha"], committed["beta"], gamma]
        submitted = [
            transaction_submit(
                tenant=hospitals[n % 3],
                kind="anchor",
                payload=anchor_payload(hospitals[n % 3].slug),
            ).hash
            for n in range(200)
        ]
        wait_for(converged, timeout=120, interval=0.25, what="convergence")
        with schema_context("public"):
            stored = set(
                Transaction.objects.filter(hash__in=submitted).values_list("hash", flat=True)
            )
        assert stored == set(submitted)
        heads = {
            s.slug: s.head_hash
            for s in chain_status()
            if s.slug in ("hub", "alpha", "beta", "gamma")
        }
        assert len(set(heads.values())) == 1, heads
        assert_replicas_identical_and_verified()


def test_a_tenant_added_after_500_blocks_catches_up_and_verifies(
    drained, committed, django_db_blocker
):
    with django_db_blocker.unblock():
        missing = max(0, 500 - hub_head())
        append_blocks(committed["beta"], missing)
        assert hub_head() >= 500
        calls: list[tuple[int, int]] = []
        slug = f"late-{uuid.uuid4().hex[:6]}"
        late = tenant_create(
            kind="hospital",
            slug=slug,
            name="Late Hospital",
            progress=lambda height, target: calls.append((height, target)),
        ).tenant
        status = chain_status(only=slug)[0]
        assert (status.height, status.behind) == (hub_head(), 0)
        assert calls[-1][0] == calls[-1][1] == status.height
        assert [height for height, _ in calls] == sorted(height for height, _ in calls)
        report = next(r for r in chain_verify_all(only=slug) if r.tenant == slug)
        assert (report.ok, report.height) == (True, status.height)
        assert late.slug == slug


def test_a_worker_killed_mid_delivery_loses_nothing(
    committed, live_worker, django_db_blocker, tmp_path
):
    """SIGKILL the worker's whole process group (pool children too) while it
    delivers 300 blocks; a new worker, whose beat sweeps unconfirmed outbox rows
    every second, finishes the job. Messages the dead worker had taken stay
    unacknowledged in Redis, so only the sweep can bring them back in time."""
    with django_db_blocker.unblock():
        start = hub_head()
        alpha = committed["alpha"]
        append_blocks(alpha, 100)
        wait_for(
            lambda: chain_status(only="alpha")[0].height >= start + 20,
            timeout=60,
            what="some deliveries",
        )
        os.killpg(live_worker.process.pid, signal.SIGKILL)
        live_worker.process.wait(timeout=10)
        append_blocks(alpha, 200)
        assert hub_head() == start + 300
        behind = {s.slug: s.behind for s in chain_status() if s.kind != "hub"}
        assert min(behind[slug] for slug in ("alpha", "beta", "northwind")) >= 200

        live_worker.process = start_worker(
            live_worker.mail_dir,
            live_worker.log,
            beat_schedule=tmp_path / "beat",
            extra_environment={"CHAIN_SWEEP_SECONDS": "1", "CHAIN_REDELIVERY_SECONDS": "2"},
        )
        wait_for(converged, timeout=180, interval=0.5, what="recovery after SIGKILL")
        assert_replicas_identical_and_verified()
