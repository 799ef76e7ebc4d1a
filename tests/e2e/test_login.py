from __future__ import annotations

import pytest

from accounts.demo import DEMO_USERS
from tests.conftest import PASSWORD
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.live]

TENANT_HOSTS = {
    "hub": "localhost",
    "alpha": "alpha.localhost",
    "beta": "beta.localhost",
    "northwind": "northwind.localhost",
    "southbank": "southbank.localhost",
}


def base_url(server, slug: str) -> str:
    return f"http://{TENANT_HOSTS[slug]}:{server.port}/"


@pytest.mark.parametrize(
    ("slug", "username", "role"),
    [(slug, username, role) for slug, username, role, *_ in DEMO_USERS],
)
def test_each_demo_user_signs_in_on_their_host_and_lands_home(
    desktop, live_server_process, slug, username, role
):
    url = base_url(live_server_process, slug)
    sign_in(desktop, url, username, PASSWORD)
    desktop.wait_for_url(url)
    welcome = desktop.locator("section.welcome")
    assert welcome.get_attribute("data-role") == role
    assert desktop.locator("h1").inner_text().startswith("Welcome, ")
    # On a desktop the navigation is shown without opening anything.
    assert desktop.locator("nav[aria-label=Main] a", has_text="Home").is_visible()
    screenshot(desktop, f"home-{username}-desktop")


def test_a_user_is_refused_on_another_tenants_host(desktop, live_server_process):
    url = base_url(live_server_process, "beta")
    sign_in(desktop, url, "alpha-doctor", PASSWORD)
    assert (
        desktop.locator("[role=alert]")
        .inner_text()
        .startswith("Please enter a correct username and password")
    )
    assert desktop.url == url + "accounts/login/"


def test_phone_shows_the_navigation_behind_the_menu_button(phone, live_server_process):
    url = base_url(live_server_process, "alpha")
    sign_in(phone, url, "alpha-doctor", PASSWORD)
    phone.wait_for_url(url)
    people_link = phone.locator("nav[aria-label=Main] a", has_text="People")
    menu_button = phone.locator("#main-menu summary")
    assert menu_button.is_visible()
    assert not people_link.is_visible()
    menu_button.click()
    assert people_link.is_visible()
    # Nothing is wider than the phone's screen.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone, "home-alpha-doctor-phone-menu")
    people_link.click()
    phone.wait_for_url(url + "accounts/people/")
    assert phone.locator("h1").inner_text() == "People at Alpha General Hospital"
    screenshot(phone, "people-alpha-doctor-phone")
