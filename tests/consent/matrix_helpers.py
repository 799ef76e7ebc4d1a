"""Mechanics of the consent policy matrix (``test_policy_matrix.py``): the
record under test, the consent states, the reads and what they leave in the
access log. The expectations themselves live in the test file."""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.roles import Role
from accounts.services import user_create
from consent import grants as consent_grants
from consent.emergency import emergency_declare
from consent.models import AccessLogEntry
from records.models import Patient, Record
from records.services import record_create
from tests.conftest import PASSWORD

LEVELS = ("normal", "restricted", "very_restricted")
ALL_LEVELS_GRANT = list(LEVELS)
EMERGENCY_REASON = "Found unconscious in the emergency department; history unknown."
SECOND_DOCTOR = "alpha-doctor-matrix"


# --- Consent changes, signed by the patient -------------------------------------------


def _with_password(function, **kwargs):
    """Call consent_grant / consent_revoke with the patient's password when the
    service asks for it (the signing key may be sealed under the password)."""
    if "password" in inspect.signature(function).parameters:
        kwargs["password"] = PASSWORD
    return function(**kwargs)


def grant(user: User, **kwargs):
    return _with_password(consent_grants.consent_grant, user=user, **kwargs)


def revoke(user: User, **kwargs):
    return _with_password(consent_grants.consent_revoke, user=user, **kwargs)


# --- The people and the record ----------------------------------------------------------


@dataclass
class World:
    """Li Wei at both hospitals, and the alpha record written for the matrix."""

    li_alpha: Patient
    li_beta: Patient
    record: Record
    markers: dict[str, str]  # level -> the unique text put into that level's section
    grant_hash: str = ""  # the grant the state made (grant / revoked / expired)
    emergency_hash: str = ""
    grant_expires_at: object = None

    @property
    def pseudonyms(self) -> set[str]:
        return set(self.li_alpha.pseudonyms) | set(self.li_beta.pseudonyms)


def second_alpha_doctor(alpha) -> User:
    """A doctor at alpha who wrote none of the entries."""
    with tenant_context(alpha):
        return user_create(
            actor=None,
            username=SECOND_DOCTOR,
            role=Role.DOCTOR,
            password=PASSWORD,
            first_name="Dana",
            last_name="Second",
            must_change_password=False,
        )


def world_build(alpha, beta) -> World:
    """Withdraw the demo's grant to beta, then have alpha-doctor write one entry
    for Li Wei with a normal, a restricted and a very restricted section, each
    carrying its own marker."""
    markers = {
        "normal": f"MATRIX-NORMAL-{uuid.uuid4().hex}",
        "restricted": f"MATRIX-RESTRICTED-{uuid.uuid4().hex}",
        "very_restricted": f"MATRIX-VERY-{uuid.uuid4().hex}",
    }
    with tenant_context(beta):
        li_beta = Patient.objects.select_related("user").get(user__username="beta-patient")
    with tenant_context(alpha):
        li_alpha = Patient.objects.select_related("user").get(user__username="alpha-patient")
        revoke(li_alpha.user, grantee_type="tenant", grantee_id="beta")
        author = User.objects.get(username="alpha-doctor")
        record = record_create(
            author=author,
            patient=li_alpha,
            content={
                "encounter": {
                    "visit_date": timezone.localdate().isoformat(),
                    "department": "General medicine",
                    "chief_complaint": f"Review visit {markers['normal']}",
                },
                "diagnoses": [
                    {"code": "I10", "text": markers["normal"]},
                    {
                        "code": "F32.9",
                        "text": markers["very_restricted"],
                        "category": "mental_health",
                    },
                ],
                "notes": [{"category": "clinical_notes", "text": markers["restricted"]}],
            },
        )
        assert sorted(record.sections.values_list("level", flat=True)) == sorted(LEVELS)
    return World(li_alpha=li_alpha, li_beta=li_beta, record=record, markers=markers)


def state_apply(state: str, world: World, alpha, beta) -> None:
    """Put Li Wei's consent in ``state`` (the demo grant is already withdrawn)."""
    li = world.li_alpha.user
    if state == "none":
        return
    if state in ("grant", "revoked"):
        with tenant_context(alpha):
            made = grant(li, grantee_type="tenant", grantee_id="beta", categories=ALL_LEVELS_GRANT)
            world.grant_hash = made.hash
            if state == "revoked":
                revoke(li, grantee_type="tenant", grantee_id="beta")
        return
    if state == "expired":
        # A real grant that really runs out: no clock is faked. It is valid for
        # a second; the reads start only once that second is over.
        expires_at = timezone.now() + timedelta(seconds=1)
        with tenant_context(alpha):
            made = grant(
                li,
                grantee_type="tenant",
                grantee_id="beta",
                categories=ALL_LEVELS_GRANT,
                expires_at=expires_at,
            )
        world.grant_hash, world.grant_expires_at = made.hash, expires_at
        return
    if state == "emergency":
        with tenant_context(beta):
            doctor = User.objects.get(username="beta-doctor")
            emergency = emergency_declare(
                doctor=doctor, patient=world.li_beta, reason=EMERGENCY_REASON
            )
        world.emergency_hash = emergency.tx_hash
        return
    raise AssertionError(f"unknown state {state}")


def wait_for_expiry(world: World) -> None:
    if world.grant_expires_at is None:
        return
    while timezone.now() <= world.grant_expires_at:
        time.sleep(0.05)


# --- What a read returned ----------------------------------------------------------------


def _decoded_fhir_data(value, out: list[str]) -> None:
    """Every base64 ``data`` field of a FHIR document (notes travel as base64)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    out.append(base64.b64decode(item, validate=True).decode("utf-8", "replace"))
                except (binascii.Error, ValueError):
                    pass
            else:
                _decoded_fhir_data(item, out)
    elif isinstance(value, list):
        for item in value:
            _decoded_fhir_data(item, out)


def readable_text(response) -> str:
    """The body as text, with a FHIR bundle's base64 payloads decoded and added,
    so a marker hidden inside a DocumentReference is found too."""
    body = response.content.decode("utf-8", "replace")
    if "json" in response.get("Content-Type", ""):
        try:
            document = json.loads(body)
        except ValueError:
            return body
        decoded: list[str] = []
        _decoded_fhir_data(document, decoded)
        body = "\n".join([body, *decoded])
    return body


def entry_article(page: str, record_id) -> str:
    """The ``<article>`` of one entry on a chart or "my records" page, or ""."""
    start = page.find(f'id="entry-{record_id}"')
    if start < 0:
        return ""
    end = page.find("</article>", start)
    return page[start:end]


# --- The access log at alpha -------------------------------------------------------------


def log_last(tenant) -> int:
    with tenant_context(tenant):
        return AccessLogEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def log_since(tenant, after: int) -> list[AccessLogEntry]:
    with tenant_context(tenant):
        return list(AccessLogEntry.objects.filter(id__gt=after).order_by("id"))
