"""A patient's records as a FHIR R4 (R4B models) ``collection`` Bundle.

One Patient entry, then per record:

* Encounter (visit date, department, chief complaint, the origin hospital);
* Condition per diagnosis (ICD-10 coding ``http://hl7.org/fhir/sid/icd-10``);
* MedicationStatement per medication (active, or completed once stopped);
* AllergyIntolerance per allergy (reaction, severity and criticality);
* Observation per vital sign (LOINC code, UCUM quantity, ``vital-signs``)
  and per lab result (``laboratory``; a quantity when the value is a number);
* DocumentReference per note (the text, base64, ``text/plain``) and per
  attachment (its content type, file name and size; the bytes stay in the
  portal, behind its own access checks);
* Provenance: the record's resources as targets, ``recorded`` = when it was
  written, the author (display) acting for the origin hospital (Organization
  display), and the chain transaction's hash as the entity's identifier
  (``urn:medportal:chain:tx``). An amendment's Provenance also names the
  record it corrects (``revision`` entity, identifier ``urn:medportal:record``).

The patient's own export also carries (passed in by the caller, never for staff):

* Consent per grant (its latest state on the chain);
* AuditEvent per entry of the patient's access log, newest first, capped at
  the latest 500 (consent.selectors_export.EXPORT_LOG_LIMIT): a REST ``read``
  (action ``R``) with outcome ``0`` (allowed) or ``4`` (refused, with the reason
  in plain words), the reader (name and role) as the requesting agent, the
  reader's hospital as a second agent, the hospital that holds the record and
  the entry as the source observer, the purpose as a v3 ActReason code, and the
  record (identifier ``urn:medportal:record``) and the patient as entities.

Every record resource carries the MedPortal category of its item as a ``meta.tag``
(``urn:medportal:category``), so a receiving system can see that, say, a
diagnosis was filed under mental health.

Erased records and records with an integrity error (a ciphertext that does
not match the chain, a section that does not decrypt) are left out entirely:
the export carries only data that was verified against the chain, and an
erased record has nothing left to carry. The portal's pages show both kinds.

Every ``fullUrl`` is a ``urn:uuid``; ids are UUIDv5 of the record id and the
item's position, so exporting the same records twice gives the same ids.
The dict is validated by building the R4B ``Bundle`` model before it is returned.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from django.db import connection
from django.utils import timezone
from fhir.resources.R4B.bundle import Bundle

from records.categories import Category
from records.content import UNIT_LABELS, VITAL_SIGNS, item_category
from records.models import Patient
from records.selectors import RecordView
from records.services import PatientIdentity

ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
PROVENANCE_AGENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
CATEGORY_TAG_SYSTEM = "urn:medportal:category"
CHAIN_TX_SYSTEM = "urn:medportal:chain:tx"
RECORD_SYSTEM = "urn:medportal:record"

# Fixed namespace for the UUIDv5 ids of exported resources.
_NAMESPACE = uuid.UUID("8a3f6a52-4c1e-5d57-9b0e-6f0d2b7c1e90")


def mrn_system(slug: str) -> str:
    """The identifier system of one hospital's record numbers."""
    return f"urn:medportal:{slug}:mrn"


def _uid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(part) for part in parts)))


def _ref(resource_id: str, display: str = "") -> dict:
    reference = {"reference": f"urn:uuid:{resource_id}"}
    if display:
        reference["display"] = display
    return reference


def _instant(moment: datetime) -> str:
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment.isoformat()


def _tag(category: str) -> dict:
    return {
        "tag": [
            {
                "system": CATEGORY_TAG_SYSTEM,
                "code": str(category),
                "display": str(Category(category).label),
            }
        ]
    }


def _decimal(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _patient_resource(
    patient_id: str, identity: PatientIdentity | None, patient: Patient, slug: str
) -> dict:
    resource: dict = {"resourceType": "Patient", "id": patient_id, "active": True}
    if identity is None:
        return resource
    resource["identifier"] = [
        {
            "use": "usual",
            "type": {
                "coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "MR"}],
                "text": "Medical record number",
            },
            "system": mrn_system(slug),
            "value": identity.record_number,
        }
    ]
    name: dict = {"use": "official", "text": identity.full_name}
    if identity.family_name:
        name["family"] = identity.family_name
    if identity.given_name:
        name["given"] = [identity.given_name]
    resource["name"] = [name]
    resource["gender"] = identity.sex
    resource["birthDate"] = identity.birth_date.isoformat()
    telecom = []
    if identity.phone:
        telecom.append({"system": "phone", "value": identity.phone})
    if identity.email:
        telecom.append({"system": "email", "value": identity.email})
    if telecom:
        resource["telecom"] = telecom
    return resource


class _RecordResources:
    """The resources of one record, with references to the patient and encounter."""

    def __init__(self, view: RecordView, patient_ref: dict) -> None:
        self.view = view
        self.patient_ref = patient_ref
        self.entries: list[tuple[str, dict]] = []
        self.recorded = _instant(view.created_at)
        self.encounter_id = _uid(view.id, "encounter")
        self.visit_date = ""

    def add(self, resource_id: str, resource: dict) -> None:
        resource["id"] = resource_id
        self.entries.append((resource_id, resource))

    def build(self) -> list[tuple[str, dict]]:
        content = self.view.content or {}
        self.encounter(content.get("encounter") or {})
        for position, item in enumerate(content.get("diagnoses", [])):
            self.condition(position, item)
        for position, item in enumerate(content.get("medications", [])):
            self.medication(position, item)
        for position, item in enumerate(content.get("allergies", [])):
            self.allergy(position, item)
        for position, item in enumerate(content.get("vitals", [])):
            self.vital(position, item)
        for position, item in enumerate(content.get("labs", [])):
            self.lab(position, item)
        for position, item in enumerate(content.get("notes", [])):
            self.note(position, item)
        for attachment in self.view.attachments:
            self.attachment(attachment)
        self.provenance()
        return self.entries

    def encounter_ref(self) -> dict:
        return _ref(self.encounter_id)

    def encounter(self, encounter: dict) -> None:
        self.visit_date = encounter.get("visit_date") or ""
        resource: dict = {
            "resourceType": "Encounter",
            "meta": _tag(Category.ENCOUNTERS),
            "identifier": [{"system": RECORD_SYSTEM, "value": self.view.id}],
            "status": "finished",
            "class": {"system": ACT_CODE_SYSTEM, "code": "AMB", "display": "ambulatory"},
            "subject": self.patient_ref,
            "serviceProvider": {"type": "Organization", "display": self.view.origin_name},
            "participant": [{"individual": {"display": self.view.author_name}}],
        }
        if self.visit_date:
            resource["period"] = {"start": self.visit_date}
        if encounter.get("department"):
            resource["serviceType"] = {"text": encounter["department"]}
        if encounter.get("chief_complaint"):
            resource["reasonCode"] = [{"text": encounter["chief_complaint"]}]
        self.add(self.encounter_id, resource)

    def condition(self, position: int, item: dict) -> None:
        code = item.get("code") or ""
        coding = {"system": ICD10_SYSTEM, "code": code}
        if item.get("title"):
            coding["display"] = item["title"]
        resource: dict = {
            "resourceType": "Condition",
            "meta": _tag(item_category("diagnoses", item)),
            "category": [
                {
                    "coding": [
                        {
                            "system": CONDITION_CATEGORY_SYSTEM,
                            "code": "encounter-diagnosis",
                            "display": "Encounter Diagnosis",
                        }
                    ]
                }
            ],
            "code": {"coding": [coding], "text": item.get("title") or code},
            "subject": self.patient_ref,
            "encounter": self.encounter_ref(),
            "recordedDate": self.recorded,
            "recorder": {"display": self.view.author_name},
        }
        if self.visit_date:
            resource["onsetDateTime"] = self.visit_date
        if item.get("text"):
            resource["note"] = [{"text": item["text"]}]
        self.add(_uid(self.view.id, "diagnoses", position), resource)

    def medication(self, position: int, item: dict) -> None:
        stop = item.get("stop")
        stopped = bool(stop) and date.fromisoformat(stop) <= timezone.localdate()
        dosage: dict = {
            "text": " ".join(
                part for part in (item.get("dose"), item.get("frequency")) if part
            ).strip()
            or item.get("drug", "")
        }
        if item.get("route"):
            dosage["route"] = {"text": item["route"]}
        if item.get("frequency"):
            dosage["patientInstruction"] = item["frequency"]
        period: dict = {}
        if item.get("start"):
            period["start"] = item["start"]
        if stop:
            period["end"] = stop
        resource: dict = {
            "resourceType": "MedicationStatement",
            "meta": _tag(item_category("medications", item)),
            "status": "completed" if stopped else "active",
            "medicationCodeableConcept": {"text": item.get("drug", "")},
            "subject": self.patient_ref,
            "context": self.encounter_ref(),
            "dateAsserted": self.recorded,
            "informationSource": {"display": self.view.author_name},
            "dosage": [dosage],
        }
        if period:
            resource["effectivePeriod"] = period
        self.add(_uid(self.view.id, "medications", position), resource)

    def allergy(self, position: int, item: dict) -> None:
        severity = item.get("severity")
        resource: dict = {
            "resourceType": "AllergyIntolerance",
            "meta": _tag(item_category("allergies", item)),
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL_SYSTEM, "code": "active"}]},
            "code": {"text": item.get("substance", "")},
            "patient": self.patient_ref,
            "encounter": self.encounter_ref(),
            "recordedDate": self.recorded,
            "recorder": {"display": self.view.author_name},
        }
        if severity:
            resource["criticality"] = "high" if severity == "severe" else "low"
        if item.get("reaction"):
            reaction: dict = {"manifestation": [{"text": item["reaction"]}]}
            if severity:
                reaction["severity"] = severity
            resource["reaction"] = [reaction]
        self.add(_uid(self.view.id, "allergies", position), resource)

    def _observation(self, category_code: str, category_display: str, item_cat: str) -> dict:
        resource: dict = {
            "resourceType": "Observation",
            "meta": _tag(item_cat),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": OBSERVATION_CATEGORY_SYSTEM,
                            "code": category_code,
                            "display": category_display,
                        }
                    ]
                }
            ],
            "subject": self.patient_ref,
            "encounter": self.encounter_ref(),
            "issued": self.recorded,
            "performer": [{"display": self.view.author_name}],
        }
        if self.visit_date:
            resource["effectiveDateTime"] = self.visit_date
        return resource

    def vital(self, position: int, item: dict) -> None:
        sign = VITAL_SIGNS.get(item.get("kind", ""))
        if sign is None:
            return
        resource = self._observation("vital-signs", "Vital Signs", Category.VITALS)
        resource["code"] = {
            "coding": [{"system": LOINC_SYSTEM, "code": sign.loinc, "display": sign.label}],
            "text": sign.label,
        }
        unit = item.get("unit") or next(iter(sign.ranges))
        value = _decimal(item.get("value"))
        if value is not None:
            resource["valueQuantity"] = {
                "value": value,
                "unit": UNIT_LABELS.get(unit, unit),
                "system": UCUM_SYSTEM,
                "code": unit,
            }
        else:
            resource["valueString"] = str(item.get("value"))
        self.add(_uid(self.view.id, "vitals", position), resource)

    def lab(self, position: int, item: dict) -> None:
        resource = self._observation("laboratory", "Laboratory", item_category("labs", item))
        resource["code"] = {"text": item.get("test", "")}
        value = _decimal(item.get("value"))
        unit = item.get("unit") or ""
        if value is not None:
            quantity: dict = {"value": value}
            if unit:
                quantity["unit"] = unit  # free text: no UCUM system claimed
            resource["valueQuantity"] = quantity
        else:
            resource["valueString"] = f"{item.get('value', '')} {unit}".strip()
        if item.get("reference_range"):
            resource["referenceRange"] = [{"text": item["reference_range"]}]
        self.add(_uid(self.view.id, "labs", position), resource)

    def _document(self, category: str) -> dict:
        resource: dict = {
            "resourceType": "DocumentReference",
            "meta": _tag(category),
            "status": "current",
            "category": [{"text": str(Category(category).label)}],
            "subject": self.patient_ref,
            "date": self.recorded,
            "author": [{"display": self.view.author_name}],
            "custodian": {"type": "Organization", "display": self.view.origin_name},
            "context": {"encounter": [self.encounter_ref()]},
        }
        if self.visit_date:
            resource["context"]["period"] = {"start": self.visit_date}
        return resource

    def note(self, position: int, item: dict) -> None:
        category = item_category("notes", item)
        text = item.get("text", "")
        resource = self._document(category)
        resource["type"] = {"text": "Note"}
        resource["description"] = f"{Category(category).label} note"
        resource["content"] = [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode("ascii"),
                    "size": len(text.encode()),
                }
            }
        ]
        self.add(_uid(self.view.id, "notes", position), resource)

    def attachment(self, attachment) -> None:
        category = attachment.category or Category.IMAGING
        resource = self._document(category)
        resource["type"] = {"text": "Attachment"}
        resource["description"] = attachment.filename
        resource["content"] = [
            {
                "attachment": {
                    "contentType": attachment.content_type,
                    "title": attachment.filename,
                    "size": attachment.size,
                }
            }
        ]
        self.add(_uid(self.view.id, attachment.name), resource)

    def provenance(self) -> None:
        view = self.view
        entity = [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": CHAIN_TX_SYSTEM, "value": view.tx_hash},
                    "display": f"Chain transaction {view.tx_hash}"
                    + (f" (block {view.block_height})" if view.block_height is not None else ""),
                },
            }
        ]
        if view.amends_id:
            entity.append(
                {
                    "role": "revision",
                    "what": {
                        "identifier": {"system": RECORD_SYSTEM, "value": view.amends_id},
                        "display": "The record this one amends",
                    },
                }
            )
        resource = {
            "resourceType": "Provenance",
            "target": [_ref(resource_id) for resource_id, _ in self.entries],
            "recorded": self.recorded,
            "activity": {"text": "amend" if view.amends_id else "create"},
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": PROVENANCE_AGENT_SYSTEM,
                                "code": "author",
                                "display": "Author",
                            }
                        ]
                    },
                    "who": {"display": view.author_name},
                    "onBehalfOf": {"type": "Organization", "display": view.origin_name},
                }
            ],
            "entity": entity,
        }
        self.add(_uid(view.id, "provenance"), resource)


_PURPOSE_CODES = {
    "treatment": ("TREAT", "treatment"),
    "second_opinion": ("TREAT", "treatment (second opinion)"),
    "research": ("HRESCH", "healthcare research"),
    "emergency": ("ETREAT", "emergency treatment"),
}


def _consent_resource(grant, patient_ref: dict, grantee_name: str) -> tuple[str, dict]:
    """A patient's grant (its latest state on the chain) as a FHIR ``Consent``."""
    now = timezone.now()
    resource_id = _uid("consent", grant.tx_hash)
    code, display = _PURPOSE_CODES.get(grant.purpose, ("TREAT", "treatment"))
    provision: dict = {
        "type": "permit",
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "reference": {"display": grantee_name},
            }
        ],
        "purpose": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": code,
                "display": display,
            }
        ],
    }
    if grant.categories:
        provision["class"] = [
            {"system": CATEGORY_TAG_SYSTEM, "code": category}
            for category in sorted(grant.categories)
        ]
    if grant.expires_at:
        provision["period"] = {"end": _instant(grant.expires_at)}
    resource = {
        "resourceType": "Consent",
        "id": resource_id,
        "status": "active" if grant.is_active(now) else "inactive",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}
                ]
            }
        ],
        "patient": patient_ref,
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": provision,
        # The signed access transaction on the chain is the consent's source.
        "sourceReference": {
            "identifier": {"system": CHAIN_TX_SYSTEM, "value": grant.tx_hash},
        },
    }
    return resource_id, resource


AUDIT_EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
AUDIT_ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"

# Access-log purposes (consent.models.Purpose) as v3 ActReason codes.
_AUDIT_PURPOSE_CODES = {
    **_PURPOSE_CODES,
    "patient_access": ("PATRQT", "patient requested"),
    "administration": ("HOPERAT", "healthcare operations"),
}
# AuditEvent.outcome: 0 success, 4 minor failure (a refused read changes nothing).
_AUDIT_OUTCOMES = {"allow": "0", "deny": "4"}


def _audit_event_resource(row, patient_ref: dict) -> tuple[str, dict]:
    """One access-log entry (``consent.selectors.LogRow``) as a FHIR ``AuditEvent``."""
    resource_id = _uid("audit", row.hospital, row.entry_id)
    purpose = "emergency" if row.is_emergency else row.purpose
    code, display = _AUDIT_PURPOSE_CODES.get(purpose, ("TREAT", "treatment"))
    is_allowed = row.decision == "allow"
    entity: list[dict] = []
    if row.record_id:
        record_entity: dict = {
            "what": {
                "identifier": {"system": RECORD_SYSTEM, "value": row.record_id},
                "display": f"Record at {row.hospital_name}",
            },
            "type": {"system": AUDIT_ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE_SYSTEM, "code": "4", "display": "Domain Resource"},
        }
        if row.sections_text:
            record_entity["description"] = f"Sections: {row.sections_text}"
        entity.append(record_entity)
    entity.append(
        {
            "what": patient_ref,
            "type": {"system": AUDIT_ENTITY_TYPE_SYSTEM, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE_SYSTEM, "code": "1", "display": "Patient"},
        }
    )
    purpose_of_use = {
        "coding": [{"system": ACT_REASON_SYSTEM, "code": code, "display": display}],
        "text": row.purpose_label,
    }
    agents: list[dict] = [
        {
            "role": [{"text": row.reader_role_label}],
            "who": {"display": row.reader_name},
            "requestor": True,
            "purposeOfUse": [purpose_of_use],
        }
    ]
    if row.reader_hospital_name:
        agents.append(
            {
                "role": [{"text": "The reader's hospital"}],
                "who": {"type": "Organization", "display": row.reader_hospital_name},
                "requestor": False,
            }
        )
    resource: dict = {
        "resourceType": "AuditEvent",
        "id": resource_id,
        "type": {
            "system": AUDIT_EVENT_TYPE_SYSTEM,
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": RESTFUL_INTERACTION_SYSTEM, "code": "read", "display": "read"}],
        "action": "R",
        "recorded": _instant(row.created_at),
        "outcome": _AUDIT_OUTCOMES.get(row.decision, "4"),
        "outcomeDesc": ("Allowed: " if is_allowed else "") + row.reason_text,
        "purposeOfEvent": [purpose_of_use],
        "agent": agents,
        # The hospital that holds the record observed the read and keeps the entry.
        "source": {
            "site": row.hospital_name,
            "observer": {"type": "Organization", "display": row.hospital_name},
            "type": [
                {
                    "system": SECURITY_SOURCE_TYPE_SYSTEM,
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entity,
    }
    return resource_id, resource


def _exportable(views: Iterable[RecordView]) -> list[RecordView]:
    return [
        view
        for view in views
        if not view.is_erased and not view.has_integrity_error and view.content is not None
    ]


def patient_bundle(
    *,
    identity: PatientIdentity | None,
    patient: Patient,
    views: list[RecordView],
    hospital_slug: str | None = None,
    grants: Iterable = (),
    grantee_names: dict[tuple[str, str], str] | None = None,
    access_log: Iterable = (),
) -> dict:
    """The FHIR R4 Bundle (JSON-ready dict) of ``patient`` and the records in ``views``.

    ``identity`` is the patient's decrypted identity at this hospital (None if
    it does not decrypt: the Patient entry then carries no demographics);
    ``hospital_slug`` names the record-number system (default: this hospital).
    ``grants`` (``consent.policy.Grant``) and ``access_log``
    (``consent.selectors.LogRow``, at most the latest 500) are for the patient's
    own export only: the caller passes them when the patient themself asks.
    """
    slug = hospital_slug or getattr(connection, "tenant", None).slug
    patient_id = str(patient.id)
    patient_ref = _ref(patient_id, identity.full_name if identity else "")
    entries: list[tuple[str, dict]] = [
        (patient_id, _patient_resource(patient_id, identity, patient, slug))
    ]
    for view in _exportable(views):
        entries.extend(_RecordResources(view, patient_ref).build())
    names = grantee_names or {}
    for grant in grants:
        name = names.get((grant.grantee_type, grant.grantee_id), grant.grantee_id)
        entries.append(_consent_resource(grant, patient_ref, name))
    for row in access_log:
        entries.append(_audit_event_resource(row, patient_ref))
    data = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": _instant(timezone.now())},
        "type": "collection",
        "timestamp": _instant(timezone.now()),
        "entry": [
            {"fullUrl": f"urn:uuid:{resource_id}", "resource": resource}
            for resource_id, resource in entries
        ],
    }
    bundle = Bundle.model_validate(data)
    return bundle.model_dump(mode="json", exclude_none=True)
