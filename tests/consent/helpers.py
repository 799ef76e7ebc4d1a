from __future__ import annotations

import itertools

from django.db import connection
from django_tenants.utils import tenant_context

from consent.models import AccessLogEntry
from consent.services import access_log_append

_counter = itertools.count(1)


def append_entries(tenant, count: int, **overrides) -> list[AccessLogEntry]:
    """``count`` entries at ``tenant`` through the service. Reasons and ids are
    identifiers only, as the read path writes them."""
    entries = []
    with tenant_context(tenant):
        for _ in range(count):
            n = next(_counter)
            fields = {
                "reader_name": "Dr Ada Alpha",
                "reader_role": "doctor",
                "reader_tenant": "beta",
                "reader_tenant_name": "Beta University Hospital",
                "reader_pseudonym": "",
                "patient_pseudonym": f"{n:064x}",
                "record_id": f"rec-{n}",
                "sections": ["summary", "medication"],
                "purpose": "treatment",
                "decision": "allow",
                "reason": f"grant:{n:064x}",
                "is_emergency": False,
                **overrides,
            }
            entries.append(access_log_append(**fields))
    return entries


def raw_sql(schema_name: str, statement: str, params=()) -> None:
    """Change the access log behind the application's back, as an attacker with
    psql would: the append-only triggers are disabled for the statement."""
    with connection.cursor() as cursor:
        cursor.execute(f'SET search_path TO "{schema_name}"')
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE consent_accesslogentry DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE consent_accessloganchor DISABLE TRIGGER USER")
        cursor.execute(statement, params)
        cursor.execute("ALTER TABLE consent_accesslogentry ENABLE TRIGGER USER")
        cursor.execute("ALTER TABLE consent_accessloganchor ENABLE TRIGGER USER")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    connection.set_schema_to_public()
