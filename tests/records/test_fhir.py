"""The FHIR R4 export of a patient: valid R4B, the right records for the reader."""

from __future__ import annotations

import base64
import json

import pytest
from django_tenants.utils import tenant_context
from fhir.resources.R4B.bundle import Bundle

from records.fhir import ICD10_SYSTEM, LOINC_SYSTEM, UCUM_SYSTEM, mrn_system
from records.models import Patient
from tests.conftest import login_client

pytestmark = pytest.mark.django_db

RESOURCE_TYPES = {
    "Patient",
    "Encounter",
    "Condition",
    "MedicationStatement",
    "AllergyIntolerance",
    "Observation",
    "DocumentReference",
    "Provenance",
}


def _patient(tenant, username) -> Patient:
    with tenant_context(tenant):
        return Patient.objects.get(user__username=username)


def _fetch(tenant, username, patient: Patient, **params) -> tuple[Bundle, dict, object]:
    response = login_client(tenant, username).get(f"/api/v1/patients/{patient.id}/fhir", params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    data = json.loads(response.content)
    return Bundle.model_validate(data), data, response


def _resources(data: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == kind]


def _codes(resources: list[dict], system: str) -> set[str]:
    return {
        coding["code"]
        for resource in resources
        for coding in resource.get("code", {}).get("coding", [])
        if coding.get("system") == system
    }


def test_li_weis_own_bundle_at_alpha_has_both_hospitals(alpha):
    li = _patient(alpha, "alpha-patient")
    bundle, data, _ = _fetch(alpha, "alpha-patient", li)
    assert bundle.type in ("collection", "document")
    # Her own export also carries her consents (the demo grant to beta) and her access log.
    assert {entry.resource.get_resource_type() for entry in bundle.entry} == RESOURCE_TYPES | {
        "Consent",
        "AuditEvent",
    }
    assert all(entry.fullUrl.startswith("urn:uuid:") for entry in bundle.entry)

    (patient,) = _resources(data, "Patient")
    assert patient["name"][0]["family"] == "Wei"
    assert patient["name"][0]["given"] == ["Li"]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1984-03-14")
    assert patient["identifier"][0]["system"] == mrn_system("alpha")
    assert patient["identifier"][0]["value"] == "A-100234"
    assert {"phone", "email"} <= {t["system"] for t in patient["telecom"]}

    conditions = _resources(data, "Condition")
    assert {"I10", "R73.0", "J45.9"} <= _codes(conditions, ICD10_SYSTEM)
    hypertension = next(c for c in conditions if c["code"]["coding"][0]["code"] == "I10")
    assert hypertension["code"]["coding"][0]["display"]
    assert hypertension["note"][0]["text"] == "Blood pressure high on three readings"

    observations = _resources(data, "Observation")
    assert {"8480-6", "8462-4", "8867-4", "59408-5", "8310-5"} <= _codes(observations, LOINC_SYSTEM)
    systolic = next(
        o for o in observations if o["code"].get("coding", [{}])[0].get("code") == "8480-6"
    )
    assert systolic["valueQuantity"]["system"] == UCUM_SYSTEM
    assert systolic["valueQuantity"]["code"] == "mm[Hg]"
    assert systolic["category"][0]["coding"][0]["code"] == "vital-signs"
    lab = next(o for o in observations if o["code"].get("text") == "HbA1c")
    assert lab["category"][0]["coding"][0]["code"] == "laboratory"
    assert float(lab["valueQuantity"]["value"]) == 44
    assert lab["referenceRange"][0]["text"] == "20-41"

    medications = _resources(data, "MedicationStatement")
    assert {m["medicationCodeableConcept"]["text"] for m in medications} == {
        "Amlodipine",
        "Salbutamol",
    }
    assert all(m["status"] == "active" for m in medications)
    salbutamol = next(
        m for m in medications if m["medicationCodeableConcept"]["text"] == "Salbutamol"
    )
    assert salbutamol["dosage"][0]["route"]["text"] == "inhaled"

    (allergy,) = _resources(data, "AllergyIntolerance")
    assert allergy["code"]["text"] == "Penicillin"
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "Hives"
    assert allergy["reaction"][0]["severity"] == "moderate"

    notes = [
        base64.b64decode(d["content"][0]["attachment"]["data"]).decode()
        for d in _resources(data, "DocumentReference")
    ]
    assert "Lifestyle advice given. Review in six weeks." in notes

    encounters = _resources(data, "Encounter")
    assert {e["serviceProvider"]["display"] for e in encounters} == {
        alpha.name,
        _beta_name(),
    }
    assert "Wheeze at night" in {e["reasonCode"][0]["text"] for e in encounters}


def _beta_name() -> str:
    from django_tenants.utils import get_public_schema_name, schema_context

    from medportal.tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return Tenant.objects.get(slug="beta").name


def test_references_resolve_and_provenance_carries_the_chain(alpha):
    li = _patient(alpha, "alpha-patient")
    _, data, _ = _fetch(alpha, "alpha-patient", li)
    full_urls = {entry["fullUrl"] for entry in data["entry"]}
    patient_url = f"urn:uuid:{li.id}"
    assert patient_url in full_urls
    encounters = _resources(data, "Encounter")
    for condition in _resources(data, "Condition"):
        assert condition["subject"]["reference"] == patient_url
        assert condition["encounter"]["reference"] in full_urls
    provenances = _resources(data, "Provenance")
    assert len(provenances) == len(encounters) == 3
    for provenance in provenances:
        assert {target["reference"] for target in provenance["target"]} <= full_urls
        assert provenance["recorded"]
        assert provenance["agent"][0]["who"]["display"]
        assert provenance["agent"][0]["onBehalfOf"]["display"]
        what = provenance["entity"][0]["what"]["identifier"]
        assert what["system"] == "urn:medportal:chain:tx"
        assert len(what["value"]) == 64


def test_staff_bundle_holds_what_this_hospital_may_read(alpha, beta):
    li = _patient(alpha, "alpha-patient")
    _, data, _ = _fetch(alpha, "alpha-doctor", li)
    assert {e["serviceProvider"]["display"] for e in _resources(data, "Encounter")} == {alpha.name}
    codes = _codes(_resources(data, "Condition"), ICD10_SYSTEM)
    assert codes == {"I10", "R73.0"}
    assert len(_resources(data, "Provenance")) == 2

    beta_li = _patient(beta, "beta-patient")
    _, beta_data, _ = _fetch(beta, "beta-doctor", beta_li)
    # Beta's own entry, and what Li Wei shared from alpha (the demo grant: normal).
    assert _codes(_resources(beta_data, "Condition"), ICD10_SYSTEM) == {"J45.9", "I10", "R73.0"}
    (patient,) = _resources(beta_data, "Patient")
    assert patient["identifier"][0] == {
        **patient["identifier"][0],
        "system": mrn_system("beta"),
        "value": "B-55012",
    }


def test_download_sends_an_attachment(alpha):
    li = _patient(alpha, "alpha-patient")
    _, _, response = _fetch(alpha, "alpha-patient", li, download="1")
    assert response["Content-Disposition"].startswith("attachment;")
    assert f"patient-{li.id}" in response["Content-Disposition"]
    _, _, inline = _fetch(alpha, "alpha-patient", li)
    assert not inline.has_header("Content-Disposition")


def test_an_amended_record_is_exported_with_its_revision(alpha):
    maria = _patient(alpha, "alpha-patient-2")
    client = login_client(alpha, "alpha-doctor")
    with tenant_context(alpha):
        original = maria.records.get()
    corrected = {
        "encounter": {
            "visit_date": "2024-01-10",
            "department": "Diabetes clinic",
            "chief_complaint": "Review",
        },
        "diagnoses": [{"code": "E11.8"}],
    }
    amended = client.post(
        f"/api/v1/records/{original.id}/amend",
        {"content": corrected},
        content_type="application/json",
    )
    assert amended.status_code == 201
    _, data, _ = _fetch(alpha, "alpha-patient-2", maria)
    revisions = [
        entity["what"]["identifier"]["value"]
        for provenance in _resources(data, "Provenance")
        for entity in provenance["entity"]
        if entity["role"] == "revision"
    ]
    assert revisions == [str(original.id)]
    assert {"E11.9", "E11.8"} <= _codes(_resources(data, "Condition"), ICD10_SYSTEM)


def test_the_patients_own_export_carries_her_consent(alpha):
    from fhir.resources.R4B.bundle import Bundle

    from tests.conftest import login_client

    with tenant_context(alpha):
        li = Patient.objects.get(user__username="alpha-patient")
    response = login_client(alpha, "alpha-patient").get(f"/api/v1/patients/{li.id}/fhir")
    bundle = Bundle.model_validate(response.json())
    consents = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Consent"]
    beta = [
        c for c in consents if c.provision.actor[0].reference.display == "Beta University Hospital"
    ]
    assert len(beta) == 1 and beta[0].status == "active"
    assert {c.code for c in beta[0].provision.class_fhir} >= {"diagnoses", "medications"}
