"""The one validation of record content that pages and the API share."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from records.categories import CATEGORY_LEVEL, Category, Level
from records.content import ContentInvalid, content_categories, content_clean, content_split

VISIT = {"visit_date": "2026-01-05", "department": "Cardiology", "chief_complaint": "Chest pain"}


def _errors(content) -> dict:
    with pytest.raises(ContentInvalid) as caught:
        content_clean(content)
    return caught.value.errors


def test_every_category_has_exactly_one_level():
    assert set(CATEGORY_LEVEL) == set(Category.values)
    assert set(CATEGORY_LEVEL.values()) == set(Level.values)


def test_icd10_codes_are_normalised_and_checked_against_the_classification():
    clean = content_clean({"encounter": VISIT, "diagnoses": [{"code": " e119 "}]})
    assert clean["diagnoses"][0]["code"] == "E11.9"
    assert clean["diagnoses"][0]["title"].startswith("Type 2 diabetes")
    errors = _errors({"encounter": VISIT, "diagnoses": [{"code": "Z99.99"}, {"code": "hello"}]})
    assert errors == {
        "diagnoses.0.code": ["Z99.99 is not a code in ICD-10."],
        "diagnoses.1.code": ["Enter an ICD-10 code such as I10 or E11.9."],
    }


@pytest.mark.parametrize(
    ("vital", "message"),
    [
        ({"kind": "temperature", "value": "375", "unit": "Cel"}, "between 30 and 45 °C"),
        ({"kind": "heart_rate", "value": "abc"}, "Enter a number."),
        ({"kind": "heart_rate", "value": "NaN"}, "Enter a number."),
        ({"kind": "weight", "value": "70", "unit": "lb"}, "measured in kg"),
    ],
)
def test_vital_signs_have_units_and_plausible_ranges(vital, message):
    errors = _errors({"encounter": VISIT, "vitals": [vital]})
    assert message in " ".join(errors.get("vitals.0.value", []) + errors.get("vitals.0.unit", []))


def test_fahrenheit_is_accepted_in_its_own_range():
    clean = content_clean(
        {"encounter": VISIT, "vitals": [{"kind": "temperature", "value": "98.6", "unit": "[degF]"}]}
    )
    assert clean["vitals"] == [{"kind": "temperature", "value": "98.6", "unit": "[degF]"}]


def test_dates_required_not_in_future_and_stop_after_start():
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    errors = _errors(
        {
            "encounter": {**VISIT, "visit_date": tomorrow},
            "medications": [
                {
                    "drug": "X",
                    "dose": "1",
                    "route": "oral",
                    "frequency": "daily",
                    "start": "2026-01-05",
                    "stop": "2026-01-01",
                }
            ],
        }
    )
    assert errors["encounter.visit_date"] == ["This date is in the future."]
    assert errors["medications.0.stop"] == ["The stop date is before the start date."]


def test_a_prescription_may_start_in_the_future_but_a_visit_may_not_have():
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    medication = {"drug": "X", "dose": "1", "route": "oral", "frequency": "daily"}
    clean = content_clean({"encounter": VISIT, "medications": [{**medication, "start": tomorrow}]})
    assert clean["medications"][0]["start"] == tomorrow


def test_unknown_fields_and_wrong_shapes_are_errors_not_crashes():
    assert _errors([]) == {"content": ["Must be an object."]}
    errors = _errors({"encounter": VISIT, "diagnoses": "I10", "secret": 1})
    assert errors == {"content.secret": ["Unknown field."], "diagnoses": ["Must be a list."]}


def test_sensitive_items_go_to_the_very_restricted_section():
    clean = content_clean(
        {
            "encounter": VISIT,
            "diagnoses": [{"code": "I10"}, {"code": "F32.9", "category": "mental_health"}],
            "notes": [{"text": "Seen with partner."}],
        }
    )
    sections = content_split(clean)
    assert set(sections) == {"normal", "restricted", "very_restricted"}
    assert [d["code"] for d in sections["normal"]["diagnoses"]] == ["I10"]
    assert [d["code"] for d in sections["very_restricted"]["diagnoses"]] == ["F32.9"]
    assert sections["restricted"]["notes"][0]["text"] == "Seen with partner."
    assert "encounter" not in sections["very_restricted"]
    assert content_categories(clean) == [
        "encounters",
        "diagnoses",
        "clinical_notes",
        "mental_health",
    ]
