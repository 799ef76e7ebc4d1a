"""Forms of the record pages.

The patient form is an ordinary Django form (its rules live in
``identity_clean``; the form only collects the text). The entry form is a
fixed grid of rows that turns POST data into the raw content dict
``content_clean`` expects and maps that function's error paths
(``"diagnoses.0.code"``) back to the inputs the doctor typed into.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.core.exceptions import ValidationError

from records.categories import Category
from records.content import (
    DIAGNOSIS_CATEGORIES,
    NOTE_CATEGORIES,
    ROUTES,
    SEVERITIES,
    UNIT_LABELS,
    VITAL_SIGNS,
)
from records.services import ATTACHMENT_CATEGORIES, SEXES, Upload

# --- Patients ---------------------------------------------------------------------


class PatientForm(forms.Form):
    """Collects the text; ``identity_clean`` (called by the view on every POST,
    valid or not, so all mistakes show at once) owns the identity's rules."""

    given_name = forms.CharField(required=False)
    family_name = forms.CharField(required=False)
    sex = forms.ChoiceField(
        choices=[("", "—"), *((sex, sex.capitalize()) for sex in SEXES)], required=False
    )
    birth_date = forms.CharField(
        label="Birth date",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="YYYY-MM-DD.",
    )
    record_number = forms.CharField(
        required=False, help_text="This hospital's number for the patient, e.g. A-100999."
    )
    phone = forms.CharField(required=False)
    email = forms.EmailField(max_length=200, required=False)
    username = forms.CharField(
        max_length=150,
        required=False,
        help_text="Optional: give the patient a portal account to see their records.",
    )
    password = forms.CharField(
        label="Temporary password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Needed with a username; at least 10 characters, not like the username "
        "or the name, not only digits. They change it when they first sign in.",
    )

    IDENTITY_FIELDS = (
        "given_name",
        "family_name",
        "sex",
        "birth_date",
        "record_number",
        "phone",
        "email",
    )

    def clean(self):
        data = super().clean()
        if data.get("username") and not data.get("password"):
            self.add_error("password", "Give a temporary password for the account.")
        if data.get("password") and not data.get("username"):
            self.add_error("username", "A password needs a username.")
        return data

    def identity_data(self) -> dict:
        """The identity fields as typed (an invalid email is left to the form)."""
        cleaned = getattr(self, "cleaned_data", {})
        data = {name: self.data.get(name, "") for name in self.IDENTITY_FIELDS}
        data["email"] = cleaned.get("email") or ""
        return data

    def add_validation_error(self, error: ValidationError) -> None:
        """Put a service's ValidationError beside the fields it names."""
        if hasattr(error, "error_dict"):
            for name, messages in error.message_dict.items():
                self.add_error(name if name in self.fields else None, messages)
        else:
            self.add_error(None, error.messages)


# --- Record entries ---------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("_", " ").capitalize()


def _category_choices(categories) -> list[tuple[str, str]]:
    return [(str(category), Category(category).label) for category in categories]


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"  # text, date, select, textarea
    choices: tuple = ()
    blank: bool = True  # a select with an empty first option
    counts: bool = True  # a value here makes the row "filled in"


@dataclass(frozen=True)
class Group:
    name: str  # the content list ("diagnoses")
    title: str
    rows: int
    columns: tuple[Column, ...]
    help: str = ""


GROUPS: tuple[Group, ...] = (
    Group(
        "diagnoses",
        "Diagnoses",
        3,
        (
            Column("code", "ICD-10 code"),
            Column("text", "Details"),
            Column(
                "category",
                "Filed under",
                "select",
                tuple(_category_choices(DIAGNOSIS_CATEGORIES)),
                blank=False,
                counts=False,
            ),
        ),
        "An ICD-10 code such as I10 or E11.9. Sensitive diagnoses can be filed under "
        "a restricted category.",
    ),
    Group(
        "medications",
        "Medications",
        3,
        (
            Column("drug", "Drug"),
            Column("dose", "Dose"),
            Column("route", "Route", "select", tuple((r, _label(r)) for r in ROUTES)),
            Column("frequency", "Frequency"),
            Column("start", "Start", "date"),
            Column("stop", "Stop", "date"),
        ),
        "Leave the stop date empty while the patient still takes it.",
    ),
    Group(
        "allergies",
        "Allergies",
        2,
        (
            Column("substance", "Substance"),
            Column("reaction", "Reaction"),
            Column("severity", "Severity", "select", tuple((s, _label(s)) for s in SEVERITIES)),
        ),
    ),
    Group(
        "labs",
        "Lab results",
        3,
        (
            Column("test", "Test"),
            Column("value", "Value"),
            Column("unit", "Unit"),
            Column("reference_range", "Reference range"),
        ),
    ),
    Group(
        "notes",
        "Notes",
        2,
        (
            Column(
                "category",
                "Category",
                "select",
                tuple(_category_choices(NOTE_CATEGORIES)),
                blank=False,
                counts=False,
            ),
            Column("text", "Note", "textarea"),
        ),
        "Clinical notes are restricted; sensitive categories are very restricted.",
    ),
)

ENCOUNTER = (
    Column("visit_date", "Visit date", "date"),
    Column("department", "Department"),
    Column("chief_complaint", "Chief complaint", "textarea"),
)
ATTACHMENT_ROWS = 2
ATTACHMENT_CATEGORY_CHOICES = tuple(_category_choices(ATTACHMENT_CATEGORIES))


@dataclass
class Input:
    """One input as the template draws it."""

    name: str
    label: str
    kind: str
    value: str = ""
    choices: tuple = ()
    blank: bool = True
    errors: list[str] = field(default_factory=list)
    # vitals: the unit select beside the value; attachments: the category select
    select_name: str = ""
    select_value: str = ""


@dataclass
class Row:
    inputs: list[Input]


@dataclass
class Section:
    name: str
    title: str
    rows: list[Row]
    help: str = ""
    errors: list[str] = field(default_factory=list)


def field_name(group: str, row, key: str) -> str:
    return f"{group}-{row}-{key}"


class EntryForm:
    """A fixed grid of inputs for one record entry.

    ``EntryForm(data, files)`` reads a POST; ``EntryForm(initial=content)``
    pre-fills from a record (an amendment starts from what it corrects).
    """

    def __init__(self, data=None, files=None, *, initial: dict | None = None) -> None:
        self.data = data
        self.files = files
        self.values: dict[str, str] = {}
        self.errors: dict[str, list[str]] = {}
        self.non_field_errors: list[str] = []
        self.rows = {group.name: group.rows for group in GROUPS}
        # content list name -> row number of each item passed to content_clean
        self._positions: dict[str, list] = {}
        if data is not None:
            for group in GROUPS:
                self.rows[group.name] = max(group.rows, self._rows_in_post(group))
            self.values = {key: str(value).strip() for key, value in data.items()}
        elif initial:
            self._prefill(initial)

    # -- reading ---------------------------------------------------------------

    def _rows_in_post(self, group: Group) -> int:
        count = 0
        prefix = f"{group.name}-"
        for key in self.data:
            if key.startswith(prefix):
                middle = key[len(prefix) :].split("-", 1)[0]
                if middle.isdigit() and int(middle) < 50:
                    count = max(count, int(middle) + 1)
        return count

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def content(self) -> dict:
        """The raw content dict (fully-empty rows left out) for content_clean."""
        content: dict = {
            "encounter": {
                column.key: self.value(field_name("encounter", 0, column.key))
                for column in ENCOUNTER
            }
        }
        for group in GROUPS:
            items, positions = [], []
            for row in range(self.rows[group.name]):
                item = {
                    column.key: self.value(field_name(group.name, row, column.key))
                    for column in group.columns
                }
                if not any(item[column.key] for column in group.columns if column.counts):
                    continue
                items.append({key: value for key, value in item.items() if value != ""})
                positions.append(row)
            content[group.name] = items
            self._positions[group.name] = positions
        vitals, positions = [], []
        for kind in VITAL_SIGNS:
            value = self.value(field_name("vitals", kind, "value"))
            if not value:
                continue
            item = {"kind": kind, "value": value}
            unit = self.value(field_name("vitals", kind, "unit"))
            if unit:
                item["unit"] = unit
            vitals.append(item)
            positions.append(kind)
        content["vitals"] = vitals
        self._positions["vitals"] = positions
        return content

    def uploads(self) -> list[tuple[int, Upload]]:
        """(row, upload) of every file chosen; reads at most one byte past the limit."""
        from django.conf import settings

        limit = settings.MEDPORTAL_ATTACHMENT_MAX_BYTES
        uploads = []
        for row in range(ATTACHMENT_ROWS):
            file = (self.files or {}).get(field_name("attachments", row, "file"))
            if file is None:
                continue
            category = self.value(field_name("attachments", row, "category"))
            data = file.read(limit + 1)
            uploads.append(
                (row, Upload(filename=file.name or "attachment", data=data, category=category))
            )
        return uploads

    # -- errors ----------------------------------------------------------------

    def add_error(self, name: str | None, messages) -> None:
        if isinstance(messages, str):
            messages = [messages]
        if name is None:
            self.non_field_errors.extend(messages)
        else:
            self.errors.setdefault(name, []).extend(messages)

    def add_content_errors(self, errors: dict[str, list[str]]) -> None:
        """Map content_clean's paths ("diagnoses.0.code") onto the inputs."""
        for path, messages in errors.items():
            self.add_error(self._input_for(path), messages)

    def _input_for(self, path: str) -> str | None:
        parts = path.split(".")
        if parts[0] == "encounter" and len(parts) == 2:
            return field_name("encounter", 0, parts[1])
        positions = self._positions.get(parts[0])
        if positions is None or len(parts) < 2 or not parts[1].isdigit():
            return None
        position = int(parts[1])
        if position >= len(positions):
            return None
        row = positions[position]
        if len(parts) == 3:
            return field_name(parts[0], row, parts[2])
        return None

    def add_validation_error(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error.messages)
            return
        for name, messages in error.message_dict.items():
            if name == "attachments":
                self.add_error("attachments", messages)
            else:
                self.add_error(None, messages)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors or self.non_field_errors)

    def error_count(self) -> int:
        return sum(len(messages) for messages in self.errors.values()) + len(self.non_field_errors)

    # -- pre-filling (amendments) ----------------------------------------------

    def _prefill(self, content: dict) -> None:
        for column in ENCOUNTER:
            value = (content.get("encounter") or {}).get(column.key)
            self.values[field_name("encounter", 0, column.key)] = str(value or "")
        for group in GROUPS:
            items = content.get(group.name) or []
            self.rows[group.name] = max(group.rows, len(items))
            for row, item in enumerate(items):
                for column in group.columns:
                    value = item.get(column.key)
                    self.values[field_name(group.name, row, column.key)] = (
                        "" if value is None else str(value)
                    )
        for item in content.get("vitals") or []:
            self.values[field_name("vitals", item["kind"], "value")] = str(item.get("value", ""))
            self.values[field_name("vitals", item["kind"], "unit")] = str(item.get("unit", ""))

    # -- drawing ---------------------------------------------------------------

    def _input(self, name: str, column: Column) -> Input:
        return Input(
            name=name,
            label=column.label,
            kind=column.kind,
            value=self.value(name),
            choices=column.choices,
            blank=column.blank,
            errors=self.errors.get(name, []),
        )

    def encounter(self) -> list[Input]:
        return [self._input(field_name("encounter", 0, column.key), column) for column in ENCOUNTER]

    def sections(self) -> list[Section]:
        sections = []
        for group in GROUPS:
            rows = [
                Row(
                    [
                        self._input(field_name(group.name, row, column.key), column)
                        for column in group.columns
                    ]
                )
                for row in range(self.rows[group.name])
            ]
            sections.append(Section(group.name, group.title, rows, group.help))
        return sections

    def vitals(self) -> list[Input]:
        inputs = []
        for kind, sign in VITAL_SIGNS.items():
            name = field_name("vitals", kind, "value")
            unit_name = field_name("vitals", kind, "unit")
            units = tuple((unit, UNIT_LABELS.get(unit, unit)) for unit in sign.ranges)
            inputs.append(
                Input(
                    name=name,
                    label=sign.label,
                    kind="number",
                    value=self.value(name),
                    choices=units,
                    blank=False,
                    errors=self.errors.get(name, []) + self.errors.get(unit_name, []),
                    select_name=unit_name,
                    select_value=self.value(unit_name),
                )
            )
        return inputs

    def attachments(self) -> list[Input]:
        return [
            Input(
                name=field_name("attachments", row, "file"),
                label=f"File {row + 1}",
                kind="file",
                select_name=field_name("attachments", row, "category"),
                select_value=self.value(field_name("attachments", row, "category")),
                choices=ATTACHMENT_CATEGORY_CHOICES,
                blank=False,
                errors=self.errors.get(field_name("attachments", row, "file"), []),
            )
            for row in range(ATTACHMENT_ROWS)
        ]

    def attachment_errors(self) -> list[str]:
        return self.errors.get("attachments", [])
