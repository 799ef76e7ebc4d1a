"""Thin tasks: take ids, enter the right schema, call a service."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import connection
from django_tenants.utils import get_public_schema_name

from medportal.celery import TenantTask

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def block_seal_task() -> None:
    """Seal what is due; if transactions still wait, come back when they are due."""
    from chain.services import block_seal, block_seal_due_in

    block_seal()
    due_in = block_seal_due_in()
    if due_in is not None:
        block_seal_task.apply_async(
            countdown=due_in + 0.01, headers={"_schema_name": get_public_schema_name()}
        )


@shared_task(base=TenantTask, bind=True, ignore_result=True, max_retries=10, default_retry_delay=2)
def deliver_block_task(self, outbox_id: int) -> None:
    """Apply the outbox row's block (and any before it) to this tenant's replica."""
    from django_tenants.utils import schema_context

    from chain.models import Outbox
    from chain.services import ReplicaError, replica_mark_failed, replica_sync

    tenant = connection.tenant
    with schema_context(get_public_schema_name()):
        row = (
            Outbox.objects.filter(pk=outbox_id, tenant_id=tenant.pk).select_related("block").first()
        )
    if row is None:  # not this tenant's row: refuse rather than guess
        logger.warning("outbox row %s is not for tenant %s", outbox_id, tenant.slug)
        return
    try:
        # Up to the hub's head, not just this row's block: one task catches up
        # everything, and the tasks for the blocks it covered find nothing to do.
        replica_sync(tenant=tenant)
    except ReplicaError as error:
        # A block that does not verify is never applied; the dashboard shows why and
        # an operator repairs. Retrying would not change the block.
        logger.error("delivery refused: %s", error)
        replica_mark_failed(tenant=tenant, reason=str(error))


@shared_task(ignore_result=True)
def outbox_sweep_task() -> int:
    from chain.services import outbox_sweep

    return outbox_sweep()


@shared_task(ignore_result=True)
def chain_verify_task() -> None:
    """Incremental verification of the hub and every replica, recorded for the dashboard."""
    from chain.selectors import chain_verify_all

    chain_verify_all(incremental=True, record=True)
