"""Forms of the research pages.

They only collect what was typed: the rules of a request (required fields,
known ICD-10 codes, k, dates) live in ``request_clean`` and the other
services, which every form passes its data to on each POST, valid or not, so
that all mistakes show at once beside the fields they concern.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from consent.models import ResearchPreference
from medportal.research.models import Answer, ResearchRequest
from medportal.research.release import RELEASABLE_CATEGORIES, SEXES
from medportal.research.services import K_DEFAULT, K_MAX, K_MIN, REQUEST_FIELDS, TEXT_LIMITS
from records.categories import Category, Level, categories_at

# What each level means to a researcher choosing categories. Clinical notes
# (the restricted level) are free text and never released, so that level is
# not offered at all.
LEVEL_EXPLANATIONS = {
    Level.NORMAL: "Everyday coded facts: visits, diagnoses, medicines, allergies, vital signs "
    "and test results. Demographics, imaging and procedures are never released.",
    Level.VERY_RESTRICTED: "Diagnoses a doctor filed as mental health, sexual health, genetics "
    "or substance use; released as ICD-10 codes only, never as notes.",
}
ANSWER_CHOICES = (
    (Answer.AGGREGATE, "Aggregate counts only: totals per code, age band and sex"),
    (Answer.ROWS, "De-identified rows: one line per item of an entry, per person"),
)
SEX_CHOICES = (("", "Any"), *((sex, sex.capitalize()) for sex in SEXES))


def _text(limit: int, label: str, help_text: str = "", **attributes) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        help_text=help_text,
        widget=forms.TextInput(attrs={"maxlength": limit, **attributes}),
    )


def _date(**extra) -> forms.CharField:
    return forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}), **extra)


def _number(low: int, high: int, **extra) -> forms.CharField:
    return forms.CharField(
        required=False,
        widget=forms.NumberInput(attrs={"min": low, "max": high, "inputmode": "numeric"}),
        **extra,
    )


@dataclass(frozen=True)
class CategoryChoice:
    value: str
    label: str
    checked: bool


@dataclass(frozen=True)
class CategoryLevel:
    level: str
    label: str
    explanation: str
    categories: list[CategoryChoice]


class RequestForm(forms.Form):
    """A research request, draft or complete. ``request_save`` checks it."""

    title = _text(TEXT_LIMITS["title"], "Title", autocomplete="off")
    purpose = forms.CharField(
        label="Scientific purpose",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "maxlength": TEXT_LIMITS["purpose"]}),
        help_text="What you want to learn and why it needs these data. Hospitals and every "
        "invited patient read this.",
    )
    investigator = _text(TEXT_LIMITS["investigator"], "Principal investigator")
    ethics_reference = _text(
        TEXT_LIMITS["ethics_reference"],
        "Ethics approval reference",
        help_text="As written on the approval, e.g. NW-REC-2026-014.",
    )
    ethics_document = forms.FileField(
        label="Ethics approval document (PDF)",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "application/pdf"}),
    )
    categories = forms.MultipleChoiceField(
        required=False,
        choices=[(str(value), Category(value).label) for value in RELEASABLE_CATEGORIES],
    )
    # "All of this level": ticks every releasable category of the level.
    levels = forms.MultipleChoiceField(required=False, choices=Level.choices)
    codes = _text(
        500,
        "ICD-10 codes or code prefixes",
        help_text="Comma-separated. A prefix covers every code under it: E11 covers E11.0 to "
        "E11.9. Leave empty to include patients with any diagnosis.",
        placeholder="e.g. I10, E11",
        autocomplete="off",
        spellcheck="false",
    )
    age_min = _number(0, 120, label="Lowest age")
    age_max = _number(0, 120, label="Highest age")
    sex = forms.ChoiceField(required=False, choices=SEX_CHOICES)
    period_from = _date(label="Period of care from")
    period_to = _date(
        label="Period of care to",
        help_text="The day an entry was written. Leave either end empty for no limit.",
    )
    answer = forms.ChoiceField(
        label="Kind of answer",
        required=False,
        choices=ANSWER_CHOICES,
        widget=forms.RadioSelect,
        initial=Answer.AGGREGATE,
    )
    k = _number(
        K_MIN,
        K_MAX,
        label="Smallest group (k)",
        help_text=f"A group of fewer than k people with the same age band and sex is left out "
        f"of rows, and counts below k show as “< k”, so nobody can be singled out; "
        f"at least {K_MIN}, usually {K_DEFAULT}.",
    )
    expires_at = _date(
        label="Expires on",
        help_text="After this day no hospital can approve or release, and patients' "
        "opt-ins end. At most five years from today.",
    )

    def __init__(self, *args, research_request: ResearchRequest | None = None, **kwargs):
        if research_request is not None and not kwargs.get("initial"):
            kwargs["initial"] = initial_from(research_request)
        kwargs.setdefault("initial", {"k": K_DEFAULT, "answer": Answer.AGGREGATE})
        super().__init__(*args, **kwargs)

    # The template draws the fields in these groups (fieldsets).
    def _bound(self, *names: str) -> list[forms.BoundField]:
        return [self[name] for name in names]

    @property
    def study_fields(self) -> list[forms.BoundField]:
        return self._bound("title", "purpose", "investigator", "ethics_reference")

    @property
    def age_fields(self) -> list[forms.BoundField]:
        return self._bound("age_min", "age_max")

    @property
    def period_fields(self) -> list[forms.BoundField]:
        return self._bound("period_from", "period_to")

    def chosen_categories(self) -> list[str]:
        """The categories as typed, with a ticked level standing for all of its own."""
        if self.is_bound:
            chosen = list(self.data.getlist("categories"))
            for level in self.data.getlist("levels"):
                chosen.extend(_releasable_at(level))
        else:
            chosen = list(self.initial.get("categories") or [])
        return list(dict.fromkeys(chosen))

    def category_levels(self) -> list[CategoryLevel]:
        chosen = set(self.chosen_categories())
        return [
            CategoryLevel(
                level=level.value,
                label=level.label,
                explanation=LEVEL_EXPLANATIONS.get(level.value, ""),
                categories=[
                    CategoryChoice(category, Category(category).label, category in chosen)
                    for category in _releasable_at(level.value)
                ],
            )
            for level in Level
            if _releasable_at(level.value)
        ]

    def service_data(self) -> dict:
        """The fields as ``request_save`` takes them: strings as typed (so that
        the service, not the form, says what is wrong with them)."""
        data = {
            name: (self.data.get(name) or "").strip()
            for name in REQUEST_FIELDS
            if name != "categories"
        }
        data["categories"] = self.chosen_categories()
        return data

    def document(self):
        return (self.files or {}).get("ethics_document")

    def add_validation_error(self, error: ValidationError) -> None:
        """Put a service's ValidationError beside the fields it names."""
        if hasattr(error, "error_dict"):
            for name, messages in error.message_dict.items():
                self.add_error(name if name in self.fields else None, messages)
        else:
            self.add_error(None, error.messages)

    def error_count(self) -> int:
        return sum(len(messages) for messages in self.errors.values())


def _releasable_at(level: str) -> list[str]:
    return [str(category) for category in categories_at(level) if category in RELEASABLE_CATEGORIES]


def initial_from(research_request: ResearchRequest) -> dict:
    """A saved request as the form shows it again."""
    criteria = research_request.criteria or {}

    def text(value) -> str:
        return "" if value is None else str(value)

    return {
        "title": research_request.title,
        "purpose": research_request.purpose,
        "investigator": research_request.investigator,
        "ethics_reference": research_request.ethics_reference,
        "categories": list(research_request.categories or []),
        "codes": ", ".join(criteria.get("codes") or []),
        "age_min": text(criteria.get("age_min")),
        "age_max": text(criteria.get("age_max")),
        "sex": criteria.get("sex") or "",
        "period_from": text(criteria.get("period_from")),
        "period_to": text(criteria.get("period_to")),
        "answer": research_request.answer,
        "k": research_request.k,
        "expires_at": (
            timezone.localtime(research_request.expires_at).date().isoformat()
            if research_request.expires_at
            else ""
        ),
    }


class DecisionForm(forms.Form):
    """A hospital admin's answer to a request."""

    reason = forms.CharField(
        label="Reason",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": 2000}),
        help_text="Required. The organisation sees it beside your answer.",
    )


class PreferenceForm(forms.Form):
    choice = forms.ChoiceField(
        label="When a research request matches your records",
        choices=ResearchPreference.Choice.choices,
        widget=forms.RadioSelect,
    )
