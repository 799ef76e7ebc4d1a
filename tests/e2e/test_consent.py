"""Consent in real Chromium: granting, revoking, requesting and emergency access.

The live server writes to the committed test database that the whole session
shares, and other tests rely on the demo patients' consent (Li Wei's grant to
Beta) staying as it is: so these tests never touch a demo patient. Each test
registers its own person at both hospitals through the pages (unique names,
record numbers and usernames), has Alpha's doctor write an entry, and lets the
patient link her two accounts; every consent change is hers alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, PROJECT_ROOT, child_environment
from tests.e2e.conftest import screenshot, sign_in
from tests.e2e.test_records import (
    NAMES,
    NewPatient,
    base_url,
    fill_entry,
    first_sign_in,
    main_button,
    no_horizontal_scroll,
    register_patient,
    switch_user,
)

pytestmark = [pytest.mark.e2e, pytest.mark.live]

BETA_DOCTOR = "Ben Brown"
NOT_SHARED = "This entry is not shared with you"
PARTLY_SHARED = "Part of this entry is not shared with you"
# What Beta's doctor asks for, and the part the patient approves.
ASKED = ("Encounters", "Diagnoses", "Medications", "Vital signs", "Clinical notes")
APPROVED = ASKED[:4]
SHARED_TEXT = "Normal: Encounters, Diagnoses, Medications, Vital signs"
RECEIPT = re.compile(r"/consent/sharing/\?receipt=([0-9a-f]{64})(#grant)?$")

# The hub registers a patient's signing key when the block holding her
# ``identity`` transaction is sealed; until then the hub refuses what she signs.
# A worker seals within CHAIN_MAX_BLOCK_WAIT_MS; no worker runs beside the live
# server, so the test seals what waits, in a child process (Playwright's event
# loop on this thread would break the services' on-commit push).
SEAL = textwrap.dedent(
    """
    import django

    django.setup()

    from chain.services import block_seal

    block_seal(force=True)
    """
)


def seal_blocks() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SEAL],
        cwd=PROJECT_ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@dataclass
class Linked:
    """A new person with an account at each hospital, linked, and one Alpha entry."""

    person: NewPatient
    alpha: str
    beta: str
    alpha_id: str
    beta_id: str
    department: str

    @property
    def beta_chart(self) -> str:
        return self.beta + f"records/patients/{self.beta_id}/"


def write_alpha_entry(page, linked_alpha: str, patient_id: str, department: str) -> None:
    """As Alpha's doctor: an entry with normal data, a clinical note (restricted)
    and a mental-health note (very restricted)."""
    page.goto(linked_alpha + f"records/patients/{patient_id}/")
    page.locator("#content").get_by_role("link", name="New entry").click()
    page.wait_for_url(linked_alpha + f"records/patients/{patient_id}/new/")
    fill_entry(
        page,
        department=department,
        complaint="Thirst and tiredness",
        icd10="E11.9",
        drug="Metformin",
        pulse="72",
    )
    page.select_option("#id_notes-0-category", "clinical_notes")
    page.fill("#id_notes-0-text", "Restricted note: discussed diet at length")
    page.select_option("#id_notes-1-category", "mental_health")
    page.fill("#id_notes-1-text", "Very restricted note: low mood since spring")
    main_button(page, "Save the entry").click()
    page.wait_for_url(linked_alpha + f"records/patients/{patient_id}/")
    assert page.locator(".messages").inner_text() == "The entry was saved."


def linked_patient(page, server, label: str) -> Linked:
    """Registered at Alpha (with an entry) and at Beta, accounts linked by the patient."""
    alpha, beta = base_url(server, "alpha"), base_url(server, "beta")
    person = NewPatient.make(label)
    department = f"Endocrinology {person.family_name}"

    sign_in(page, alpha, "alpha-doctor", PASSWORD)
    page.wait_for_url(alpha)
    alpha_id = register_patient(page, alpha, person, "alpha")
    write_alpha_entry(page, alpha, alpha_id, department)

    switch_user(page, beta, "beta-doctor", PASSWORD)
    page.wait_for_url(beta)
    beta_id = register_patient(page, beta, person, "beta")
    seal_blocks()  # both accounts' keys

    first_sign_in(page, alpha, person, "alpha")
    page.goto(alpha + "records/link/")
    page.fill("#id_create_password", person.password)
    main_button(page, "Make a code").click()
    code = page.locator(".link-code code").inner_text().strip()

    first_sign_in(page, beta, person, "beta")
    page.goto(beta + "records/link/")
    page.fill("#id_code", code)
    page.fill("#id_redeem_password", person.password)
    main_button(page, "Link").click()
    page.wait_for_url(beta + "records/mine/")
    assert page.locator(".messages").inner_text().startswith("Your accounts are linked")
    seal_blocks()  # the link
    return Linked(person, alpha, beta, alpha_id, beta_id, department)


def alpha_entry(page):
    """On Beta's chart: the one entry read from Alpha through the exchange."""
    section = page.locator("#elsewhere")
    assert section.inner_text() == "From other hospitals"
    entry = page.locator("article.entry-elsewhere")
    assert entry.count() == 1
    assert entry.locator(".entry-hospital").inner_text() == NAMES["alpha"]
    return entry


def open_beta_chart_as_doctor(page, linked: Linked):
    switch_user(page, linked.beta, "beta-doctor", PASSWORD)
    page.wait_for_url(linked.beta)
    page.goto(linked.beta_chart)
    assert page.locator("h1").inner_text() == linked.person.full_name
    return alpha_entry(page)


def assert_not_shared(entry, department: str) -> None:
    text = entry.inner_text()
    assert entry.locator(".withheld").inner_text().startswith(NOT_SHARED)
    assert department not in text
    assert "Thirst" not in text and "E11.9" not in text and "Metformin" not in text
    assert "note" not in text.lower().replace("not shared", "")


def sign_in_patient(page, url: str, linked: Linked, slug: str) -> None:
    switch_user(page, url, linked.person.usernames[slug], linked.person.password)
    page.wait_for_url(url)


def open_sharing(page, url: str) -> None:
    page.goto(url)
    page.locator("nav[aria-label=Main]").get_by_role("link", name="Sharing", exact=True).click()
    page.wait_for_url(url + "consent/sharing/")
    assert page.locator("h1").inner_text() == "Sharing"


def grant_form(page):
    return page.locator("#grant")


def check_receipt(page, tx_hash: str) -> None:
    """The notice links the signed transaction as a JSON download."""
    notice = page.locator("#content p.notice[role=status]")
    assert notice.inner_text().startswith("Your change is recorded.")
    assert tx_hash[:14] in notice.locator("code").inner_text()
    with page.expect_download() as download:
        notice.get_by_role("link", name="Download the receipt").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt["hash"] == tx_hash
    assert receipt["kind"] == "access"
    assert receipt["signature"]


def test_a_patient_grants_a_hospital_and_revokes_it(desktop, phone, live_server_process):
    page = desktop
    linked = linked_patient(page, live_server_process, "Grant")
    alpha, department = linked.alpha, linked.department

    # Without consent, Beta's doctor sees that Alpha holds an entry, not what is in it.
    entry = open_beta_chart_as_doctor(page, linked)
    assert_not_shared(entry, department)
    screenshot(page, "consent-chart-not-shared-beta-doctor-desktop")

    # The patient, at Alpha, opens Sharing: nothing shared yet.
    sign_in_patient(page, alpha, linked, "alpha")
    open_sharing(page, alpha)
    assert page.locator(".grant-list").count() == 0
    assert "You have not shared your records with anyone." in page.locator("#content").inner_text()

    # A wrong password: nothing is shared, the choices are kept.
    form = grant_form(page)
    form.get_by_label(f"All doctors at {NAMES['beta']}").check()
    form.get_by_label("All of “Normal”").check()
    assert form.get_by_label("Treatment", exact=True).is_checked()  # the default purpose
    page.fill("#id_password", "not-her-password")
    with page.expect_navigation():
        form.get_by_role("button", name="Share").click()
    assert page.locator("#grant .errors[role=alert]").inner_text().startswith("Nothing was shared.")
    password_field = page.locator(".field.has-error", has=page.locator("#id_password"))
    assert password_field.locator(".field-errors").inner_text() == "That is not your password."
    assert form.get_by_label(f"All doctors at {NAMES['beta']}").is_checked()
    assert form.get_by_label("All of “Normal”").is_checked()
    assert page.locator("#id_password").input_value() == ""
    assert page.locator(".grant-list").count() == 0
    screenshot(page, "consent-sharing-wrong-password-alpha-patient-desktop")

    # The right password: the grant is signed and recorded, with a receipt.
    page.fill("#id_password", linked.person.password)
    with page.expect_navigation():
        form.get_by_role("button", name="Share").click()
    found = RECEIPT.search(page.url)
    assert found, page.locator("#content").inner_text()
    tx_hash = found.group(1)
    assert page.locator(".messages").inner_text() == f"Access granted. Transaction {tx_hash}."
    check_receipt(page, tx_hash)
    grants = page.locator(".grant-list li.grant")
    assert grants.count() == 1
    grant = grants.first
    assert grant.locator("p").first.inner_text() == (
        f"All doctors at {NAMES['beta']} may read, for treatment:"
    )
    normal = grant.locator(".category-groups li")
    assert normal.count() == 1
    assert normal.inner_text().startswith("Normal: Demographics, Encounters, Diagnoses")
    assert "No end date" in grant.locator(".hint").inner_text()
    screenshot(page, "consent-sharing-granted-alpha-patient-desktop")

    # The Sharing page on a phone: the grant and both forms fit the width.
    sign_in(phone, alpha, linked.person.usernames["alpha"], linked.person.password)
    phone.wait_for_url(alpha)
    phone.goto(alpha + "consent/sharing/")
    assert phone.locator(".grant-list li.grant").count() == 1
    assert phone.locator("#grant").get_by_role("button", name="Share").is_visible()
    assert no_horizontal_scroll(phone)
    screenshot(phone, "consent-sharing-alpha-patient-phone")

    # Beta's doctor reloads: Alpha's normal sections are readable, the rest is not.
    entry = open_beta_chart_as_doctor(page, linked)
    assert entry.locator("h3").inner_text().endswith(department)
    assert entry.locator(".entry-complaint").inner_text() == "Complaint: Thirst and tiredness"
    diagnosis = entry.locator("h4:has-text('Diagnoses') + ul li").inner_text()
    assert diagnosis.startswith("E11.9 Type 2 diabetes mellitus")
    assert "Metformin" in entry.locator("h4:has-text('Medications') + ul").inner_text()
    assert entry.locator("ul.vitals li").inner_text() == "Heart rate: 72 /min"
    assert "Restricted note" not in entry.inner_text()
    assert "Very restricted note" not in entry.inner_text()
    assert entry.locator(".withheld").inner_text().startswith(PARTLY_SHARED)
    withheld = entry.locator(".withheld").get_attribute("data-withheld").split()
    assert "normal" not in withheld and "restricted" in withheld
    screenshot(page, "consent-chart-shared-beta-doctor-desktop")

    # The patient revokes it, with her password again.
    sign_in_patient(page, alpha, linked, "alpha")
    open_sharing(page, alpha)
    grant = page.locator(".grant-list li.grant")
    grant.locator("input[name=password]").fill(linked.person.password)
    with page.expect_navigation():
        grant.get_by_role("button", name="Revoke").click()
    tx_hash = RECEIPT.search(page.url).group(1)
    assert page.locator(".messages").inner_text() == f"Access revoked. Transaction {tx_hash}."
    check_receipt(page, tx_hash)
    assert page.locator(".grant-list li.grant").count() == 0
    assert "You have not shared your records with anyone." in page.locator("#content").inner_text()
    screenshot(page, "consent-sharing-revoked-alpha-patient-desktop")

    # Beta's doctor reloads: not shared again.
    entry = open_beta_chart_as_doctor(page, linked)
    assert_not_shared(entry, department)


def test_a_doctor_requests_access_and_the_patient_approves_part_of_it(desktop, live_server_process):
    page = desktop
    linked = linked_patient(page, live_server_process, "Request")
    beta, department = linked.beta, linked.department
    reason = f"Starting insulin; need the diabetes history ({uuid.uuid4().hex[:6]})"

    # Beta's doctor asks from the chart.
    entry = open_beta_chart_as_doctor(page, linked)
    assert_not_shared(entry, department)
    page.locator("#content").get_by_role("link", name="Request access").click()
    page.wait_for_url(beta + f"consent/patients/{linked.beta_id}/request/")
    assert (
        page.locator("h1").inner_text()
        == f"Request access to {linked.person.full_name}\u2019s records"
    )
    # Nothing ticked: the request is not sent, the reason is kept.
    page.fill("#id_reason", reason)
    with page.expect_navigation():
        main_button(page, "Send the request").click()
    assert page.locator(".errors[role=alert]").inner_text().startswith("The request was not sent.")
    assert page.locator("fieldset.categories.has-error .field-errors").count() == 1
    assert page.locator("#id_reason").input_value() == reason
    categories = page.locator("fieldset.categories .category-list")
    for label in ASKED:
        categories.get_by_label(label, exact=True).check()
    with page.expect_navigation():
        main_button(page, "Send the request").click()
    assert page.url == beta + "consent/requests/"
    assert page.locator(".messages").inner_text() == "Your request was sent to the patient."
    mine = page.locator("li.access-request", has=page.locator(f"a[href$='{linked.beta_id}/']"))
    assert mine.count() == 1
    assert "Waiting for the patient" in mine.inner_text()
    assert mine.locator("blockquote.reason").inner_text() == reason
    screenshot(page, "consent-requests-pending-beta-doctor-desktop")

    # The patient sees it on Sharing (at Beta) and is told in her notifications.
    sign_in_patient(page, beta, linked, "beta")
    page.goto(beta + "consent/notifications/")
    assert page.locator("li.notification", has_text=BETA_DOCTOR).count() >= 1
    open_sharing(page, beta)
    waiting = page.locator("#requests article.access-request")
    assert waiting.count() == 1
    assert (
        waiting.locator("p")
        .first.inner_text()
        .startswith(f"{BETA_DOCTOR}, {NAMES['beta']}, asks to read for treatment")
    )
    assert waiting.locator(".category-groups").inner_text() == (
        "Normal: Encounters, Diagnoses, Medications, Vital signs\nRestricted: Clinical notes"
    )
    assert waiting.locator("blockquote.reason").inner_text() == reason
    screenshot(page, "consent-sharing-request-beta-patient-desktop")

    # A wrong password answers nothing.
    for label in APPROVED:
        waiting.get_by_label(label, exact=True).check()
    waiting.locator("input[name=password]").fill("not-her-password")
    with page.expect_navigation():
        waiting.get_by_role("button", name="Approve the ones ticked").click()
    assert page.locator(".messages").inner_text() == "That is not your password."
    waiting = page.locator("#requests article.access-request")
    assert waiting.count() == 1

    # She approves the normal sections, not the clinical notes. (A grant opens a
    # section only if it covers every category in it: this entry's normal section
    # holds an encounter, diagnoses, medications and vital signs.)
    for label in APPROVED:
        waiting.get_by_label(label, exact=True).check()
    waiting.locator("input[name=password]").fill(linked.person.password)
    with page.expect_navigation():
        waiting.get_by_role("button", name="Approve the ones ticked").click()
    tx_hash = RECEIPT.search(page.url).group(1)
    assert page.locator(".messages").inner_text() == (
        f"You shared what you chose. Transaction {tx_hash}."
    )
    assert page.locator("#requests").count() == 0
    grant = page.locator(".grant-list li.grant")
    assert grant.count() == 1
    assert grant.locator("p").first.inner_text().startswith(BETA_DOCTOR)
    assert grant.locator(".category-groups").inner_text() == SHARED_TEXT
    answered = page.locator("section", has=page.locator("h2", has_text="Requests you answered"))
    assert BETA_DOCTOR in answered.inner_text()
    screenshot(page, "consent-sharing-request-answered-beta-patient-desktop")

    # Beta's doctor sees the answer, once marked new.
    switch_user(page, beta, "beta-doctor", PASSWORD)
    page.wait_for_url(beta)
    page.goto(beta + "consent/requests/")
    mine = page.locator("li.access-request", has=page.locator(f"a[href$='{linked.beta_id}/']"))
    assert mine.locator(".badge", has_text="New answer").count() == 1
    assert "Waiting for the patient" not in mine.inner_text()
    shared = mine.locator(".category-groups").nth(1)
    assert shared.inner_text() == SHARED_TEXT
    screenshot(page, "consent-requests-answered-beta-doctor-desktop")
    page.reload()
    mine = page.locator("li.access-request", has=page.locator(f"a[href$='{linked.beta_id}/']"))
    assert mine.locator(".badge", has_text="New answer").count() == 0

    # On the chart: the normal sections, not the clinical note.
    mine.get_by_role("link", name="Patient chart").click()
    page.wait_for_url(linked.beta_chart)
    entry = alpha_entry(page)
    assert entry.locator("h3").inner_text().endswith(department)
    assert entry.locator(".entry-complaint").inner_text() == "Complaint: Thirst and tiredness"
    assert "E11.9" in entry.locator("h4:has-text('Diagnoses') + ul").inner_text()
    assert "Metformin" in entry.locator("h4:has-text('Medications') + ul").inner_text()
    assert entry.locator("ul.vitals li").inner_text() == "Heart rate: 72 /min"
    assert "note" not in entry.inner_text().lower().replace("not shared", "")
    assert entry.locator(".withheld").inner_text().startswith(PARTLY_SHARED)
    withheld = entry.locator(".withheld").get_attribute("data-withheld").split()
    assert withheld == ["restricted", "very_restricted"]
    screenshot(page, "consent-chart-request-approved-beta-doctor-desktop")


def test_emergency_access_opens_the_chart_and_the_patient_is_told(desktop, live_server_process):
    page = desktop
    linked = linked_patient(page, live_server_process, "Emergency")
    alpha, beta, department = linked.alpha, linked.beta, linked.department
    reason = f"Found unconscious in the waiting room ({uuid.uuid4().hex[:6]})"

    entry = open_beta_chart_as_doctor(page, linked)
    assert_not_shared(entry, department)
    page.locator("#content").get_by_role("link", name="Emergency access").click()
    page.wait_for_url(beta + f"consent/patients/{linked.beta_id}/emergency/")
    assert page.locator("h1").inner_text() == f"Emergency access for {linked.person.full_name}"
    terms = page.locator("ul.emergency-terms").inner_text()
    assert "normal and restricted" in terms
    # Too short a reason is refused, and kept for correcting.
    page.get_by_label("Why is this an emergency?").fill("Urgent")
    with page.expect_navigation():
        main_button(page, "Declare emergency access").click()
    assert page.url == beta + f"consent/patients/{linked.beta_id}/emergency/"
    assert page.locator("#id_reason").get_attribute("aria-invalid") == "true"
    assert page.locator("#id_reason").input_value() == "Urgent"
    screenshot(page, "consent-emergency-short-reason-beta-doctor-desktop")
    page.get_by_label("Why is this an emergency?").fill(reason)
    with page.expect_navigation():
        main_button(page, "Declare emergency access").click()
    assert page.url == linked.beta_chart
    assert page.locator(".messages").inner_text().startswith("Emergency access declared until")

    # Normal and restricted sections from Alpha are open; very restricted stays closed.
    entry = alpha_entry(page)
    assert entry.locator("h3").inner_text().endswith(department)
    assert "E11.9" in entry.locator("h4:has-text('Diagnoses') + ul").inner_text()
    assert "Metformin" in entry.inner_text()
    assert "Restricted note: discussed diet at length" in entry.locator(".entry-note").inner_text()
    assert "Very restricted note" not in entry.inner_text()
    withheld = entry.locator(".withheld").get_attribute("data-withheld").split()
    assert withheld == ["very_restricted"]
    screenshot(page, "consent-chart-emergency-beta-doctor-desktop")

    # The patient is told at Alpha too, and the read is marked in her log.
    sign_in_patient(page, alpha, linked, "alpha")
    page.goto(alpha + "consent/notifications/")
    told = page.locator("li.notification", has_text="declared an emergency access")
    assert told.count() == 1
    assert told.locator(".badge").inner_text() == "Emergency access"
    assert f"{BETA_DOCTOR} at {NAMES['beta']}" in told.inner_text()
    assert "is-unread" in told.get_attribute("class")
    screenshot(page, "consent-notifications-alpha-patient-desktop")
    main_button(page, "Mark all read").click()
    page.wait_for_url(alpha + "consent/notifications/")
    assert page.locator("li.notification.is-unread").count() == 0

    page.locator("nav[aria-label=Main]").get_by_role("link", name="Who saw my records").click()
    page.wait_for_url(alpha + "consent/access-log/")
    emergencies = page.locator("tr.access-log-row.is-emergency")
    assert emergencies.count() >= 1
    read = emergencies.first
    assert BETA_DOCTOR in read.locator("td[data-label=Who]").inner_text()
    assert f"Entry at {NAMES['alpha']}" in read.locator("td[data-label=What]").inner_text()
    assert read.locator(".badge-emergency").inner_text() == "Emergency"
    assert read.locator(".badge-ok").inner_text() == "Allowed"
    # Highlighted: an emergency row is drawn unlike an ordinary one.
    # The refused read from before the emergency is there as well, drawn otherwise.
    refused = page.locator("tr.access-log-row.is-denied:not(.is-emergency)")
    assert refused.count() >= 1
    style = "el => getComputedStyle(el).backgroundColor + getComputedStyle(el).borderLeftColor"
    assert read.evaluate(style) != refused.first.evaluate(style)
    page.get_by_label("Emergencies only").check()
    with page.expect_navigation():
        main_button(page, "Show").click()
    assert page.locator("tr.access-log-row").count() == emergencies.count()
    assert page.locator("tr.access-log-row:not(.is-emergency)").count() == 0
    screenshot(page, "consent-access-log-emergency-alpha-patient-desktop")

    # Beta's administrator reviews it.
    switch_user(page, beta, "beta-admin", PASSWORD)
    page.wait_for_url(beta)
    page.goto(beta + "consent/emergencies/")
    review = page.locator("section.emergency-review", has_text=linked.person.full_name)
    assert review.count() == 1
    assert "is-pending" in review.get_attribute("class")
    assert review.locator(".emergency-reason").inner_text() == reason
    assert BETA_DOCTOR in review.locator("dl").inner_text()
    review.get_by_label("Note (optional)").fill("Checked with the ward: justified.")
    with page.expect_navigation():
        review.get_by_role("button", name="Justified", exact=True).click()
    assert page.locator(".messages").inner_text() == "The review was saved."
    review = page.locator("section.emergency-review", has_text=linked.person.full_name)
    assert "is-pending" not in review.get_attribute("class")
    assert review.locator(".badge").inner_text() == "Justified"
    assert "Checked with the ward" in review.inner_text()
    screenshot(page, "consent-emergency-reviewed-beta-admin-desktop")
