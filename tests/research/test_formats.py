from __future__ import annotations

import csv
import io
import json

import pytest
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from hypothesis import given, settings
from hypothesis import strategies as st

from medportal.research.formats import (
    AGE_BAND_EXTENSION,
    COLUMNS,
    DATA_DICTIONARY,
    ITEMS,
    SEXES,
    data_dictionary_csv,
    data_dictionary_text,
    dataset_csv,
    fhir_ndjson,
)

FAST = settings(max_examples=200, deadline=None)
FHIR_EXAMPLES = settings(max_examples=60, deadline=None)

R4B_CLASSES = {
    "Patient": Patient,
    "Condition": Condition,
    "Observation": Observation,
    "MedicationStatement": MedicationStatement,
    "AllergyIntolerance": AllergyIntolerance,
    "Encounter": Encounter,
}

CATEGORY_OF = {
    "diagnosis": "diagnoses",
    "medication": "medications",
    "allergy": "allergies",
    "vital": "vitals",
    "lab": "labs",
    "encounter": "encounters",
}


def row(**values: str) -> dict:
    base = {
        "pseudonym": "P0123456789abcdef0123",
        "age_band": "40-44",
        "sex": "female",
        "hospital": "alpha",
        "entry": "E1",
        "date": "2024-03-05",
    }
    return base | values


VISIT = [
    row(category="encounters", item="encounter"),
    row(
        category="diagnoses",
        item="diagnosis",
        code_system="ICD-10",
        code="I10",
        display="Essential (primary) hypertension",
    ),
    row(
        category="vitals",
        item="vital",
        code_system="LOINC",
        code="8867-4",
        display="Heart rate",
        value="72",
        unit="/min",
    ),
    row(category="labs", item="lab", display="HbA1c", value="-0.5", unit="%"),
    row(category="labs", item="lab", display="Culture", value="positive"),
    row(category="medications", item="medication", display="Amlodipine 5 mg", value="active"),
    row(
        pseudonym="Pfedcba9876543210fedc",
        sex="male",
        age_band="90+",
        entry="E2",
        category="medications",
        item="medication",
        display="",
    ),
    row(
        pseudonym="Pfedcba9876543210fedc",
        sex="male",
        age_band="90+",
        entry="E2",
        category="allergies",
        item="allergy",
        display="Penicillin",
    ),
]


def read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def resources(data: bytes) -> list[dict]:
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().split("\n")[:-1]]


# dataset_csv

plain_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r"), max_size=30
).filter(lambda text: not text.startswith(("=", "+", "-", "@", "\t")))
release_rows = st.lists(
    st.dictionaries(st.sampled_from(COLUMNS), plain_text, min_size=1),
    max_size=10,
)


@FAST
@given(rows=release_rows)
def test_csv_reads_back_as_the_rows(rows):
    data = dataset_csv(rows)
    assert data.split(b"\n", 1)[0] == ",".join(COLUMNS).encode()
    assert read_csv(data) == [{column: r.get(column, "") for column in COLUMNS} for r in rows]


def test_csv_has_a_header_and_unix_line_ends():
    data = dataset_csv([{"pseudonym": "P1", "age_band": "90+", "value": 72, "unit": None}])
    assert data == (",".join(COLUMNS) + "\nP1,90+,,,,,,,,,,72,\n").encode()
    assert dataset_csv([]) == (",".join(COLUMNS) + "\n").encode()


def test_csv_is_utf8():
    data = dataset_csv([{"display": "Ærø ü 阿司匹林"}])
    assert read_csv(data)[0]["display"] == "Ærø ü 阿司匹林"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("-", "'-"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\n=1"),
    ],
)
def test_csv_defuses_formulas(value, written):
    assert read_csv(dataset_csv([{"display": value}]))[0]["display"] == written


@pytest.mark.parametrize("number", ["-5", "-0.5", "+3", "-1e5", "-.25", "0", "72", "5.10"])
def test_csv_leaves_numbers_alone(number):
    assert read_csv(dataset_csv([{"value": number}]))[0]["value"] == number


def test_csv_keeps_a_carriage_return_inside_its_cell():
    (read,) = read_csv(dataset_csv([{"display": "a\rb", "value": "c\r\nd", "unit": "%"}]))
    assert (read["display"], read["value"], read["unit"]) == ("a\nb", "c\nd", "%")


def test_csv_refuses_columns_nobody_reviewed():
    with pytest.raises(ValueError, match="not release columns: name"):
        dataset_csv([{"pseudonym": "P1", "name": "Mary"}])


# data dictionary


def test_data_dictionary_describes_every_column_in_order():
    assert tuple(column for column, _, _ in DATA_DICTIONARY) == COLUMNS
    assert all(description and form for _, description, form in DATA_DICTIONARY)
    parsed = list(csv.reader(io.StringIO(data_dictionary_csv().decode(), newline="")))
    assert parsed[0] == ["column", "description", "format"]
    assert [tuple(line) for line in parsed[1:]] == list(DATA_DICTIONARY)


def test_data_dictionary_text_states_the_de_identification():
    text = data_dictionary_text(
        request_title="Hypertension in adults",
        k=5,
        quasi=["age_band", "sex", "hospital"],
        shift_days=182,
        suppressed_rows=12,
    )
    assert text.startswith("Research release: Hypertension in adults\n")
    for phrase in [
        "Safe Harbor",
        "pseudonym valid for this request only",
        "90+",
        "between -182 and +182 (never 0)",
        "k = 5",
        "age_band, sex, hospital",
        "12 rows were suppressed.",
    ]:
        assert phrase in text
    for column in COLUMNS:
        assert f"- {column}: " in text


def test_data_dictionary_text_without_a_count_says_where_it_is():
    text = data_dictionary_text(request_title="T", k=3, quasi=[], shift_days=30)
    assert "quasi-identifiers (none)" in text
    assert "number of suppressed rows is reported" in text
    assert "1 row was suppressed." in data_dictionary_text(
        request_title="T", k=3, quasi=["sex"], shift_days=30, suppressed_rows=1
    )


# fhir_ndjson


def test_every_ndjson_line_is_a_valid_r4b_resource():
    data = fhir_ndjson(VISIT)
    parsed = resources(data)
    for resource in parsed:
        R4B_CLASSES[resource["resourceType"]].model_validate(resource)
    assert [r["resourceType"] for r in parsed] == [
        "Patient",
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "Observation",
        "Observation",
        "MedicationStatement",
        "MedicationStatement",
        "AllergyIntolerance",
    ]
    # Compact: one line per resource, no spaces after separators.
    assert b", " not in data.replace(b"Essential (primary) hypertension", b"")
    assert fhir_ndjson(VISIT, validate=True) == data


def test_ndjson_has_one_patient_per_pseudonym_and_nothing_identifying():
    parsed = resources(fhir_ndjson(VISIT))
    patients = [r for r in parsed if r["resourceType"] == "Patient"]
    assert [p["id"] for p in patients] == ["P0123456789abcdef0123", "Pfedcba9876543210fedc"]
    assert patients[0] == {
        "resourceType": "Patient",
        "id": "P0123456789abcdef0123",
        "gender": "female",
        "extension": [{"url": AGE_BAND_EXTENSION, "valueString": "40-44"}],
    }
    assert patients[1]["gender"] == "male"
    for patient in patients:
        assert not {"name", "birthDate", "telecom", "identifier", "address"} & patient.keys()
    ids = {p["id"] for p in patients}
    for resource in parsed:
        reference = resource.get("subject") or resource.get("patient")
        if reference:
            assert reference["reference"].removeprefix("Patient/") in ids


def test_ndjson_resources_carry_the_row():
    parsed = resources(fhir_ndjson(VISIT))
    by_type: dict[str, list[dict]] = {}
    for resource in parsed:
        by_type.setdefault(resource["resourceType"], []).append(resource)

    encounter = by_type["Encounter"][0]
    assert encounter["status"] == "finished"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert encounter["period"] == {"start": "2024-03-05"}
    assert encounter["meta"]["tag"] == [
        {"system": "urn:medportal:category", "code": "encounters"},
        {"system": "urn:medportal:hospital", "code": "alpha"},
    ]

    condition = by_type["Condition"][0]
    assert condition["code"]["coding"] == [
        {
            "system": "http://hl7.org/fhir/sid/icd-10",
            "code": "I10",
            "display": "Essential (primary) hypertension",
        }
    ]
    assert condition["recordedDate"] == "2024-03-05"
    assert condition["encounter"] == {"reference": f"Encounter/{encounter['id']}"}

    heart_rate, hba1c, culture = by_type["Observation"]
    assert heart_rate["status"] == "final"
    assert heart_rate["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
    ]
    assert heart_rate["valueQuantity"] == {"value": 72, "unit": "/min"}
    assert heart_rate["effectiveDateTime"] == "2024-03-05"
    assert hba1c["code"] == {"text": "HbA1c"}  # not LOINC-coded: text only
    assert hba1c["valueQuantity"] == {"value": -0.5, "unit": "%"}
    assert culture["valueString"] == "positive"
    assert "valueQuantity" not in culture

    active, unknown = by_type["MedicationStatement"]
    assert active["status"] == "active"
    assert active["medicationCodeableConcept"] == {"text": "Amlodipine 5 mg"}
    assert active["context"] == {"reference": f"Encounter/{encounter['id']}"}
    assert unknown["status"] == "unknown"
    # A withheld drug name is said to be withheld (the element is required).
    assert unknown["medicationCodeableConcept"]["extension"][0]["valueCode"] == "masked"
    assert "context" not in unknown  # its entry has no encounter row

    allergy = by_type["AllergyIntolerance"][0]
    assert allergy["patient"] == {"reference": "Patient/Pfedcba9876543210fedc"}
    assert allergy["code"] == {"text": "Penicillin"}
    assert allergy["recordedDate"] == "2024-03-05"


def test_ndjson_ids_are_reproducible_and_unique():
    first = fhir_ndjson(VISIT)
    assert fhir_ndjson(list(VISIT)) == first
    ids = [r["id"] for r in resources(first)]
    assert len(ids) == len(set(ids))
    # Another person's rows do not move this person's ids.
    alone = fhir_ndjson([r for r in VISIT if r["pseudonym"].startswith("P0")])
    assert {r["id"] for r in resources(alone)} <= set(ids)


def test_ndjson_of_nothing_is_empty():
    assert fhir_ndjson([]) == b""


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"item": "note"}, "unknown item 'note'"),
        ({"item": "diagnosis", "sex": "f"}, "unknown sex 'f'"),
        ({"item": "diagnosis", "pseudonym": "Patient 1"}, "cannot be a FHIR id"),
        ({"item": "diagnosis", "pseudonym": ""}, "cannot be a FHIR id"),
    ],
)
def test_ndjson_refuses_rows_it_cannot_express(bad, message):
    with pytest.raises(ValueError, match=message):
        fhir_ndjson([row(**bad)])


def test_ndjson_validation_catches_an_invalid_date():
    rows = [row(item="diagnosis", date="2024-13-45")]
    fhir_ndjson(rows)  # not validated: written as given
    with pytest.raises(ValueError, match="recordedDate"):
        fhir_ndjson(rows, validate=True)


fhir_rows = st.lists(
    st.builds(
        lambda item, pseudonym, sex, band, entry, day, coded, code, display, value, unit: {
            "pseudonym": pseudonym,
            "age_band": band,
            "sex": sex,
            "hospital": "beta",
            "entry": entry,
            "date": day,
            "category": CATEGORY_OF[item],
            "item": item,
            "code_system": coded,
            "code": code,
            "display": display,
            "value": value,
            "unit": unit,
        },
        item=st.sampled_from(ITEMS),
        pseudonym=st.sampled_from(["P" + f"{n:x}" * 20 for n in range(4)]),
        sex=st.sampled_from(SEXES),
        band=st.sampled_from(["", "0-4", "60-64", "90+"]),
        entry=st.sampled_from(["E1", "E2", "E3"]),
        day=st.one_of(st.just(""), st.dates().map(lambda d: d.isoformat())),
        coded=st.sampled_from(["ICD-10", "LOINC", ""]),
        code=st.sampled_from(["", "I10", "8867-4"]),
        display=st.one_of(st.just(""), st.text(min_size=1, max_size=20)),
        value=st.one_of(
            st.just(""),
            st.text(max_size=10),
            st.decimals(allow_nan=False, allow_infinity=False).map(str),
            st.integers().map(str),
            st.floats(allow_nan=False).map(str),
        ),
        unit=st.sampled_from(["", "mg/dL", "%", "/min"]),
    ),
    max_size=12,
)


@FHIR_EXAMPLES
@given(rows=fhir_rows)
def test_any_release_rows_make_valid_r4b_ndjson(rows):
    parsed = resources(fhir_ndjson(rows)) if rows else []
    for resource in parsed:
        R4B_CLASSES[resource["resourceType"]].model_validate(resource)
    patients = [r["id"] for r in parsed if r["resourceType"] == "Patient"]
    assert sorted(patients) == sorted({r["pseudonym"] for r in rows})
    assert len(parsed) == len(patients) + len(rows)
