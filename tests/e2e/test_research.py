"""A research request in real Chromium, from the form to the dataset.

The live server and worker write to the committed test database the whole
session shares. This test only adds what no other test counts on: a new
request (its title is unique to the run), and opt-ins to it by Li Wei and by
one of the demo's research patients. Everything happens through the pages;
the worker does what a deployment's does (invites the matching patients after
an approval, seals blocks).
"""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from medportal.research.demo import AGGREGATE_TITLE, ROWS_TITLE
from tests.conftest import PASSWORD
from tests.e2e.conftest import DESKTOP, screenshot, sign_in
from tests.e2e.test_records import NAMES, main_button, no_horizontal_scroll, switch_user
from tests.research.helpers import PDF

pytestmark = [pytest.mark.e2e, pytest.mark.live]

DETAIL = re.compile(r"/research/([0-9a-f-]{36})/$")
NORTHWIND = "Northwind Research Institute"
# A demo patient seeded for research (medportal.research.demo): like Li Wei a
# woman in her early forties with I10 at Alpha, so that the two make a class of
# two (k=2) and the release carries rows rather than only suppressing them.
SECOND_PATIENT = "alpha-research-1"


def url_of(server, slug: str) -> str:
    return f"http://{slug}.localhost:{server.port}/"


def file_request(page, northwind: str, title: str) -> str:
    """As northwind-researcher: the form, filled in and submitted; returns the id."""
    page.goto(northwind)
    page.locator("nav[aria-label=Main]").get_by_role("link", name="Research requests").click()
    page.wait_for_url(northwind + "research/")
    page.locator("#content").get_by_role("link", name="New request").click()
    page.wait_for_url(northwind + "research/new/")
    page.fill("#id_title", title)
    page.fill("#id_purpose", "How blood pressure responds to first-line treatment.")
    page.fill("#id_investigator", "Dr Nora North")
    page.fill("#id_ethics_reference", "NW-REC-2026-E2E")
    page.set_input_files(
        "#id_ethics_document",
        files=[{"name": "approval.pdf", "mimeType": "application/pdf", "buffer": PDF}],
    )
    page.get_by_label("All of “Normal”").check()
    page.fill("#id_codes", "I10")
    page.get_by_label("De-identified rows", exact=False).check()
    page.fill("#id_k", "1")  # too small: refused beside the field, nothing sent
    page.fill("#id_expires_at", (timezone.localdate() + timedelta(days=60)).isoformat())
    with page.expect_navigation():
        main_button(page, "Submit").click()
    assert page.url == northwind + "research/new/"
    k_field = page.locator(".field.has-error", has=page.locator("#id_k"))
    assert k_field.locator(".field-errors").inner_text() == "Enter a number from 2 to 100."
    assert page.locator("#id_k").get_attribute("aria-invalid") == "true"
    assert page.locator("#id_title").input_value() == title
    assert page.get_by_label("Encounters", exact=True).is_checked()
    screenshot(page, "research-form-k-too-small-researcher-desktop")

    page.fill("#id_k", "2")
    page.set_input_files(
        "#id_ethics_document",
        files=[{"name": "approval.pdf", "mimeType": "application/pdf", "buffer": PDF}],
    )
    with page.expect_navigation():
        main_button(page, "Submit").click()
    found = DETAIL.search(page.url)
    assert found, page.locator("#content").inner_text()
    assert page.locator(".messages").inner_text().startswith("Your request was submitted")
    assert page.locator("[data-field=status]").inner_text() == "Open"
    fields = page.locator("dl.request-fields").inner_text()
    assert "Normal: Encounters, Diagnoses, Medications, Allergies, Vital signs, Lab results" in (
        fields
    )
    assert "ICD-10 codes\nI10\n" in fields
    return found.group(1)


def review_as_admin(page, alpha: str, title: str, request_id: str) -> None:
    switch_user(page, alpha, "alpha-admin", PASSWORD)
    page.wait_for_url(alpha)
    page.locator("nav[aria-label=Main]").get_by_role("link", name="Research requests").click()
    page.wait_for_url(alpha + "research/review/")
    row = page.locator(f'tr[data-request="{request_id}"]')
    assert NORTHWIND in row.inner_text()
    row.get_by_role("link", name=title).click()
    page.wait_for_url(alpha + f"research/review/{request_id}/")


def answer_invitation(page, alpha: str, username: str, request_id: str):
    """As a patient: the invitation, once the worker has made it."""
    switch_user(page, alpha, username, PASSWORD)
    page.wait_for_url(alpha)
    page.goto(alpha + "research/invitations/")
    card = page.locator(f"#request-{request_id}")
    deadline = time.monotonic() + 30
    while card.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)  # the approval's task invites the matching patients
        page.reload()
    assert card.count() == 1, page.locator("#content").inner_text()
    return card


def open_dataset(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as archive:
        assert {"dataset.csv", "dataset.ndjson", "README.txt"} <= set(archive.namelist())
        data = archive.read("dataset.csv").decode()
        everything = b"".join(archive.read(name) for name in archive.namelist())
    for identifying in (b"Wei", b"A-100234", b"li.wei@example.org", b"Aisha", b"Khan"):
        assert identifying not in everything, identifying
    return list(csv.DictReader(io.StringIO(data)))


def test_a_request_from_the_form_to_the_dataset(browser, desktop, live_server_process, live_worker):
    server = live_server_process
    northwind, alpha = url_of(server, "northwind"), url_of(server, "alpha")
    title = f"Blood pressure after diagnosis {uuid.uuid4().hex[:8]}"

    # The researcher files the request and keeps its page open.
    researcher = desktop
    sign_in(researcher, northwind, "northwind-researcher", PASSWORD)
    researcher.wait_for_url(northwind)
    request_id = file_request(researcher, northwind, title)
    detail = northwind + f"research/{request_id}/"
    researcher.wait_for_selector("#events-live[data-state=live]")
    assert "No hospital has answered yet." in researcher.locator("#request-live").inner_text()
    navigations = []
    researcher.on("framenavigated", lambda frame: navigations.append(frame.url))
    screenshot(researcher, "research-request-open-researcher-desktop")

    # Alpha's administrator reads it and approves, with a reason.
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    review_as_admin(page, alpha, title, request_id)
    assert "NW-REC-2026-E2E" in page.locator("dl.request-fields").inner_text()
    with page.expect_navigation():
        main_button(page, "Approve").click()
    reason = page.locator(".field.has-error", has=page.locator("#id_reason"))
    assert reason.locator(".field-errors").inner_text() == (
        "Give a reason: the organisation will see it."
    )
    page.fill("#id_reason", "Ethics approval and data protection review checked.")
    with page.expect_navigation():
        main_button(page, "Approve").click()
    assert page.locator(".messages").inner_text().startswith("You approved the request.")
    screenshot(page, "research-review-approved-alpha-admin-desktop")

    # The researcher's page follows without a reload.
    answer = researcher.locator('#request-live tr[data-hospital="alpha"]')
    answer.wait_for()
    assert "Approved" in answer.inner_text() and "data protection review" in answer.inner_text()
    assert "approved" in researcher.locator("#events-announcer").inner_text()

    # Li Wei is asked; a wrong password signs nothing; hers does.
    card = answer_invitation(page, alpha, "alpha-patient", request_id)
    assert card.locator(".invitation-status").inner_text().startswith("Not answered yet")
    assert NORTHWIND in card.inner_text() and title in card.inner_text()
    card.locator("input[name=password]").fill("not-her-password")
    with page.expect_navigation():
        card.get_by_role("button", name="Take part").click()
    card = page.locator(f"#request-{request_id}")
    assert card.locator(".field-errors").inner_text() == "That is not your password."
    assert card.locator(".invitation-status").inner_text().startswith("Not answered yet")
    screenshot(page, "research-invitation-wrong-password-alpha-patient-desktop")
    card.locator("input[name=password]").fill(PASSWORD)
    with page.expect_navigation():
        card.get_by_role("button", name="Take part").click()
    assert page.locator(".messages").inner_text().startswith("Thank you: you take part.")
    card = page.locator(f"#request-{request_id}")
    assert card.locator(".invitation-status").inner_text().startswith("Taking part")

    # A second woman of the same age band opts in, so that the two make a class of two.
    card = answer_invitation(page, alpha, SECOND_PATIENT, request_id)
    card.locator("input[name=password]").fill(PASSWORD)
    with page.expect_navigation():
        card.get_by_role("button", name="Take part").click()
    assert (
        page.locator(f"#request-{request_id} .invitation-status")
        .inner_text()
        .startswith("Taking part")
    )

    # Alpha releases its part.
    review_as_admin(page, alpha, title, request_id)
    assert "de-identified rows" in page.locator("#release").inner_text()
    with page.expect_navigation():
        main_button(page, "Release our part").click()
    # The worker makes the release in the background.
    assert "being prepared" in page.locator(".messages").inner_text()
    assert "Release being prepared" in page.locator("#release").inner_text()
    screenshot(page, "research-review-releasing-alpha-admin-desktop")

    # The researcher sees it arrive, checked against the chain, and downloads it.
    release = researcher.locator('#request-live article.release[data-hospital="alpha"]')
    release.wait_for(timeout=60_000)
    assert "Released" in answer.inner_text()
    assert "released its part" in researcher.locator("#events-announcer").inner_text()
    rows = int(release.locator("[data-field=rows]").inner_text())
    suppressed = int(release.locator("[data-field=suppressed]").inner_text().split()[0])
    assert rows > 0 and suppressed == 0
    # The admin is told too, and sees the release on the page.
    page.reload()
    assert "Release being prepared" not in page.content()
    assert page.locator("article.release").count() == 1
    screenshot(page, "research-review-released-alpha-admin-desktop")
    context.close()
    assert "The file matches the chain" in release.locator(".chain-check").inner_text()
    assert release.locator(".integrity-error").count() == 0
    assert navigations == []  # no reload
    # Withdrawing is no longer offered once something was released.
    assert researcher.locator("#request-live").get_by_text("Withdraw…").count() == 0
    screenshot(researcher, "research-request-released-researcher-desktop")
    with researcher.expect_download() as download:
        release.get_by_role("link", name=f"Download {NAMES['alpha']}'s dataset").click()
    assert download.value.suggested_filename == f"research-alpha-{request_id[:8]}.zip"
    dataset = open_dataset(Path(download.value.path()))
    assert len(dataset) == rows
    assert len({row["pseudonym"] for row in dataset}) == 2
    assert {(row["age_band"], row["sex"]) for row in dataset} == {("40-44", "female")}

    # Reloaded, the page says the same, with the block once it is sealed.
    researcher.goto(detail)
    assert "The file matches the chain" in researcher.locator(".chain-check").inner_text()


def test_the_request_form_and_the_invitations_fit_a_phone(phone, live_server_process):
    northwind = url_of(live_server_process, "northwind")
    alpha = url_of(live_server_process, "alpha")
    errors = []
    phone.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(phone, northwind, "northwind-researcher", PASSWORD)
    phone.wait_for_url(northwind)
    phone.goto(northwind + "research/new/")
    assert phone.locator("#content").get_by_role("button", name="Submit").is_visible()
    assert no_horizontal_scroll(phone)
    screenshot(phone, "research-form-researcher-phone")
    phone.goto(northwind + "research/")
    phone.wait_for_selector("#events-live[data-state=live]")
    assert no_horizontal_scroll(phone)
    # The demo's requests: a released dataset, and a table of counts.
    for title, name in ((ROWS_TITLE, "rows"), (AGGREGATE_TITLE, "aggregate")):
        phone.goto(northwind + "research/")
        phone.locator("#content").get_by_role("link", name=title).click()
        phone.wait_for_url(DETAIL)
        assert no_horizontal_scroll(phone)
        screenshot(phone, f"research-request-{name}-researcher-phone")

    # Without WebSocket the page still works and says how to see changes.
    without = phone.context.new_page()
    without.on("pageerror", lambda error: errors.append(str(error)))
    without.add_init_script("delete window.WebSocket;")
    without.goto(northwind + "research/")
    assert without.locator("#events-live").inner_text() == "Reload to see changes."
    without.close()

    switch_user(phone, alpha, "alpha-patient", PASSWORD)
    phone.wait_for_url(alpha)
    phone.goto(alpha + "research/invitations/")
    assert phone.locator("h1").inner_text() == "Research"
    assert phone.locator("#preference").get_by_role("button", name="Save").is_visible()
    assert no_horizontal_scroll(phone)
    screenshot(phone, "research-invitations-alpha-patient-phone")
    assert errors == []
