"""Tampering with the hub's chain or a replica is found, named, and repaired."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context

from chain.models import Block, ChainState
from chain.selectors import chain_verify_all, chain_verify_schema
from chain.services import RepairRefused, ReplicaError, replica_repair, replica_sync
from tests.chain.helpers import append_blocks, counts, raw_sql


@pytest.fixture
def chain(alpha, beta, northwind):
    """Five more blocks, applied to every replica."""
    heights = append_blocks(alpha, 5, per_block=2)
    for tenant in (alpha, beta, northwind):
        replica_sync(tenant=tenant)
    assert all(report.ok for report in chain_verify_all())
    return heights


def failures():
    return [(r.tenant, r.first_bad_height, r.reason) for r in chain_verify_all() if not r.ok]


def test_an_intact_chain_verifies_with_every_head_equal(chain):
    reports = chain_verify_all()
    assert {r.tenant for r in reports} >= {"hub", "alpha", "beta", "northwind"}
    heads = {r.head_hash for r in reports if r.tenant in ("hub", "alpha", "beta", "northwind")}
    assert len(heads) == 1
    assert all(
        r.ok and r.height == chain[-1]
        for r in reports
        if r.tenant in ("hub", "alpha", "beta", "northwind")
    )


def test_a_block_changed_on_the_hub_is_found_at_its_height(chain):
    target = chain[2]
    raw_sql(
        "public",
        "UPDATE chain_block SET created_at = created_at + interval '1 second' WHERE height = %s",
        [target],
    )
    [(tenant, height, reason)] = [f for f in failures() if f[0] == "hub"]
    assert (tenant, height, reason) == ("hub", target, "block hash does not match its contents")


def test_a_transaction_changed_on_one_replica_is_found_with_tenant_and_height(chain):
    target = chain[3]
    raw_sql(
        "beta",
        "UPDATE chain_transaction SET payload = jsonb_set(payload, '{last_entry}', "
        "'7') WHERE block_id = (SELECT id FROM chain_block WHERE height = %s)",
        [target],
    )
    assert failures() == [("beta", target, "transaction 0 does not match its hash")]


def test_a_rehashed_forgery_still_fails_the_hub_signature(chain):
    """Recomputing every hash after a change is not enough without the hub's key."""
    from chain.encoding import block_hash, transaction_hash
    from chain.merkle import merkle_root

    target = chain[-1]
    with schema_context("alpha"):
        block = Block.objects.get(height=target)
        items = list(block.transactions.all())
        item = items[0]
        forged_payload = {**item.payload, "last_entry": item.payload["last_entry"] + 1}
        forged_hash = transaction_hash(
            kind=item.kind,
            author=item.author,
            payload=forged_payload,
            timestamp=item.timestamp,
            signature=item.signature,
        )
        root = merkle_root([forged_hash, *[i.hash for i in items[1:]]])
        header = {**block.header_fields(), "merkle_root": root}
        new_hash = block_hash(hub_signature=block.hub_signature, **header)
    import json

    raw_sql(
        "alpha",
        "UPDATE chain_transaction SET payload = %s, hash = %s WHERE id = %s",
        [json.dumps(forged_payload), forged_hash, item.pk],
    )
    raw_sql(
        "alpha",
        "UPDATE chain_block SET merkle_root = %s, hash = %s WHERE id = %s",
        [root, new_hash, block.pk],
    )
    raw_sql("alpha", "UPDATE chain_chainstate SET head_hash = %s", [new_hash])
    assert failures() == [("alpha", target, "transaction 0 has an invalid author signature")]
    report = chain_verify_schema(
        schema_name="alpha",
        hash_only=True,
        hub_hashes={target: chain_verify_schema(schema_name="public").head_hash},
    )
    assert (report.ok, report.first_bad_height) == (False, target)
    assert report.reason == "head differs from the hub's block at the same height"


def test_a_deleted_block_is_found(chain):
    target = chain[1]
    raw_sql(
        "alpha",
        "DELETE FROM chain_transaction WHERE block_id = "
        "(SELECT id FROM chain_block WHERE height = %s)",
        [target],
    )
    raw_sql("alpha", "DELETE FROM chain_block WHERE height = %s", [target])
    assert failures() == [("alpha", target, f"block missing (next stored is {target + 1})")]


def test_reordered_blocks_are_found(chain):
    first, second = chain[1], chain[2]
    raw_sql("northwind", "UPDATE chain_block SET height = 999999 WHERE height = %s", [first])
    raw_sql("northwind", "UPDATE chain_block SET height = %s WHERE height = %s", [first, second])
    raw_sql("northwind", "UPDATE chain_block SET height = %s WHERE height = 999999", [second])
    assert failures() == [
        ("northwind", first, "previous_hash does not match the hash of the block before")
    ]


def test_a_truncated_replica_is_found(chain):
    last = chain[-1]
    raw_sql(
        "beta",
        "DELETE FROM chain_transaction WHERE block_id IN "
        "(SELECT id FROM chain_block WHERE height >= %s)",
        [last - 1],
    )
    raw_sql("beta", "DELETE FROM chain_block WHERE height >= %s", [last - 1])
    assert failures() == [
        ("beta", last - 1, f"chain truncated: it ends at {last - 2}, its head was {last}")
    ]


def test_a_truncated_hub_is_found(chain):
    last = chain[-1]
    raw_sql(
        "public",
        "DELETE FROM chain_outbox WHERE block_id IN (SELECT id FROM chain_block WHERE height = %s)",
        [last],
    )
    raw_sql(
        "public",
        "DELETE FROM chain_transaction WHERE block_id IN "
        "(SELECT id FROM chain_block WHERE height = %s)",
        [last],
    )
    raw_sql("public", "DELETE FROM chain_block WHERE height = %s", [last])
    assert ("hub", last, f"chain truncated: it ends at {last - 1}, its head was {last}") in (
        failures()
    )


def test_verify_chain_command_exits_1_naming_tenant_and_height(chain):
    raw_sql(
        "beta", "UPDATE chain_block SET merkle_root = repeat('0', 64) WHERE height = %s", [chain[0]]
    )
    output = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("verify_chain", stdout=output)
    assert failed.value.returncode == 1
    assert str(failed.value) == (
        f"beta: first bad block at height {chain[0]}: Merkle root does not match the transactions"
    )
    table = output.getvalue().splitlines()
    assert table[0].split() == ["TENANT", "HEIGHT", "HEAD", "HASH", "STATUS"]
    assert any(line.startswith("alpha ") and line.endswith(" ok") for line in table)


def test_verify_chain_command_exits_0_with_a_table(chain):
    output = StringIO()
    call_command("verify_chain", "--tenant", "alpha", stdout=output)
    rows = [line.split()[:2] for line in output.getvalue().splitlines()[1:]]
    assert rows == [["hub", str(chain[-1])], ["alpha", str(chain[-1])]]


def test_repair_replica_heals_a_broken_replica(chain):
    raw_sql(
        "alpha",
        "UPDATE chain_transaction SET author = 'ed25519:' || repeat('0', 32) "
        "WHERE block_id = (SELECT id FROM chain_block WHERE height = %s)",
        [chain[0]],
    )
    assert failures()[0][:2] == ("alpha", chain[0])
    output = StringIO()
    call_command("repair_replica", "alpha", stdout=output)
    assert f"head at {chain[-1]}" in output.getvalue()
    assert failures() == []
    assert counts("alpha")[:2] == counts("public")[:2]


def test_repair_is_refused_while_the_hub_itself_is_broken(chain):
    raw_sql("public", "UPDATE chain_block SET proposer = 'mallory' WHERE height = %s", [chain[0]])
    before = counts("alpha")
    with pytest.raises(RepairRefused):
        replica_repair(
            tenant=__import__("medportal.tenants.models", fromlist=["Tenant"]).Tenant.objects.get(
                slug="alpha"
            )
        )
    with pytest.raises(CommandError) as failed:
        call_command("repair_replica", "alpha", stdout=StringIO())
    assert failed.value.returncode == 1
    assert "the hub's chain fails verification" in str(failed.value)
    assert counts("alpha") == before


def test_a_replica_refuses_a_block_the_hub_serves_altered(alpha):
    [height] = append_blocks(alpha, 1)
    raw_sql(
        "public",
        "UPDATE chain_block SET hub_signature = %s WHERE height = %s",
        ["A" * 86 + "==", height],
    )
    with pytest.raises(ReplicaError) as refused:
        replica_sync(tenant=alpha)
    assert f"refused at height {height}" in str(refused.value)
    with schema_context("alpha"):
        # Everything before the altered block was applied; the altered one was not.
        assert ChainState.objects.get(id=1).height == height - 1
        assert not Block.objects.filter(height=height).exists()
    with pytest.raises(ReplicaError):
        replica_sync(tenant=alpha)
    with schema_context("alpha"):
        assert Block.objects.filter(height__gte=height).count() == 0


def test_a_refused_delivery_shows_in_the_replicas_status(alpha):
    from django_tenants.utils import tenant_context

    from chain.models import Outbox
    from chain.selectors import chain_status
    from chain.tasks import deliver_block_task

    [height] = append_blocks(alpha, 1)
    raw_sql(
        "public", "UPDATE chain_block SET merkle_root = repeat('0', 64) WHERE height = %s", [height]
    )
    with schema_context("public"):
        row = Outbox.objects.get(tenant=alpha, block__height=height)
    with tenant_context(alpha):
        deliver_block_task.apply(args=[row.pk]).get()
    [status] = chain_status(only="alpha")
    assert status.height == height - 1
    assert status.last_verification == (
        f"delivery refused: alpha: block from the hub refused at height {height}: "
        "Merkle root does not match the transactions"
    )


def test_incremental_verification_resumes_and_records(chain):
    reports = chain_verify_all(record=True)
    assert all(r.ok for r in reports)
    more = append_blocks(
        __import__("medportal.tenants.models", fromlist=["Tenant"]).Tenant.objects.get(
            slug="alpha"
        ),
        2,
    )
    report = chain_verify_schema(schema_name="public", incremental=True, record=True)
    assert (report.ok, report.height, report.blocks_checked) == (True, more[-1], 2)
    with schema_context("public"):
        state = ChainState.objects.get(id=1)
    assert (state.last_verified_height, state.last_verification_ok) == (more[-1], True)
