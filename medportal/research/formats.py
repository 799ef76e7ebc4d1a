"""The files of a research release: the data set as CSV or FHIR R4 NDJSON, and
its data dictionary.

A release row is a flat dict with the keys of :data:`COLUMNS`, already
de-identified (:mod:`medportal.research.deid`); this module only writes it out,
and adds nothing that identifies a person: a FHIR ``Patient`` carries the
pseudonym, a gender and the age band, and no name, birth date, telecom or
identifier.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

COLUMNS: tuple[str, ...] = (
    "pseudonym",
    "age_band",
    "sex",
    "hospital",
    "entry",
    "date",
    "category",
    "item",
    "code_system",
    "code",
    "display",
    "value",
    "unit",
)

SEXES: tuple[str, ...] = ("female", "male", "other", "unknown")
CATEGORIES: tuple[str, ...] = (
    "diagnoses",
    "medications",
    "allergies",
    "vitals",
    "labs",
    "encounters",
    # Diagnoses filed under a very restricted category keep it.
    "mental_health",
    "sexual_health",
    "genetics",
    "substance_use",
)
ITEMS: tuple[str, ...] = ("diagnosis", "medication", "allergy", "vital", "lab", "encounter")
CODE_SYSTEMS: tuple[str, ...] = ("ICD-10", "LOINC", "")

# (column, description, allowed values or format), in the order of COLUMNS.
DATA_DICTIONARY: tuple[tuple[str, str, str], ...] = (
    (
        "pseudonym",
        "The person. Valid in this release only: another request gets other pseudonyms.",
        "P followed by 20 lowercase hexadecimal digits",
    ),
    (
        "age_band",
        "Age in completed years, in five-year bands; everyone aged 90 or over is in one band.",
        "0-4, 5-9, ..., 85-89, 90+",
    ),
    ("sex", "Sex as recorded by the hospital.", ", ".join(SEXES)),
    ("hospital", "The hospital that wrote the record.", "hospital slug"),
    (
        "entry",
        "The record the row comes from; rows of one visit share it. Valid in this release only.",
        "text",
    ),
    (
        "date",
        "Date of the event, shifted by a secret number of days that is the same for all of "
        "one person's dates in this release, so intervals between them are exact.",
        "YYYY-MM-DD, or empty",
    ),
    ("category", "Section of the record the item comes from.", ", ".join(CATEGORIES)),
    ("item", "Kind of item.", ", ".join(ITEMS)),
    ("code_system", "Code system of code.", "ICD-10, LOINC, or empty"),
    ("code", "The item's code in code_system.", "code, or empty when not coded"),
    (
        "display",
        "Text of the code, or the name of the drug, lab test, allergy substance or vital "
        "sign. Left empty when the recorded text could identify someone.",
        "text, at most 80 characters, or empty",
    ),
    (
        "value",
        "vital and lab: the result; medication: 'active' when the record gives no stop "
        "date, otherwise empty; other items: empty.",
        "number or text, or empty",
    ),
    ("unit", "Unit of value (UCUM for vital signs).", "text, or empty"),
)

AGE_BAND_EXTENSION = "https://medportal.example/fhir/StructureDefinition/age-band"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
LOINC_SYSTEM = "http://loinc.org"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
CATEGORY_TAG_SYSTEM = "urn:medportal:category"
HOSPITAL_TAG_SYSTEM = "urn:medportal:hospital"

# Fixed namespace for the UUIDv5 ids of released resources (not the one of the
# patient's own export in records.fhir, so the two can never share an id).
_NAMESPACE = uuid.UUID("5d0c2f4e-1b7a-5e3c-8f61-2a9d4c7b0e13")

# OWASP's list of characters that make a spreadsheet read a cell as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")


def _cell(value: object) -> str:
    """The CSV text of a value, defused when a spreadsheet would run it as a
    formula; a signed number stays a number, since a spreadsheet evaluating
    "-5" gets -5 and a researcher needs the number.

    Carriage returns become line feeds: with "\n" as the line terminator the
    csv module quotes a cell holding "\n" but not one holding a bare "\r",
    which readers then take for the end of the row.
    """
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        text = "'" + text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def dataset_csv(rows: Iterable[dict]) -> bytes:
    """The release as UTF-8 CSV with a header row of :data:`COLUMNS`.

    A column the row lacks is an empty cell; a key that is not a column is an
    error, since an unexpected key is most likely data nobody reviewed.
    """
    known = set(COLUMNS)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        extra = set(row) - known
        if extra:
            raise ValueError(f"not release columns: {', '.join(sorted(map(str, extra)))}")
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return buffer.getvalue().encode()


def data_dictionary_csv() -> bytes:
    """:data:`DATA_DICTIONARY` as UTF-8 CSV (column, description, format)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("column", "description", "format"))
    writer.writerows(DATA_DICTIONARY)
    return buffer.getvalue().encode()


def data_dictionary_text(
    *,
    request_title: str,
    k: int,
    quasi: Sequence[str],
    shift_days: int,
    suppressed_rows: int | None = None,
) -> str:
    """The de-identification applied to a release, in words, to ship beside it."""
    if suppressed_rows is None:
        suppressed = "The number of suppressed rows is reported with the release."
    else:
        noun = "row was" if suppressed_rows == 1 else "rows were"
        suppressed = f"{suppressed_rows} {noun} suppressed."
    quasi_list = ", ".join(quasi) if quasi else "(none)"
    lines = [
        f"Research release: {request_title}",
        "",
        "De-identification applied:",
        "- The HIPAA Safe Harbor identifiers were removed: no names, record numbers, "
        "addresses, contact details, exact dates or free text that could identify someone.",
        "- Each person appears under a pseudonym valid for this request only; releases for "
        "other requests cannot be joined on it.",
        "- Ages are given in five-year bands; everyone aged 90 or over is in the band 90+.",
        f"- Dates were shifted per person by a secret number of days between -{shift_days} "
        f"and +{shift_days} (never 0), the same for all of one person's dates, so intervals "
        "between a person's events are exact but calendar dates are not.",
        f"- k-anonymity with k = {k} over the quasi-identifiers {quasi_list}: rows whose "
        f"combination of these values is shared by fewer than {k} people were suppressed. "
        + suppressed,
        "",
        "Columns:",
    ]
    lines += [
        f"- {column}: {description} ({form})" for column, description, form in DATA_DICTIONARY
    ]
    return "\n".join(lines) + "\n"


def _uid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(part) for part in parts)))


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _number(text: str) -> int | float | None:
    """A JSON number for ``text`` when it is one (FHIR decimals are numbers),
    else ``None``. Trailing zeros are not kept ("5.10" becomes 5.1)."""
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite():
        return None
    if number.as_tuple().exponent >= 0 and abs(number) < 10**15:
        return int(number)
    approximate = float(number)
    return approximate if math.isfinite(approximate) else None


def _masked() -> dict:
    """A required CodeableConcept whose text was withheld (FHIR's way to say so)."""
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}


def _concept(row: dict, system_name: str, system_url: str) -> dict | None:
    code = _text(row, "code")
    display = _text(row, "display")
    concept: dict = {}
    if code and _text(row, "code_system") == system_name:
        coding = {"system": system_url, "code": code}
        if display:
            coding["display"] = display
        concept["coding"] = [coding]
    if display:
        concept["text"] = display
    return concept or None


def _patient(pseudonym: str, row: dict) -> dict:
    sex = _text(row, "sex") or "unknown"
    if sex not in SEXES:
        raise ValueError(f"unknown sex {sex!r} for {pseudonym}")
    # FHIR's administrative gender codes are the release's sex values.
    resource: dict = {"resourceType": "Patient", "id": pseudonym, "gender": sex}
    band = _text(row, "age_band")
    if band:
        resource["extension"] = [{"url": AGE_BAND_EXTENSION, "valueString": band}]
    return resource


def _item_resource(row: dict, item: str, subject: dict, encounter: dict | None) -> dict:
    day = _text(row, "date")
    display = _text(row, "display")
    if item == "diagnosis":
        resource: dict = {"resourceType": "Condition", "subject": subject}
        code = _concept(row, "ICD-10", ICD10_SYSTEM)
        if code:
            resource["code"] = code
        if encounter:
            resource["encounter"] = encounter
        if day:
            resource["recordedDate"] = day
    elif item in ("vital", "lab"):
        category = "vital-signs" if item == "vital" else "laboratory"
        resource = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": category}]}],
            "code": _concept(row, "LOINC", LOINC_SYSTEM) or _masked(),
            "subject": subject,
        }
        if encounter:
            resource["encounter"] = encounter
        if day:
            resource["effectiveDateTime"] = day
        value = _text(row, "value")
        unit = _text(row, "unit")
        number = _number(value) if value else None
        if number is not None:
            resource["valueQuantity"] = {"value": number, **({"unit": unit} if unit else {})}
        elif value:
            resource["valueString"] = f"{value} {unit}".strip()
    elif item == "medication":
        resource = {
            "resourceType": "MedicationStatement",
            # The release knows only whether the record gave no stop date.
            "status": "active" if _text(row, "value").lower() == "active" else "unknown",
            "medicationCodeableConcept": {"text": display} if display else _masked(),
            "subject": subject,
        }
        if encounter:
            resource["context"] = encounter
        if day:
            resource["effectiveDateTime"] = day
    elif item == "allergy":
        resource = {"resourceType": "AllergyIntolerance", "patient": subject}
        if display:
            resource["code"] = {"text": display}
        if encounter:
            resource["encounter"] = encounter
        if day:
            resource["recordedDate"] = day
    elif item == "encounter":
        resource = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": ACT_CODE_SYSTEM, "code": "AMB", "display": "ambulatory"},
            "subject": subject,
        }
        if day:
            resource["period"] = {"start": day}
    else:
        raise ValueError(f"unknown item {item!r}")
    return resource


def _tags(row: dict) -> dict | None:
    tags = [
        {"system": system, "code": value}
        for system, value in (
            (CATEGORY_TAG_SYSTEM, _text(row, "category")),
            (HOSPITAL_TAG_SYSTEM, _text(row, "hospital")),
        )
        if value
    ]
    return {"tag": tags} if tags else None


def fhir_resources(rows: Iterable[dict]) -> list[dict]:
    """The release as FHIR R4 resources (plain dicts): one ``Patient`` per
    pseudonym, in order of first appearance, then one resource per row.

    Ids are UUIDv5 of (pseudonym, entry, position of the row within its entry),
    so the same release always has the same ids and no id links to another
    release. A row of an entry that also has an encounter row refers to that
    Encounter. A Patient takes its age band and sex from the person's first row.
    """
    rows = list(rows)
    patients: dict[str, dict] = {}
    row_ids: list[str] = []
    positions: dict[tuple[str, str], int] = {}
    encounters: dict[tuple[str, str], str] = {}
    for row in rows:
        pseudonym = _text(row, "pseudonym")
        if not _FHIR_ID.fullmatch(pseudonym):
            raise ValueError(f"pseudonym {pseudonym!r} cannot be a FHIR id")
        if pseudonym not in patients:
            patients[pseudonym] = _patient(pseudonym, row)
        entry_key = (pseudonym, _text(row, "entry"))
        position = positions.get(entry_key, 0)
        positions[entry_key] = position + 1
        row_ids.append(_uid(pseudonym, entry_key[1], position))
        if _text(row, "item") == "encounter":
            encounters.setdefault(entry_key, row_ids[-1])

    resources = list(patients.values())
    for row, resource_id in zip(rows, row_ids, strict=True):
        pseudonym = _text(row, "pseudonym")
        encounter_id = encounters.get((pseudonym, _text(row, "entry")))
        encounter = (
            {"reference": f"Encounter/{encounter_id}"}
            if encounter_id and encounter_id != resource_id
            else None
        )
        subject = {"reference": f"Patient/{pseudonym}"}
        resource = _item_resource(row, _text(row, "item"), subject, encounter)
        head: dict = {"resourceType": resource.pop("resourceType"), "id": resource_id}
        tags = _tags(row)
        if tags:
            head["meta"] = tags
        resources.append(head | resource)
    return resources


def validate_resource(resource: dict) -> None:
    """Raise ``pydantic.ValidationError`` (a ``ValueError``) unless ``resource``
    is a valid FHIR R4 resource, by the R4B models the project uses."""
    # Imported here: the models are heavy and only a validating caller needs them.
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def fhir_ndjson(rows: Iterable[dict], *, validate: bool = False) -> bytes:
    """The release as FHIR NDJSON (one compact resource per line, UTF-8), the
    format of FHIR Bulk Data; see :func:`fhir_resources` for what it holds.
    With ``validate``, every resource is checked against the R4B models first."""
    resources = fhir_resources(rows)
    if validate:
        for resource in resources:
            validate_resource(resource)
    return "".join(
        json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n"
        for resource in resources
    ).encode()
