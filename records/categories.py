"""Categories of medical data and their sensitivity levels: the one table.

Every item of a record belongs to a category; every category to one level.
A record is stored as one encrypted section per level, so a grant for
"normal" data never needs the keys of a "very restricted" section. Consent
(issue 6) grants per category; research requests name categories too.
The README's "Categories and sensitivity" table is this table.
"""

from __future__ import annotations

from django.db import models


class Level(models.TextChoices):
    NORMAL = "normal", "Normal"
    RESTRICTED = "restricted", "Restricted"
    VERY_RESTRICTED = "very_restricted", "Very restricted"


class Category(models.TextChoices):
    DEMOGRAPHICS = "demographics", "Demographics"
    ENCOUNTERS = "encounters", "Encounters"
    DIAGNOSES = "diagnoses", "Diagnoses"
    MEDICATIONS = "medications", "Medications"
    ALLERGIES = "allergies", "Allergies"
    VITALS = "vitals", "Vital signs"
    LABS = "labs", "Lab results"
    IMAGING = "imaging", "Imaging"
    PROCEDURES = "procedures", "Procedures"
    CLINICAL_NOTES = "clinical_notes", "Clinical notes"
    MENTAL_HEALTH = "mental_health", "Mental health"
    SEXUAL_HEALTH = "sexual_health", "Sexual health"
    GENETICS = "genetics", "Genetics"
    SUBSTANCE_USE = "substance_use", "Substance use"


CATEGORY_LEVEL: dict[str, str] = {
    Category.DEMOGRAPHICS: Level.NORMAL,
    Category.ENCOUNTERS: Level.NORMAL,
    Category.DIAGNOSES: Level.NORMAL,
    Category.MEDICATIONS: Level.NORMAL,
    Category.ALLERGIES: Level.NORMAL,
    Category.VITALS: Level.NORMAL,
    Category.LABS: Level.NORMAL,
    Category.IMAGING: Level.NORMAL,
    Category.PROCEDURES: Level.NORMAL,
    Category.CLINICAL_NOTES: Level.RESTRICTED,
    Category.MENTAL_HEALTH: Level.VERY_RESTRICTED,
    Category.SEXUAL_HEALTH: Level.VERY_RESTRICTED,
    Category.GENETICS: Level.VERY_RESTRICTED,
    Category.SUBSTANCE_USE: Level.VERY_RESTRICTED,
}

# Categories a diagnosis or a note may be filed under instead of its default,
# so that, say, an HIV diagnosis is "sexual health" (very restricted) and not
# an ordinary "diagnoses" item anyone with a normal-level grant can read.
SENSITIVE_CATEGORIES = (
    Category.MENTAL_HEALTH,
    Category.SEXUAL_HEALTH,
    Category.GENETICS,
    Category.SUBSTANCE_USE,
)

# Plain strings, not enum members: these values go into canonical JSON.
CATEGORY_LEVEL = {str(category): str(level) for category, level in CATEGORY_LEVEL.items()}

assert set(CATEGORY_LEVEL) == set(Category.values), "every category needs a level"


def level_of(category: str) -> str:
    return CATEGORY_LEVEL[category]


def categories_at(level: str) -> list[str]:
    return [category for category, at in CATEGORY_LEVEL.items() if at == level]
