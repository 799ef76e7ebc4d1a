"""The canary test: PHI written through the services appears nowhere in the clear.

A patient whose every identity field, and a record whose every free-text field
(and an attachment's name and bytes), hold a unique canary string are written
and committed; then the whole database (``pg_dump``, every schema), every Redis
key and value, every log line of the write and a read, and every file of the
ciphertext store are searched for the canary in any letter case.

The rows are committed (an uncommitted row is not in pg_dump's snapshot), so the
test removes its tenant rows and blobs afterwards; the ledger's transactions
stay (the chain is append-only; they hold pseudonyms and hashes only).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from datetime import date
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.models import User
from records.models import Patient, Record, RecordIndex, RecordSection
from records.selectors import patient_list_for_user, records_for_staff
from records.services import (
    Upload,
    identity_clean,
    patient_create,
    patient_identity,
    record_create,
    record_store,
)
from records.store import get_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def _forms(canary: str) -> list[bytes]:
    raw = canary.encode()
    forms = {raw, raw.lower(), raw.upper()}
    for value in list(forms):
        for shift in range(3):  # base64 at each alignment
            encoded = base64.b64encode(b"\x00" * shift + value)[4 if shift else 0 :][:-4]
            forms.add(encoded)
    return sorted(forms)


def _assert_absent(where: str, data: bytes, canary: str) -> None:
    for form in _forms(canary):
        assert form not in data, f"the canary ({form!r}) is in {where}"


def _pg_dump() -> str:
    found = shutil.which("pg_dump")
    bundled = (
        Path(settings.BASE_DIR)
        / ".venv/lib/python3.11/site-packages/pgserver/pginstall/bin/pg_dump"
    )
    if found is None and bundled.exists():
        found = str(bundled)
    if found is None:
        pytest.skip("pg_dump is not installed")
    return found


def _dump_database() -> bytes:
    database = connection.settings_dict
    environment = dict(os.environ)
    if database.get("PASSWORD"):
        environment["PGPASSWORD"] = database["PASSWORD"]
    arguments = [_pg_dump(), "--no-owner", "--dbname", database["NAME"]]
    if database.get("HOST"):
        arguments += ["--host", database["HOST"]]
    if database.get("PORT"):
        arguments += ["--port", str(database["PORT"])]
    if database.get("USER"):
        arguments += ["--username", database["USER"]]
    result = subprocess.run(arguments, capture_output=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _redis_contents() -> list[tuple[bytes, bytes]]:
    from medportal.health import redis_client

    client = redis_client()
    client = redis.Redis(connection_pool=client.connection_pool)  # raw bytes
    seen = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        elif kind == "hash":
            parts = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = client.zrange(key, 0, -1)
        elif kind == "stream":
            parts = [repr(entry).encode() for entry in client.xrange(key)]
        else:
            parts = []
        as_bytes = [p if isinstance(p, bytes) else str(p).encode() for p in parts]
        seen.append((key if isinstance(key, bytes) else key.encode(), b"\n".join(as_bytes)))
    return seen


class _Everything(logging.Handler):
    """Every record of every logger, also those that do not propagate to the root."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.lines.append(f"{record.name} {text}")


def _capture_all_logs(handler: _Everything):
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)

    def restore() -> None:
        for logger, level, disabled in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.disabled = disabled

    return restore


def _content(canary: str) -> dict:
    return {
        "encounter": {
            "visit_date": "2024-02-02",
            "department": f"Dept {canary}",
            "chief_complaint": f"Complaint {canary}",
        },
        "diagnoses": [
            {"code": "J45.9", "text": f"Diagnosis {canary}"},
            {"code": "F32.1", "text": f"Sensitive {canary}", "category": "mental_health"},
        ],
        "medications": [
            {
                "drug": f"Drug {canary}",
                "dose": f"Dose {canary}",
                "route": "oral",
                "frequency": f"Freq {canary}",
                "start": "2024-02-02",
            }
        ],
        "allergies": [
            {
                "substance": f"Substance {canary}",
                "reaction": f"Reaction {canary}",
                "severity": "mild",
            }
        ],
        "labs": [
            {
                "test": f"Test {canary}",
                "value": f"Value {canary}",
                "unit": canary,
                "reference_range": f"Range {canary}",
            }
        ],
        "notes": [
            {"category": "clinical_notes", "text": f"Note {canary}"},
            {"category": "sexual_health", "text": f"Restricted note {canary}"},
        ],
    }


def test_the_canary_is_nowhere_in_the_clear(committed, django_db_blocker):
    alpha = committed["alpha"]
    canary = f"CANARY{uuid.uuid4().hex}"
    handler = _Everything()
    patient_id = None
    with django_db_blocker.unblock():
        try:
            with tenant_context(alpha):
                doctor = User.objects.get(username="alpha-doctor")
                restore = _capture_all_logs(handler)
                connection.force_debug_cursor = True  # every SQL statement and parameter logged
                try:
                    patient = patient_create(
                        actor=doctor,
                        identity=identity_clean(
                            given_name=f"Given{canary}",
                            family_name=f"Family{canary}",
                            sex="unknown",
                            birth_date=date(1966, 6, 6),
                            record_number=canary,
                            phone=canary,
                            email=f"{canary}@example.org",
                        ),
                    )
                    patient_id = patient.pk
                    record = record_create(
                        author=doctor,
                        patient=patient,
                        content=_content(canary),
                        attachments=[
                            Upload(
                                filename=f"scan-{canary}.png",
                                data=PNG_MAGIC + f"pixels {canary}".encode(),
                            )
                        ],
                    )
                    # A read, as a doctor would make it: everything decrypts.
                    (view,) = records_for_staff(user=doctor, patient=patient)
                    rows = [r for r in patient_list_for_user(user=doctor) if r.id == patient.id]
                finally:
                    connection.force_debug_cursor = False
                    restore()
                assert not view.errors
                assert canary in view.content["encounter"]["chief_complaint"]
                assert view.attachments[0].filename == f"scan-{canary}.png"
                assert rows[0].identity.record_number == canary
                assert patient_identity(patient).email == f"{canary}@example.org"
                sections = list(record.sections.all())
                assert len(sections) >= 3  # normal, restricted levels and the attachment

            assert any("INSERT" in line for line in handler.lines), "SQL was not logged"
            _assert_absent("the logs", "\n".join(handler.lines).encode(), canary)

            dump = _dump_database()
            assert b"records_recordsection" in dump and str(record.id).encode() in dump
            _assert_absent("pg_dump of the database", dump, canary)

            for key, value in _redis_contents():
                _assert_absent(f"Redis key {key!r}", key + b"\n" + value, canary)

            files = [path for path in get_store().root.rglob("*") if path.is_file()]
            assert any(path.name == sections[0].sha256 for path in files)
            for path in files:
                _assert_absent(f"store file {path}", path.read_bytes(), canary)
        finally:
            if patient_id is not None:
                _remove(alpha, patient_id)


def _remove(tenant, patient_id) -> None:
    """Delete what this test committed in the hospital's schema, and its blobs."""
    with tenant_context(tenant):
        store = record_store()
        records = Record.objects.filter(patient_id=patient_id)
        names = list(
            RecordSection.objects.filter(record__in=records).values_list("sha256", flat=True)
        )
        RecordIndex.objects.filter(record__in=records).delete()
        RecordSection.objects.filter(record__in=records).delete()
        records.delete()
        Patient.objects.filter(pk=patient_id).delete()
        for name in names:
            store.delete(name)
