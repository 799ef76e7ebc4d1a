"""The record pages in real Chromium, on a desktop and on a phone.

The live server writes to the committed test database that the whole session
shares, and other tests count the demo patients' entries: so these tests never
write for a demo patient. Each run registers its own patients (unique record
numbers and usernames) through the pages and writes for them only.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import DESKTOP, PHONE, screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.live]

HOSTS = {"alpha": "alpha.localhost", "beta": "beta.localhost"}
NAMES = {"alpha": "Alpha General Hospital", "beta": "Beta University Hospital"}
CHART = re.compile(r"/records/patients/([0-9a-f-]{36})/$")
CHAIN_MARK = ".entry-meta .badge-ok, .entry-meta .badge-pending"


def base_url(server, slug: str) -> str:
    return f"http://{HOSTS[slug]}:{server.port}/"


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


@dataclass
class NewPatient:
    """A person registered by this test run, never a demo patient."""

    given_name: str
    family_name: str
    birth_date: str
    sex: str
    record_numbers: dict[str, str]
    usernames: dict[str, str]
    temporary_password: str
    password: str

    @classmethod
    def make(cls, label: str) -> NewPatient:
        tag = uuid.uuid4().hex[:10]
        secret = uuid.uuid4().hex[:12]  # unlike the username, or the validators refuse it
        return cls(
            given_name=f"E2e{label}",
            family_name=f"Tester{tag}",
            birth_date="1979-03-14",
            sex="female",
            record_numbers={"alpha": f"A-E2E-{tag}", "beta": f"B-E2E-{tag}"},
            usernames={"alpha": f"e2e-{tag}-a", "beta": f"e2e-{tag}-b"},
            temporary_password=f"Temporary-{secret}",
            password=f"Chosen-by-patient-{secret[::-1]}",
        )

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


def main_button(page, name: str):
    """A button in the page's content (the top bar has its own "Sign out")."""
    return page.locator("#content").get_by_role("button", name=name)


def switch_user(page, url: str, username: str, password: str) -> None:
    page.context.clear_cookies()
    sign_in(page, url, username, password)


def register_patient(page, url: str, person: NewPatient, slug: str) -> str:
    """As staff signed in at ``url``: the new-patient page; returns the patient's id."""
    page.goto(url + "records/patients/")
    page.locator("#content").get_by_role("link", name="New patient").click()
    page.wait_for_url(url + "records/patients/new/")
    page.fill("#id_given_name", person.given_name)
    page.fill("#id_family_name", person.family_name)
    page.select_option("#id_sex", person.sex)
    page.fill("#id_birth_date", person.birth_date)
    page.fill("#id_record_number", person.record_numbers[slug])
    page.fill("#id_username", person.usernames[slug])
    page.fill("#id_password", person.temporary_password)
    with page.expect_navigation():
        main_button(page, "Register patient").click()
    assert CHART.search(page.url), page.locator("#content").inner_text()
    assert page.locator(".messages").inner_text() == "The patient was registered."
    assert page.locator("h1").inner_text() == person.full_name
    return CHART.search(page.url).group(1)


def fill_entry(page, *, department: str, complaint: str, icd10: str, drug: str, pulse: str):
    page.fill("#id_encounter-0-department", department)
    page.fill("#id_encounter-0-chief_complaint", complaint)
    page.fill("#id_diagnoses-0-code", icd10)
    page.fill("#id_medications-0-drug", drug)
    page.fill("#id_medications-0-dose", "500 mg")
    page.select_option("#id_medications-0-route", "oral")
    page.fill("#id_medications-0-frequency", "twice daily")
    page.fill("#id_medications-0-start", "2024-05-02")
    page.fill("#id_vitals-heart_rate-value", pulse)


def write_entry(page, url: str, patient_id: str, **values) -> None:
    """As a doctor: from the chart, the new-entry form, back to the chart."""
    page.goto(url + f"records/patients/{patient_id}/")
    page.locator("#content").get_by_role("link", name="New entry").click()
    page.wait_for_url(url + f"records/patients/{patient_id}/new/")
    fill_entry(page, **values)
    main_button(page, "Save the entry").click()
    page.wait_for_url(url + f"records/patients/{patient_id}/")
    assert page.locator(".messages").inner_text() == "The entry was saved."


def first_sign_in(page, url: str, person: NewPatient, slug: str) -> None:
    """Staff gave a temporary password: the site asks for the patient's own first."""
    switch_user(page, url, person.usernames[slug], person.temporary_password)
    page.wait_for_url(re.compile(r"/accounts/password/"))
    assert page.locator(".notice").inner_text().startswith("Please choose your own password")
    page.fill("#id_old_password", person.temporary_password)
    page.fill("#id_new_password1", person.password)
    page.fill("#id_new_password2", person.password)
    main_button(page, "Change password").click()
    page.wait_for_url(url)
    assert page.locator(".messages").inner_text() == "Your password was changed."


def entry_by_department(page, department: str):
    return page.locator("article.entry", has=page.locator("h3", has_text=department))


def check_history(page, url: str, departments: dict[str, str]) -> None:
    """/records/mine/ shows each entry with its hospital and its chain mark."""
    page.goto(url + "records/mine/")
    assert page.locator("h1").inner_text() == "My records"
    assert page.locator("article.entry").count() == len(departments)
    lead = page.locator("p.lead").inner_text()
    for slug, department in departments.items():
        entry = entry_by_department(page, department)
        assert entry.count() == 1
        assert entry.locator(".entry-hospital").inner_text() == NAMES[slug]
        assert entry.locator(CHAIN_MARK).count() == 1
        assert entry.locator(".integrity-error").count() == 0
        assert NAMES[slug] in lead


def test_a_patient_registered_at_two_hospitals_sees_both_entries_once_linked(
    desktop, live_server_process
):
    page = desktop
    alpha, beta = base_url(live_server_process, "alpha"), base_url(live_server_process, "beta")
    person = NewPatient.make("Desk")
    departments = {"alpha": f"Endocrinology {person.family_name}", "beta": "Cardiology"}

    # Alpha's doctor registers the patient and writes the first entry.
    sign_in(page, alpha, "alpha-doctor", PASSWORD)
    page.wait_for_url(alpha)
    alpha_id = register_patient(page, alpha, person, "alpha")
    identity = page.locator("dl.identity")
    assert person.record_numbers["alpha"] in identity.inner_text()
    assert person.usernames["alpha"] in identity.inner_text()
    assert page.locator("article.entry").count() == 0
    write_entry(
        page,
        alpha,
        alpha_id,
        department=departments["alpha"],
        complaint="Thirst and tiredness",
        icd10="e119",  # normalised to E11.9
        drug="Metformin",
        pulse="72",
    )
    # The chart shows the entry decrypted.
    entry = page.locator("article.entry")
    assert entry.count() == 1
    assert entry.locator("h3").inner_text().endswith(departments["alpha"])
    assert entry.locator(".entry-complaint").inner_text() == "Complaint: Thirst and tiredness"
    diagnosis = entry.locator("h4:has-text('Diagnoses') + ul li").inner_text()
    assert diagnosis.startswith("E11.9 Type 2 diabetes mellitus")
    assert (
        entry.locator("h4:has-text('Medications') + ul li")
        .inner_text()
        .startswith("Metformin 500 mg, oral, twice daily · from 2024-05-02")
    )
    assert entry.locator("ul.vitals li").inner_text() == "Heart rate: 72 /min"
    assert entry.locator(CHAIN_MARK).count() == 1
    screenshot(page, "records-chart-alpha-doctor-desktop")

    # The doctor finds the patient by exact record number, and the entry by its
    # drug; searches are POSTed, so neither reaches the URL.
    page.goto(alpha + "records/patients/")
    page.fill("#q", person.record_numbers["alpha"])
    with page.expect_navigation():
        page.locator("form[role=search]", has=page.locator("#q")).get_by_role(
            "button", name="Search"
        ).click()
    assert page.url == alpha + "records/patients/"
    rows = page.locator("table.table tbody tr")
    assert rows.count() == 1
    assert rows.locator("td[data-label=Name]").inner_text() == person.full_name
    page.fill("#drug", "metformin")
    with page.expect_navigation():
        main_button(page, "Find records").click()
    assert page.url == alpha + "records/patients/"
    found = page.locator("table.table").first.locator("tbody tr", has_text=person.full_name)
    assert found.count() == 1
    screenshot(page, "records-search-alpha-doctor-desktop")

    # Beta's doctor registers the same person there (no entry yet).
    page.context.clear_cookies()
    sign_in(page, beta, "beta-doctor", PASSWORD)
    page.wait_for_url(beta)
    beta_id = register_patient(page, beta, person, "beta")

    # The patient makes a link code at alpha...
    first_sign_in(page, alpha, person, "alpha")
    page.goto(alpha + "records/link/")
    # The code carries the signing key, sealed: her password opens it first.
    page.fill("#id_create_password", person.password)
    main_button(page, "Make a code").click()
    code = page.locator(".link-code code").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]{4,}(-[A-Z0-9]{4,})*", code), code
    screenshot(page, "records-link-code-alpha-patient-desktop")

    # ... and enters it at beta: a wrong code first, then the real one.
    first_sign_in(page, beta, person, "beta")
    page.goto(beta + "records/link/")
    page.fill("#id_code", "WRONG-CODE1")
    page.fill("#id_redeem_password", person.password)
    main_button(page, "Link").click()
    assert page.locator("#id_code_errors").inner_text() == "That code is not valid or has expired."
    assert page.locator("#id_code").input_value() == "WRONG-CODE1"
    page.fill("#id_code", code)
    page.fill("#id_redeem_password", person.password)  # a password field is never kept
    main_button(page, "Link").click()
    page.wait_for_url(beta + "records/mine/")
    assert page.locator(".messages").inner_text().startswith("Your accounts are linked")
    check_history(page, beta, {"alpha": departments["alpha"]})

    # Beta's doctor writes an entry for the linked patient.
    switch_user(page, beta, "beta-doctor", PASSWORD)
    page.wait_for_url(beta)
    write_entry(
        page,
        beta,
        beta_id,
        department=departments["beta"],
        complaint="Palpitations",
        icd10="I10",
        drug="Amlodipine",
        pulse="88",
    )
    assert page.locator("article.entry:not(.entry-elsewhere)").count() == 1
    # Alpha's entry shows as existing there, and not shared (no grant from the patient).
    elsewhere = page.locator("article.entry-elsewhere")
    assert elsewhere.count() == 1
    assert "not shared with you" in elsewhere.inner_text()
    assert departments["alpha"] not in elsewhere.inner_text()
    screenshot(page, "records-chart-beta-doctor-desktop")

    # The patient sees both hospitals' entries from either portal.
    for slug, url in (("beta", beta), ("alpha", alpha)):
        switch_user(page, url, person.usernames[slug], person.password)
        page.wait_for_url(url)
        check_history(page, url, departments)
        alpha_entry = entry_by_department(page, departments["alpha"])
        assert "E11.9" in alpha_entry.locator("h4:has-text('Diagnoses') + ul").inner_text()
        beta_entry = entry_by_department(page, departments["beta"])
        assert "Amlodipine" in beta_entry.inner_text()
        screenshot(page, f"records-mine-{slug}-patient-desktop")

    # The summary adds both up.
    page.goto(alpha + "records/mine/summary/")
    diagnoses = page.locator("table.table").nth(0).inner_text()
    assert "E11.9" in diagnoses and "I10" in diagnoses
    medications = page.locator("table.table").nth(1).inner_text()
    assert "Metformin" in medications and "Amlodipine" in medications
    assert NAMES["alpha"] in medications and NAMES["beta"] in medications
    screenshot(page, "records-summary-alpha-patient-desktop")


def test_record_pages_work_on_a_phone(phone, live_server_process):
    page = phone
    url = base_url(live_server_process, "alpha")
    person = NewPatient.make("Phone")
    department = f"Outpatients {person.family_name}"

    sign_in(page, url, "alpha-doctor", PASSWORD)
    page.wait_for_url(url)
    page.goto(url + "records/patients/")
    assert page.locator("h1").inner_text() == f"Patients at {NAMES['alpha']}"
    # The table turns into labelled cards: no header row on a phone.
    assert not page.locator("table.table thead").first.is_visible()
    assert no_horizontal_scroll(page)
    screenshot(page, "records-list-alpha-doctor-phone")

    patient_id = register_patient(page, url, person, "alpha")
    assert no_horizontal_scroll(page)
    screenshot(page, "records-chart-empty-alpha-doctor-phone")

    page.locator("#content").get_by_role("link", name="New entry").click()
    page.wait_for_url(url + f"records/patients/{patient_id}/new/")
    assert no_horizontal_scroll(page)
    screenshot(page, "records-entry-form-alpha-doctor-phone")

    # A mistake is shown beside its field, with what the doctor typed kept.
    fill_entry(
        page,
        department=department,
        complaint="Cough for two weeks",
        icd10="XYZ",
        drug="Salbutamol",
        pulse="64",
    )
    main_button(page, "Save the entry").click()
    page.wait_for_url(url + f"records/patients/{patient_id}/new/")
    assert page.locator("[role=alert]").inner_text().startswith("Please correct the 1 problem")
    code = page.locator("#id_diagnoses-0-code")
    assert code.input_value() == "XYZ"
    assert code.get_attribute("aria-invalid") == "true"
    field = page.locator(".field.has-error", has=code)
    assert (
        field.locator("#id_diagnoses-0-code_errors").inner_text()
        == "Enter an ICD-10 code such as I10 or E11.9."
    )
    for selector, value in (
        ("#id_encounter-0-department", department),
        ("#id_encounter-0-chief_complaint", "Cough for two weeks"),
        ("#id_medications-0-drug", "Salbutamol"),
        ("#id_medications-0-start", "2024-05-02"),
        ("#id_vitals-heart_rate-value", "64"),
    ):
        assert page.locator(selector).input_value() == value, selector
    assert page.locator("#id_medications-0-route").input_value() == "oral"
    assert no_horizontal_scroll(page)
    field.scroll_into_view_if_needed()
    screenshot(page, "records-entry-form-error-alpha-doctor-phone")

    page.fill("#id_diagnoses-0-code", "J45")
    main_button(page, "Save the entry").click()
    page.wait_for_url(url + f"records/patients/{patient_id}/")
    entry = page.locator("article.entry")
    assert entry.count() == 1
    assert entry.locator("h4:has-text('Diagnoses') + ul li").inner_text().startswith("J45 Asthma")
    assert no_horizontal_scroll(page)
    screenshot(page, "records-chart-alpha-doctor-phone")

    # The patient on the phone: history and summary.
    first_sign_in(page, url, person, "alpha")
    assert no_horizontal_scroll(page)
    check_history(page, url, {"alpha": department})
    assert no_horizontal_scroll(page)
    screenshot(page, "records-mine-alpha-patient-phone")
    page.locator("#content").get_by_role("link", name="Summary to print").click()
    page.wait_for_url(url + "records/mine/summary/")
    assert page.locator("h1").inner_text() == "My health summary"
    assert "J45" in page.locator("table.table").nth(0).inner_text()
    assert no_horizontal_scroll(page)
    screenshot(page, "records-summary-alpha-patient-phone")


def test_the_printed_summary_has_no_navigation(browser, live_server_process):
    """Only the demo patient's summary is read here: nothing is written."""
    url = base_url(live_server_process, "alpha")
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, url, "alpha-patient", PASSWORD)
        page.wait_for_url(url)
        page.goto(url + "records/mine/summary/")
        assert page.locator("header.topbar").is_visible()
        assert main_button(page, "Print").is_visible()
        page.emulate_media(media="print")
        assert not page.locator("header.topbar").is_visible()
        assert not page.locator(".head-actions").is_visible()
        assert not main_button(page, "Print").is_visible()
        assert page.locator("h1").inner_text() == "My health summary"
        assert page.locator("section.summary table.table").first.is_visible()
        screenshot(page, "records-summary-print-alpha-patient")
        page.emulate_media(media="screen")
        assert page.locator("header.topbar").is_visible()
    finally:
        context.close()
