"""Applying blocks to a replica: in order, once, with gaps filled from the hub."""

from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command
from django_tenants.utils import schema_context, tenant_context

from chain.models import Block, ChainState, Outbox
from chain.services import replica_sync
from chain.tasks import deliver_block_task
from tests.chain.helpers import append_blocks, counts


def replica_height(schema: str) -> int:
    with schema_context(schema):
        return ChainState.objects.get(id=1).height


def test_a_redelivered_block_changes_nothing(alpha):
    heights = append_blocks(alpha, 3)
    first = replica_sync(tenant=alpha)
    assert first.height == heights[-1]
    before = counts("alpha")
    again = replica_sync(tenant=alpha, up_to=heights[-1])
    assert (again.applied, again.height) == (0, heights[-1])
    assert counts("alpha") == before


def test_out_of_order_delivery_pulls_the_gap_and_the_late_one_changes_nothing(beta):
    heights = append_blocks(beta, 4)
    start = replica_height("beta")
    # The task for the last block arrives first: the missing ones are pulled.
    with schema_context("public"):
        rows = {
            row.block.height: row.pk
            for row in Outbox.objects.filter(tenant=beta, block__height__in=heights).select_related(
                "block"
            )
        }
    with tenant_context(beta):
        deliver_block_task.apply(args=[rows[heights[-1]]]).get()
    assert replica_height("beta") == heights[-1] > start
    with schema_context("beta"):
        assert list(Block.objects.filter(height__gt=start).values_list("height", flat=True)) == (
            list(range(start + 1, heights[-1] + 1))
        )
    before = counts("beta")
    with tenant_context(beta):
        deliver_block_task.apply(args=[rows[heights[0]]]).get()
    assert counts("beta") == before
    with schema_context("public"):
        assert not Outbox.objects.filter(
            tenant=beta, block__height__lte=heights[-1], confirmed_at__isnull=True
        ).exists()


def test_a_delivery_task_for_another_tenants_row_does_nothing(alpha, beta):
    [height] = append_blocks(alpha, 1)
    with schema_context("public"):
        alpha_row = Outbox.objects.get(tenant=alpha, block__height=height)
    before = counts("beta")
    with tenant_context(beta):
        deliver_block_task.apply(args=[alpha_row.pk]).get()
    assert counts("beta") == before


def test_chain_status_json_lists_every_tenant_with_lag(alpha, beta):
    append_blocks(alpha, 2)
    replica_sync(tenant=alpha)
    output = StringIO()
    call_command("chain_status", "--json", stdout=output)
    rows = {row["slug"]: row for row in json.loads(output.getvalue())}
    hub = rows["hub"]
    assert set(hub) == {
        "slug",
        "kind",
        "height",
        "head_hash",
        "behind",
        "last_delivery_at",
        "last_verified_at",
        "last_verification",
    }
    assert (rows["alpha"]["height"], rows["alpha"]["behind"]) == (hub["height"], 0)
    assert rows["alpha"]["head_hash"] == hub["head_hash"]
    assert rows["beta"]["behind"] == hub["height"] - rows["beta"]["height"] > 0
    assert rows["alpha"]["last_delivery_at"] is not None


def test_catching_up_reports_progress_chunk_by_chunk(beta):
    heights = append_blocks(beta, 5)
    start = replica_height("beta")
    calls: list[tuple[int, int]] = []
    result = replica_sync(
        tenant=beta, chunk=2, progress=lambda height, target: calls.append((height, target))
    )
    assert result.height == heights[-1]
    assert result.applied == heights[-1] - start
    expected, height = [], start
    while height < heights[-1]:
        height = min(height + 2, heights[-1])
        expected.append((height, heights[-1]))
    assert calls == expected
