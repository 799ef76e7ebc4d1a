"""The patient's own FHIR export carries their access log as ``AuditEvent``
resources; a staff export carries none."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from django.http import Http404
from django_tenants.utils import tenant_context
from fhir.resources.R4B.bundle import Bundle

from accounts.models import User
from consent.models import AccessLogEntry
from records.fhir import AUDIT_EVENT_TYPE_SYSTEM, RECORD_SYSTEM
from records.models import Patient
from records.selectors import record_view_for_user, records_for_staff
from tests.conftest import login_client

pytestmark = pytest.mark.django_db


def _export(tenant, username: str, patient: Patient) -> dict:
    response = login_client(tenant, username).get(f"/api/v1/patients/{patient.id}/fhir")
    assert response.status_code == 200, response.content
    data = json.loads(response.content)
    Bundle.model_validate(data)
    return data


def _audit_events(data: dict) -> list[dict]:
    return [
        entry["resource"]
        for entry in data["entry"]
        if entry["resource"]["resourceType"] == "AuditEvent"
    ]


def _about_record(events: list[dict], record_id: str) -> list[dict]:
    return [
        event
        for event in events
        if any(
            entity["what"].get("identifier") == {"system": RECORD_SYSTEM, "value": record_id}
            for entity in event["entity"]
        )
    ]


def test_li_weis_export_has_her_access_log_with_a_denial_and_a_doctors_read(alpha):
    with tenant_context(alpha):
        li = Patient.objects.get(user__username="alpha-patient")
        record = li.records.first()
        maria = User.objects.get(username="alpha-patient-2")
        doctor = User.objects.get(username="alpha-doctor")
        with pytest.raises(Http404):
            record_view_for_user(user=maria, record_id=record.id)
        records_for_staff(user=doctor, patient=li)
        denied_entry = AccessLogEntry.objects.filter(
            record_id=str(record.id), decision="deny"
        ).latest("id")
        doctor_entry = AccessLogEntry.objects.filter(
            record_id=str(record.id), reader_role="doctor", decision="allow"
        ).latest("id")

    data = _export(alpha, "alpha-patient", li)
    events = _audit_events(data)
    assert events
    (patient_entry,) = [e for e in data["entry"] if e["resource"]["resourceType"] == "Patient"]
    patient_reference = patient_entry["fullUrl"]
    for event in events:
        assert event["type"] == {
            "system": AUDIT_EVENT_TYPE_SYSTEM,
            "code": "rest",
            "display": "RESTful Operation",
        }
        assert event["action"] == "R"
        assert event["outcome"] in ("0", "4")
        assert event["agent"][0]["requestor"] is True
        assert event["entity"][-1]["what"]["reference"] == patient_reference
    # Newest first.
    recorded = [event["recorded"] for event in events]
    assert recorded == sorted(recorded, reverse=True)

    on_record = _about_record(events, str(record.id))
    (denied,) = [event for event in on_record if event["outcome"] == "4"]
    assert denied["outcomeDesc"] == "refused: not the reader's own record"
    assert denied["agent"][0]["who"] == {"display": "Another patient"}
    assert denied["agent"][0]["role"] == [{"text": "Patient"}]
    assert denied["purposeOfEvent"][0]["coding"][0]["code"] == "PATRQT"
    assert denied["source"]["observer"] == {"type": "Organization", "display": alpha.name}
    assert datetime.fromisoformat(denied["recorded"]) == denied_entry.created_at

    by_doctor = [
        event
        for event in on_record
        if event["outcome"] == "0" and event["agent"][0]["who"] == {"display": "Ana Alvarez"}
    ]
    assert by_doctor
    allowed = by_doctor[0]
    assert allowed["agent"][0]["role"] == [{"text": "Doctor"}]
    assert allowed["purposeOfEvent"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "TREAT",
        "display": "treatment",
    }
    assert allowed["outcomeDesc"] == "Allowed: the doctor who wrote it"
    assert allowed["agent"][1]["who"] == {
        "type": "Organization",
        "display": doctor_entry.reader_tenant_name,
    }
    assert allowed["entity"][0]["description"].startswith("Sections: ")
    # Her own reads (this export, through the exchange) are there too, as hers.
    assert any(
        event["agent"][0]["who"] == {"display": "You"}
        and event["purposeOfEvent"][0]["coding"][0]["code"] == "PATRQT"
        for event in events
    )


def test_a_staff_export_carries_no_audit_events(alpha):
    with tenant_context(alpha):
        li = Patient.objects.get(user__username="alpha-patient")
    data = _export(alpha, "alpha-doctor", li)
    assert _audit_events(data) == []
    assert not [e for e in data["entry"] if e["resource"]["resourceType"] == "Consent"]
