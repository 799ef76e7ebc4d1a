from __future__ import annotations

import itertools

from django.db import connection
from django_tenants.utils import schema_context

from chain.models import Block, PendingTransaction, Transaction
from chain.services import block_seal, transaction_submit

_counter = itertools.count(1)


def anchor_payload(tenant_slug: str) -> dict:
    """A valid, PHI-free payload a hospital may author (unique each call)."""
    n = next(_counter)
    return {"tenant": tenant_slug, "first_entry": n, "last_entry": n, "root": f"{n:064x}"}


def append_blocks(tenant, count: int, per_block: int = 1) -> list[int]:
    """Append ``count`` blocks of ``per_block`` anchor transactions from ``tenant``."""
    heights = []
    for _ in range(count):
        for _ in range(per_block):
            transaction_submit(tenant=tenant, kind="anchor", payload=anchor_payload(tenant.slug))
        heights += block_seal(force=True)
    return heights


def counts(schema_name: str) -> tuple[int, int, int]:
    with schema_context(schema_name):
        return (
            Block.objects.count(),
            Transaction.objects.count(),
            PendingTransaction.objects.count(),
        )


def raw_sql(schema_name: str, statement: str, params=()) -> None:
    """Change the ledger behind the application's back, as an attacker with psql
    would: the append-only triggers are disabled for the statement."""
    with connection.cursor() as cursor:
        cursor.execute(f'SET search_path TO "{schema_name}"')
        # Foreign-key checks pending from this test's inserts would block ALTER TABLE.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE chain_block DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE chain_transaction DISABLE TRIGGER USER")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE chain_block ENABLE TRIGGER USER")
        cursor.execute("ALTER TABLE chain_transaction ENABLE TRIGGER USER")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    connection.set_schema_to_public()
