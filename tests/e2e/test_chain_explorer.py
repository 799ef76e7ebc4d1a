from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import PASSWORD, PROJECT_ROOT, child_environment
from tests.e2e.conftest import screenshot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.live]

# Playwright's event loop runs on the test thread, so the services' on-commit
# websocket push (async_to_sync) cannot run here: append in a child process.
APPEND_BLOCK = textwrap.dedent(
    """
    import json
    import sys

    import django

    django.setup()

    from django_tenants.utils import schema_context

    from chain.models import Transaction
    from chain.services import block_seal, replica_sync, transaction_submit
    from medportal.tenants.models import Tenant

    alpha = Tenant.objects.get(slug="alpha")
    payload = {"tenant": "alpha", "first_entry": 1, "last_entry": 1, "root": "cd" * 32}
    pending = transaction_submit(tenant=alpha, kind="anchor", payload=payload)
    # The worker may seal it first (a seal task follows every submission); once
    # block_seal has had the seal lock, the transaction is in a block either way.
    block_seal(force=True)
    with schema_context("public"):
        block = Transaction.objects.get(hash=pending.hash).block
    if "--sync-alpha" in sys.argv:
        replica_sync(tenant=alpha)
    print(json.dumps([block.height, block.transaction_count]))
    """
)


def append_block_elsewhere(*, sync_alpha: bool = False) -> tuple[int, int]:
    """(height, transaction count) of the block holding a new anchor transaction:
    it may also hold what earlier committed tests left waiting to be sealed."""
    result = subprocess.run(
        [sys.executable, "-c", APPEND_BLOCK, *(["--sync-alpha"] if sync_alpha else [])],
        cwd=PROJECT_ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    height, count = json.loads(result.stdout.strip().splitlines()[-1])
    return height, count


def test_a_new_hub_block_appears_in_the_explorer_without_reload(desktop, live_server_process):
    url = f"http://localhost:{live_server_process.port}/"
    sign_in(desktop, url, "operator", PASSWORD)
    desktop.wait_for_url(url)
    desktop.goto(url + "chain/")
    # "live" is shown once the socket has joined its groups: nothing is missed after.
    desktop.wait_for_selector("#chain-live[data-state=live]")
    top = int(desktop.locator("#chain-blocks").get_attribute("data-top-height"))
    navigations = []
    desktop.on("framenavigated", lambda frame: navigations.append(frame.url))

    height, count = append_block_elsewhere()

    assert height == top + 1
    row = desktop.locator(f'#chain-blocks tbody tr[data-height="{height}"]')
    row.wait_for()
    # Prepended, newest first, and the header caught up too.
    assert desktop.locator("#chain-blocks tbody tr").first.get_attribute("data-height") == str(
        height
    )
    assert row.locator("td[data-label=Transactions]").inner_text() == str(count)
    desktop.wait_for_function(
        "h => document.querySelector('#chain-summary [data-field=height]').textContent === h",
        arg=str(height),
    )
    assert navigations == []  # no reload
    screenshot(desktop, "chain-explorer-live-operator-desktop")
    row.locator("a").click()
    desktop.wait_for_url(url + f"chain/blocks/{height}/")
    assert desktop.locator("h1").inner_text() == f"Block {height}"
    assert desktop.locator("pre.payload").inner_text() == json.dumps(
        {"first_entry": 1, "last_entry": 1, "root": "cd" * 32, "tenant": "alpha"},
        indent=2,
        sort_keys=True,
    )


def test_the_dashboard_follows_a_replica_live(desktop, live_server_process):
    url = f"http://localhost:{live_server_process.port}/"
    sign_in(desktop, url, "operator", PASSWORD)
    desktop.wait_for_url(url)
    desktop.goto(url + "hub/")
    desktop.wait_for_selector("#chain-live[data-state=live]")

    height, _ = append_block_elsewhere(sync_alpha=True)

    alpha = desktop.locator('#chain-dashboard tr[data-tenant="alpha"]')
    desktop.wait_for_function(
        "h => document.querySelector('#hub-height').textContent === h", arg=str(height)
    )
    desktop.wait_for_function(
        """h => document.querySelector(
            '#chain-dashboard tr[data-tenant="alpha"] [data-field=height]').textContent === h""",
        arg=str(height),
    )
    assert alpha.locator("[data-field=behind]").inner_text() == "0"
    # beta was not synced: its lag shows against the new hub height.
    beta = desktop.locator('#chain-dashboard tr[data-tenant="beta"]')
    beta_height = int(beta.locator("[data-field=height]").inner_text())
    assert int(beta.locator("[data-field=behind]").inner_text()) == height - beta_height
    screenshot(desktop, "chain-dashboard-operator-desktop")


def test_explorer_is_readable_on_a_phone(phone, live_server_process):
    url = f"http://alpha.localhost:{live_server_process.port}/"
    sign_in(phone, url, "alpha-patient", PASSWORD)
    phone.wait_for_url(url)
    phone.goto(url + "chain/")
    phone.wait_for_selector("#chain-live[data-state=live]")
    assert not phone.locator("#chain-blocks thead").is_visible()
    assert phone.locator("#chain-blocks tbody tr").first.locator("td").first.is_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone, "chain-explorer-alpha-patient-phone")
    phone.goto(url + "chain/blocks/0/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone, "chain-block-alpha-patient-phone")
