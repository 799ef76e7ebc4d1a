"""The consent policy matrix (issue 6, item 9).

Every reader (each role at each tenant) against one alpha entry of Li Wei's
with a normal, a restricted and a very restricted section, under each consent
state, through every read path the reader has: the page, the API and the FHIR
export. For each read: the sections the rules allow are in the body, the
others appear nowhere in it, and alpha's access log has an ``allow`` entry for
what was opened and a ``deny`` entry for what was withheld, whenever the read
reached alpha's records.

The expectations are written out below (``EXPECTED``, ``READS``) from the rules
in ``consent/policy.py``'s docstring and the README's "Consent: who may read
what" (``MEDPORTAL_EMERGENCY_LEVELS`` at its default, normal and restricted);
they are not computed by asking the policy.
"""

from __future__ import annotations

import pytest

from tests.conftest import login_client
from tests.consent.matrix_helpers import (
    LEVELS,
    SECOND_DOCTOR,
    entry_article,
    log_last,
    log_since,
    readable_text,
    second_alpha_doctor,
    state_apply,
    wait_for_expiry,
    world_build,
)

pytestmark = pytest.mark.django_db

N, R, V = "normal", "restricted", "very_restricted"

STATES = (
    "none",  # the demo grant to beta withdrawn, nothing else
    "grant",  # Li Wei grants tenant beta every level, for treatment
    "revoked",  # that grant, then withdrawn
    "expired",  # that grant with an expiry, read after the expiry
    "emergency",  # beta-doctor declared an emergency for Li Wei (at beta)
)

OWN_HOSPITAL = "default:own-hospital"
AUTHOR = "default:author"
OWN_RECORD = "own-record"
NEEDS_GRANT = "deny:very-restricted-needs-grant"
NO_GRANT = "deny:no-grant"
GRANT = "grant:{grant}"  # filled in with the state's grant transaction
EMERGENCY = "emergency:{emergency}"  # filled in with the emergency's transaction

# Readers who may not see Li Wei at all: every probe of her is refused.
NO_ACCESS = None

# reader -> state -> (levels the reader may read, reason logged for the opened
# sections, reason logged for the withheld ones); NO_ACCESS for outsiders.
EXPECTED: dict[str, dict[str, tuple[tuple[str, ...], str, str] | None]] = {
    # Staff of the hospital that wrote it: normal and restricted by default; very
    # restricted needs a grant to them, and the only grants here are beta's.
    "alpha-admin": {
        "none": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "grant": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "revoked": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "expired": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "emergency": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
    },
    # The author: all of it, always.
    "alpha-doctor": {
        "none": ((N, R, V), AUTHOR, ""),
        "grant": ((N, R, V), AUTHOR, ""),
        "revoked": ((N, R, V), AUTHOR, ""),
        "expired": ((N, R, V), AUTHOR, ""),
        "emergency": ((N, R, V), AUTHOR, ""),
    },
    "alpha-doctor-2": {
        "none": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "grant": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "revoked": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "expired": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
        "emergency": ((N, R), OWN_HOSPITAL, NEEDS_GRANT),
    },
    # The patient, from either linked account: all of their own entries.
    "alpha-patient": {
        "none": ((N, R, V), OWN_RECORD, ""),
        "grant": ((N, R, V), OWN_RECORD, ""),
        "revoked": ((N, R, V), OWN_RECORD, ""),
        "expired": ((N, R, V), OWN_RECORD, ""),
        "emergency": ((N, R, V), OWN_RECORD, ""),
    },
    "alpha-patient-2": {
        "none": NO_ACCESS,
        "grant": NO_ACCESS,
        "revoked": NO_ACCESS,
        "expired": NO_ACCESS,
        "emergency": NO_ACCESS,
    },
    # A doctor elsewhere: only a current grant (all levels here), or an
    # emergency (normal and restricted).
    "beta-doctor": {
        "none": ((), "", NO_GRANT),
        "grant": ((N, R, V), GRANT, ""),
        "revoked": ((), "", NO_GRANT),
        "expired": ((), "", NO_GRANT),
        "emergency": ((N, R), EMERGENCY, NO_GRANT),
    },
    "beta-patient": {
        "none": ((N, R, V), OWN_RECORD, ""),
        "grant": ((N, R, V), OWN_RECORD, ""),
        "revoked": ((N, R, V), OWN_RECORD, ""),
        "expired": ((N, R, V), OWN_RECORD, ""),
        "emergency": ((N, R, V), OWN_RECORD, ""),
    },
    "beta-patient-2": {
        "none": NO_ACCESS,
        "grant": NO_ACCESS,
        "revoked": NO_ACCESS,
        "expired": NO_ACCESS,
        "emergency": NO_ACCESS,
    },
    "northwind-researcher": {
        "none": NO_ACCESS,
        "grant": NO_ACCESS,
        "revoked": NO_ACCESS,
        "expired": NO_ACCESS,
        "emergency": NO_ACCESS,
    },
    "operator": {
        "none": NO_ACCESS,
        "grant": NO_ACCESS,
        "revoked": NO_ACCESS,
        "expired": NO_ACCESS,
        "emergency": NO_ACCESS,
    },
}

# How each kind of read is judged:
POLICY = "policy"  # reaches alpha's record: EXPECTED decides, alpha logs it
OWN_ONLY = "own-only"  # a patient's own history: someone else's entry is not in it
REFUSED = "refused"  # 403/404, nothing of the patient or the entry

NOT_OWN_PROFILE = "deny:not-own-profile"
NOT_OWN_RECORD = "deny:not-own-record"

# The reads: (name, URL, how it is judged, the refusal logged about Li Wei as
# (hospital, reason), or None for no log entry about her). ``{li}`` is Li Wei's
# patient id at the reader's tenant (her alpha id where she has none there);
# ``{record}`` the matrix entry's id.
STAFF_AT_ORIGIN = [
    ("page", "/records/patients/{li}/", POLICY, None),
    ("api", "/api/v1/records/?patient={li}", POLICY, None),
    ("api-one", "/api/v1/records/{record}/", POLICY, None),
    ("fhir", "/api/v1/patients/{li}/fhir", POLICY, None),
]
THE_PATIENT = [
    ("page", "/records/mine/", POLICY, None),
    ("api", "/api/v1/records/", POLICY, None),
    ("api-one", "/api/v1/records/{record}/", POLICY, None),
    ("fhir", "/api/v1/patients/{li}/fhir", POLICY, None),
]
OUTSIDER = [
    ("page", "/records/patients/{li}/", REFUSED, None),
    ("page-mine", "/records/mine/", REFUSED, None),
    ("api", "/api/v1/records/?patient={li}", REFUSED, None),
    ("api-one", "/api/v1/records/{record}/", REFUSED, None),
    ("fhir", "/api/v1/patients/{li}/fhir", REFUSED, None),
]

# reader -> (tenant where they sign in, their reads)
READS: dict[str, tuple[str, list[tuple[str, str, str, tuple[str, str] | None]]]] = {
    "alpha-admin": ("alpha", STAFF_AT_ORIGIN),
    "alpha-doctor": ("alpha", STAFF_AT_ORIGIN),
    "alpha-doctor-2": ("alpha", STAFF_AT_ORIGIN),
    "alpha-patient": ("alpha", THE_PATIENT),
    "alpha-patient-2": (
        "alpha",
        [
            ("page", "/records/mine/", OWN_ONLY, None),
            ("api", "/api/v1/records/", OWN_ONLY, None),
            ("api-li", "/api/v1/records/?patient={li}", REFUSED, ("alpha", NOT_OWN_PROFILE)),
            ("api-one", "/api/v1/records/{record}/", REFUSED, ("alpha", NOT_OWN_RECORD)),
            ("fhir", "/api/v1/patients/{li}/fhir", REFUSED, ("alpha", NOT_OWN_PROFILE)),
        ],
    ),
    # The chart, the records API and the FHIR export read alpha's entries through
    # the hub's exchange; one entry by id is looked up in beta's own tables only,
    # so alpha's entry is "not found" there whatever the consent.
    "beta-doctor": (
        "beta",
        [
            ("page", "/records/patients/{li}/", POLICY, None),
            ("api", "/api/v1/records/?patient={li}", POLICY, None),
            ("api-one", "/api/v1/records/{record}/", REFUSED, None),
            ("fhir", "/api/v1/patients/{li}/fhir", POLICY, None),
        ],
    ),
    "beta-patient": ("beta", THE_PATIENT),
    "beta-patient-2": (
        "beta",
        [
            ("page", "/records/mine/", OWN_ONLY, None),
            ("api", "/api/v1/records/", OWN_ONLY, None),
            ("api-li", "/api/v1/records/?patient={li}", REFUSED, ("beta", NOT_OWN_PROFILE)),
            # The entry is alpha's; beta holds no such record, so nothing is logged
            # (records.selectors._log_if_exists logs only what exists "here").
            ("api-one", "/api/v1/records/{record}/", REFUSED, None),
            ("fhir", "/api/v1/patients/{li}/fhir", REFUSED, ("beta", NOT_OWN_PROFILE)),
        ],
    ),
    "northwind-researcher": ("northwind", OUTSIDER),
    "operator": ("hub", OUTSIDER),
}

USERNAMES = {"alpha-doctor-2": SECOND_DOCTOR}

CASES = [(reader, state) for reader in EXPECTED for state in STATES]


def test_the_table_covers_every_reader_and_state():
    assert set(EXPECTED) == set(READS)
    assert all(set(row) == set(STATES) for row in EXPECTED.values())
    for reader, row in EXPECTED.items():
        reaches = any(mode == POLICY for _, _, mode, _ in READS[reader][1])
        assert reaches == all(cell is not NO_ACCESS for cell in row.values()), reader


@pytest.fixture
def emergency_levels_default(settings):
    """The table assumes the documented default: normal and restricted."""
    settings.MEDPORTAL_EMERGENCY_LEVELS = ["normal", "restricted"]


def _check_policy_read(
    *, where, response, world, cell, reader_tenant, read, elsewhere, alpha, before
):
    levels, allow_reason, deny_reason = cell
    hidden = tuple(level for level in LEVELS if level not in levels)
    assert response.status_code == 200, where
    text = readable_text(response)
    record_id = str(world.record.id)
    for level in LEVELS:
        marker = world.markers[level]
        if level in levels:
            assert marker in text, f"{where}: the {level} section is missing"
        else:
            assert marker not in text, f"{where}: the {level} section leaked"
    if V in hidden:
        assert "F32.9" not in text, f"{where}: the very restricted diagnosis code leaked"

    # The entry itself is there (it exists, where and when), with what is withheld named.
    if read == "page":
        article = entry_article(text, record_id)
        assert article, f"{where}: the entry is not on the page"
        if elsewhere:  # under "From other hospitals"
            assert text.index('id="elsewhere"') < text.index(f'id="entry-{record_id}"'), where
        if hidden:
            withheld = article.split('data-withheld="', 1)[1].split('"', 1)[0].split()
            assert set(withheld) == set(hidden), where
        else:
            assert "data-withheld" not in article, where
    elif read == "api":
        rows = {row["id"]: row for row in response.json()}
        assert record_id in rows, f"{where}: the entry is not listed"
        assert (rows[record_id]["content"] is None) == (not levels), where
    elif read == "api-one":
        row = response.json()
        assert row["id"] == record_id, where
        assert (row["content"] is None) == (not levels), where
    elif read == "fhir":
        assert (record_id in text) == (N in levels), where

    # Alpha's access log: one allow entry for what opened, one deny for the rest.
    reason_of = {"": ""}
    for template in (allow_reason, deny_reason):
        reason_of[template] = template.format(
            grant=world.grant_hash, emergency=world.emergency_hash
        )
    expected = []
    if levels:
        is_emergency = allow_reason == EMERGENCY
        expected.append(("allow", sorted(levels), reason_of[allow_reason], is_emergency))
    if hidden:
        expected.append(("deny", sorted(hidden), reason_of[deny_reason], False))
    entries = [e for e in log_since(alpha, before) if e.record_id == record_id]
    got = [(e.decision, sorted(e.sections), e.reason, e.is_emergency) for e in entries]
    assert sorted(got) == sorted(expected), f"{where}: alpha's access log"
    assert {e.reader_tenant for e in entries} == {reader_tenant}, where


def _check_no_sight(*, where, response, world, mode, hospitals, before, refusal):
    if mode == REFUSED:
        assert response.status_code in (403, 404), f"{where}: {response.status_code}"
    else:
        assert response.status_code == 200, where
    text = readable_text(response)
    for level in LEVELS:
        assert world.markers[level] not in text, f"{where}: the {level} section leaked"
    assert "F32.9" not in text, f"{where}: the very restricted diagnosis code leaked"
    assert str(world.record.id) not in text, f"{where}: the entry's existence leaked"
    about_li = [
        (slug, e.decision, e.reason, e.record_id)
        for slug, tenant in hospitals.items()
        for e in log_since(tenant, before[slug])
        if e.patient_pseudonym in world.pseudonyms
    ]
    if mode == REFUSED:
        # A refused attempt at someone who exists where it was made is logged
        # there (a deny, nothing opened); anything else leaves no trace about her.
        expected = []
        if refusal is not None:
            slug, reason = refusal
            record_id = str(world.record.id) if reason == NOT_OWN_RECORD else ""
            expected = [(slug, "deny", reason, record_id)]
        assert about_li == expected, f"{where}: access logs"
    else:
        assert [row for row in about_li if row[0] == "alpha"] == [], f"{where}: alpha's log"


@pytest.mark.parametrize(("reader", "state"), CASES, ids=[f"{r}-{s}" for r, s in CASES])
def test_policy_matrix(reader, state, hub, alpha, beta, northwind, emergency_levels_default):
    tenants = {"hub": hub, "alpha": alpha, "beta": beta, "northwind": northwind}
    if reader == "alpha-doctor-2":
        second_alpha_doctor(alpha)
    world = world_build(alpha, beta)
    state_apply(state, world, alpha, beta)
    tenant_slug, reads = READS[reader]
    client = login_client(tenants[tenant_slug], USERNAMES.get(reader, reader))
    wait_for_expiry(world)
    li = world.li_beta.id if tenant_slug == "beta" else world.li_alpha.id
    cell = EXPECTED[reader][state]
    hospitals = {"alpha": alpha, "beta": beta}
    for read, template, mode, refusal in reads:
        where = f"{reader} / {state} / {read}"
        url = template.format(li=li, record=world.record.id)
        before = {slug: log_last(tenant) for slug, tenant in hospitals.items()}
        response = client.get(url)
        if mode == POLICY:
            _check_policy_read(
                where=where,
                response=response,
                world=world,
                cell=cell,
                reader_tenant=tenant_slug,
                read=read,
                elsewhere=template.startswith("/records/patients/") and tenant_slug != "alpha",
                alpha=alpha,
                before=before["alpha"],
            )
        else:
            _check_no_sight(
                where=where,
                response=response,
                world=world,
                mode=mode,
                hospitals=hospitals,
                before=before,
                refusal=refusal,
            )
