"""The chain explorer, the hub dashboard, the chain API and the /ws/chain/ socket."""

from __future__ import annotations

import html
import json
import re
import socket

import pytest
from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context
from websockets.sync.client import connect

from accounts.models import User
from accounts.roles import Role
from chain.models import Block, ChainState
from chain.services import block_seal, replica_sync, transaction_submit
from tests.conftest import client_for, login_client

ROW_HEIGHT = re.compile(r'<tr data-height="(\d+)">')


def anchor_payload(slug: str, entry: int = 1) -> dict:
    return {"tenant": slug, "first_entry": entry, "last_entry": entry, "root": "ab" * 32}


def append_block(tenant, entry: int = 1) -> Block:
    """One block on the hub holding one anchor transaction by ``tenant``."""
    transaction_submit(tenant=tenant, kind="anchor", payload=anchor_payload(tenant.slug, entry))
    [height] = block_seal(force=True)
    with schema_context(get_public_schema_name()):
        return Block.objects.get(height=height)


def heights_in(schema_tenant) -> list[int]:
    with schema_context(schema_tenant.schema_name):
        return list(Block.objects.order_by("-height").values_list("height", flat=True))


def hub_height() -> int:
    with schema_context(get_public_schema_name()):
        return ChainState.objects.get(id=1).height


# --- Pages ------------------------------------------------------------------------


def test_explorer_lists_the_replica_newest_first_with_its_status(alpha):
    replica_sync(tenant=alpha)
    append_block(alpha)  # on the hub only: alpha's replica is now one behind
    response = login_client(alpha, "alpha-doctor").get("/chain/")
    assert response.status_code == 200
    replica_heights = heights_in(alpha)
    assert [int(h) for h in ROW_HEIGHT.findall(response.content.decode())] == replica_heights
    assert replica_heights[0] == hub_height() - 1
    summary = re.sub(
        r"\s+",
        " ",
        re.search(r'<p class="chain-summary".*?</p>', response.content.decode(), re.S).group(0),
    )
    assert f'Height <strong data-field="height">{replica_heights[0]}</strong>' in summary
    assert '<span data-field="behind">1</span> behind the hub' in summary
    assert 'last verification: <span data-field="last_verification">never</span>' in summary


def test_explorer_row_shows_time_count_short_hash_and_badge(alpha):
    response = login_client(alpha, "alpha-patient").get("/chain/")
    with tenant_context(alpha):
        genesis = Block.objects.get(height=0)
    content = response.content.decode()
    assert f'<code class="hash" title="{genesis.hash}">{genesis.hash[:16]}…</code>' in content
    assert '<span class="badge badge-pending">Not verified yet</span>' in content
    assert 'href="/chain/blocks/0/"' in content
    assert genesis.created_at.strftime("%Y-%m-%d %H:%M:%S") in content


def test_verified_blocks_get_the_verified_badge(alpha):
    from chain.selectors import chain_verify_schema

    with tenant_context(alpha):
        chain_verify_schema(schema_name=alpha.schema_name, tenant_slug="alpha", record=True)
    response = login_client(alpha, "alpha-doctor").get("/chain/")
    content = response.content.decode()
    assert content.count("badge badge-ok") == len(heights_in(alpha))
    assert "badge-pending" not in content
    assert '<span data-field="last_verification">ok</span>' in content


def test_explorer_on_the_hub_shows_the_canonical_chain_zero_behind(hub):
    response = login_client(hub, "operator").get("/chain/")
    assert response.status_code == 200
    content = response.content.decode()
    assert [int(h) for h in ROW_HEIGHT.findall(content)] == heights_in(hub)
    assert '<span data-field="behind">0</span> behind the hub' in content
    assert 'data-live="true"' in content
    assert "/static/js/chain.js" in content


def test_explorer_pages_fifty_blocks_at_a_time_with_before(hub, alpha):
    for entry in range(1, 51):
        append_block(alpha, entry)
    top = hub_height()
    client = login_client(hub, "operator")
    first = client.get("/chain/").content.decode()
    assert [int(h) for h in ROW_HEIGHT.findall(first)] == list(range(top, top - 50, -1))
    assert f'href="?before={top - 49}" rel="next">Older blocks</a>' in first
    second = client.get(f"/chain/?before={top - 49}").content.decode()
    lowest = max(0, top - 99)
    assert [int(h) for h in ROW_HEIGHT.findall(second)] == list(range(top - 50, lowest - 1, -1))
    assert ("Older blocks" in second) == (lowest > 0)
    assert '<a href="/chain/">Newest blocks</a>' in second
    # Older pages do not take live rows.
    assert 'data-live="false"' in second


@pytest.mark.parametrize("before", ["abc", "-1", "1.5"])
def test_explorer_refuses_a_bad_before(alpha, before):
    response = login_client(alpha, "alpha-doctor").get("/chain/", {"before": before})
    assert response.status_code == 400


def test_block_detail_shows_every_header_field_and_the_transactions(alpha):
    hub_block = append_block(alpha, 7)
    replica_sync(tenant=alpha)
    with tenant_context(alpha):
        block = Block.objects.get(height=hub_block.height)
        [item] = block.transactions.all()
    response = login_client(alpha, "alpha-doctor").get(f"/chain/blocks/{block.height}/")
    assert response.status_code == 200
    content = response.content.decode()
    for value in (
        block.hash,
        block.previous_hash,
        block.merkle_root,
        block.hub_signature,
        item.hash,
        item.author,
        item.signature,
    ):
        assert f"<code>{value}</code>" in content
    assert "<dt>Proposer</dt><dd>hub</dd>" in content
    assert "<dt>Transactions</dt><dd>1</dd>" in content
    assert "<dt>Kind</dt><dd>anchor</dd>" in content
    assert "<dt>Index</dt><dd>0</dd>" in content
    pretty = json.dumps(anchor_payload("alpha", 7), indent=2, sort_keys=True)
    assert f'<pre class="payload" aria-label="Payload">{html.escape(pretty)}</pre>' in content
    assert block.created_at.strftime("%Y-%m-%d %H:%M:%S.%f") in content
    assert '<span class="badge badge-pending">Not verified yet</span>' in content
    assert f'href="/chain/blocks/{block.height - 1}/" rel="prev"' in content
    assert 'rel="next"' not in content  # the newest block of this replica


def test_unknown_height_is_a_404_page(alpha):
    client = login_client(alpha, "alpha-doctor")
    response = client.get(f"/chain/blocks/{heights_in(alpha)[0] + 1}/")
    assert response.status_code == 404
    assert b"Page not found" in response.content


@pytest.mark.parametrize("path", ["/chain/", "/chain/blocks/0/"])
def test_anonymous_visitor_is_sent_to_sign_in(alpha, path):
    response = client_for(alpha).get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_dashboard_shows_every_tenant_for_the_operator(hub, alpha, beta):
    replica_sync(tenant=alpha)
    replica_sync(tenant=beta)
    append_block(alpha)
    replica_sync(tenant=alpha)
    response = login_client(hub, "operator").get("/hub/")
    assert response.status_code == 200
    content = response.content.decode()
    top = hub_height()
    assert f'<strong id="hub-height">{top}</strong>' in content
    assert re.findall(r'<tr data-tenant="([a-z-]+)">', content) == [
        "hub",
        "alpha",
        "beta",
        "northwind",
        "southbank",
    ]
    alpha_row = re.search(r'<tr data-tenant="alpha">.*?</tr>', content, re.S).group(0)
    beta_row = re.search(r'<tr data-tenant="beta">.*?</tr>', content, re.S).group(0)
    assert f'data-field="height">{top}</td>' in alpha_row
    assert 'data-field="behind">0</td>' in alpha_row
    assert 'data-field="behind" class="lagging">1</td>' in beta_row
    assert '<a class="button" href="/chain/">Open the explorer</a>' in content


def test_dashboard_is_403_for_a_non_operator_account_on_the_hub(hub):
    # A hospital admin has no account on the hub; a (mis-created) admin row in the
    # hub's schema must still get nothing.
    with tenant_context(hub):
        stray = User.objects.create_user(username="stray-admin", role=Role.ADMIN)
    client = client_for(hub)
    client.force_login(stray)
    assert client.get("/hub/").status_code == 403


def test_dashboard_does_not_exist_for_a_hospital_admin_on_their_host(alpha):
    assert login_client(alpha, "alpha-admin").get("/hub/").status_code == 404


def test_tables_become_cards_on_phones(hub):
    client = login_client(hub, "operator")
    for path, labels in (
        ("/chain/", ["Height", "Time (UTC)", "Transactions", "Hash", "Verified"]),
        ("/hub/", ["Tenant", "Kind", "Height", "Behind", "Last delivery (UTC)"]),
    ):
        content = client.get(path).content.decode()
        assert '<table class="table' in content
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in content
        for label in labels:
            assert f'<td data-label="{label}"' in content


def test_navigation_offers_chain_to_everyone_and_dashboard_to_operators(hub, alpha):
    operator_home = login_client(hub, "operator").get("/").content.decode()
    assert '<a href="/chain/">Chain</a>' in operator_home
    assert '<a href="/hub/">Dashboard</a>' in operator_home
    patient_home = login_client(alpha, "alpha-patient").get("/").content.decode()
    assert '<a href="/chain/">Chain</a>' in patient_home
    assert "Dashboard" not in patient_home


# --- API --------------------------------------------------------------------------


def test_api_lists_blocks_ascending_after_a_height(alpha):
    replica_sync(tenant=alpha)
    for entry in (1, 2, 3):
        append_block(alpha, entry)
    replica_sync(tenant=alpha)
    top = hub_height()
    client = login_client(alpha, "alpha-doctor")
    everything = client.get("/api/v1/chain/blocks")
    assert everything.status_code == 200
    assert [b["height"] for b in everything.json()] == list(range(top + 1))
    after = client.get("/api/v1/chain/blocks", {"after": top - 3, "limit": 2}).json()
    assert [b["height"] for b in after] == [top - 2, top - 1]
    with tenant_context(alpha):
        block = Block.objects.get(height=top - 2)
    assert after[0] == {
        "height": top - 2,
        "hash": block.hash,
        "previous_hash": block.previous_hash,
        "created_at": block.created_at.isoformat().replace("+00:00", "Z"),
        "proposer": block.proposer,
        "merkle_root": block.merkle_root,
        "transaction_count": block.transaction_count,
        "hub_signature": block.hub_signature,
        "encoding_version": block.encoding_version,
        "stored_at": block.stored_at.isoformat().replace("+00:00", "Z"),
        "is_verified": False,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"after": "x"}, "after"),
        ({"after": "-2"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_api_refuses_bad_after_or_limit_with_a_message(alpha, query, field):
    response = login_client(alpha, "alpha-doctor").get("/api/v1/chain/blocks", query)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field]
    assert isinstance(body[field][0], str) and body[field][0]


def test_api_limit_of_500_is_allowed(alpha):
    response = login_client(alpha, "alpha-doctor").get("/api/v1/chain/blocks", {"limit": 500})
    assert response.status_code == 200


def test_api_block_detail_has_its_transactions(alpha):
    hub_block = append_block(alpha, 3)
    replica_sync(tenant=alpha)
    with tenant_context(alpha):
        [item] = Block.objects.get(height=hub_block.height).transactions.all()
    response = login_client(alpha, "alpha-doctor").get(f"/api/v1/chain/blocks/{hub_block.height}")
    assert response.status_code == 200
    body = response.json()
    assert (body["height"], body["hash"], body["transaction_count"]) == (
        hub_block.height,
        hub_block.hash,
        1,
    )
    assert body["transactions"] == [
        {
            "index": 0,
            "kind": "anchor",
            "author": item.author,
            "payload": anchor_payload("alpha", 3),
            "timestamp": item.timestamp.isoformat().replace("+00:00", "Z"),
            "signature": item.signature,
            "hash": item.hash,
        }
    ]


def test_api_block_detail_of_an_unknown_height_is_404_json(alpha):
    missing = heights_in(alpha)[0] + 1
    response = login_client(alpha, "alpha-doctor").get(f"/api/v1/chain/blocks/{missing}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"No block at height {missing}."}


def test_api_status_on_the_hub_covers_every_tenant(hub, alpha, beta, northwind, southbank):
    for tenant in (alpha, beta, northwind, southbank):
        replica_sync(tenant=tenant)
    append_block(alpha)
    response = login_client(hub, "operator").get("/api/v1/chain/status")
    assert response.status_code == 200
    body = response.json()
    top = hub_height()
    assert body["hub_height"] == top
    assert [(r["slug"], r["kind"], r["behind"]) for r in body["replicas"]] == [
        ("hub", "hub", 0),
        ("alpha", "hospital", 1),
        ("beta", "hospital", 1),
        ("northwind", "research", 1),
        ("southbank", "research", 1),
    ]
    assert set(body["replicas"][1]) == {
        "slug",
        "kind",
        "height",
        "head_hash",
        "behind",
        "last_delivery_at",
        "last_verified_at",
        "last_verification",
    }


def test_api_status_on_a_tenant_shows_only_its_own_copy(alpha):
    append_block(alpha)
    replica_sync(tenant=alpha)
    response = login_client(alpha, "alpha-patient").get("/api/v1/chain/status")
    assert response.status_code == 200
    body = response.json()
    with tenant_context(alpha):
        state = ChainState.objects.get(id=1)
    assert body == {
        "hub_height": state.height,
        "replicas": [
            {
                "slug": "alpha",
                "kind": "hospital",
                "height": state.height,
                "head_hash": state.head_hash,
                "behind": 0,
                "last_delivery_at": state.last_delivery_at.isoformat().replace("+00:00", "Z"),
                "last_verified_at": None,
                "last_verification": "never",
            }
        ],
    }


@pytest.mark.parametrize(
    "path", ["/api/v1/chain/blocks", "/api/v1/chain/blocks/0", "/api/v1/chain/status"]
)
def test_api_without_credentials_is_401(alpha, path):
    response = client_for(alpha).get(path)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


# --- Websocket on a live server -------------------------------------------------------


def open_chain_socket(server, host: str, cookie: str | None):
    sock = socket.create_connection(("127.0.0.1", server.port))
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
    return connect(
        f"ws://{host}:{server.port}/ws/chain/",
        sock=sock,
        origin=f"http://{host}:{server.port}",
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
    )


@pytest.fixture(scope="module")
def chain_sessions(committed, django_db_blocker):
    with django_db_blocker.unblock():
        return {
            slug: login_client(committed[slug], username)
            .cookies[settings.SESSION_COOKIE_NAME]
            .value
            for slug, username in (
                ("hub", "operator"),
                ("alpha", "alpha-doctor"),
                ("beta", "beta-doctor"),
            )
        }


def receive(connection) -> dict:
    return json.loads(connection.recv(timeout=10))


@pytest.mark.live
def test_block_events_reach_only_the_replica_that_applied_the_block(
    live_server_process, chain_sessions, committed, django_db_blocker
):
    alpha, beta = committed["alpha"], committed["beta"]
    with django_db_blocker.unblock():
        # Earlier live tests may have left blocks unsynced: start level.
        replica_sync(tenant=alpha)
        replica_sync(tenant=beta)
    with (
        open_chain_socket(live_server_process, "alpha.localhost", chain_sessions["alpha"]) as a,
        open_chain_socket(live_server_process, "beta.localhost", chain_sessions["beta"]) as b,
    ):
        assert receive(a) == {"type": "hello", "tenant": "alpha"}
        assert receive(b) == {"type": "hello", "tenant": "beta"}
        with django_db_blocker.unblock():
            block = append_block(alpha, 11)
            replica_sync(tenant=alpha)
        expected = {"type": "block", "height": block.height, "hash": block.hash}
        assert receive(a) == {**expected, "tenant": "alpha"}
        with django_db_blocker.unblock():
            replica_sync(tenant=beta)
        # beta's first event is its own: alpha's never reached it.
        assert receive(b) == {**expected, "tenant": "beta"}


@pytest.mark.live
def test_operator_socket_on_the_hub_gets_hub_blocks_and_replica_progress(
    live_server_process, chain_sessions, committed, django_db_blocker
):
    alpha = committed["alpha"]
    with django_db_blocker.unblock():
        replica_sync(tenant=alpha)
    with open_chain_socket(live_server_process, "localhost", chain_sessions["hub"]) as hub:
        assert receive(hub) == {"type": "hello", "tenant": "hub"}
        with django_db_blocker.unblock():
            block = append_block(alpha, 12)
            replica_sync(tenant=alpha)
        received = []
        while len(received) < 3:
            event = receive(hub)
            # A Celery worker left by another live test may deliver to the other
            # tenants meanwhile; their progress is not what this test is about.
            if event["tenant"] in ("hub", "alpha"):
                received.append(event)
    # The hub's block goes to chain.public; progress (the hub's, then alpha's) to
    # chain.dashboard, which only operators' sockets join.
    head = {"height": block.height, "hash": block.hash}
    assert sorted(received, key=json.dumps) == sorted(
        [
            {"type": "block", "tenant": "hub", **head},
            {"type": "replica", "tenant": "hub", **head},
            {"type": "replica", "tenant": "alpha", **head},
        ],
        key=json.dumps,
    )


@pytest.mark.live
def test_anonymous_chain_socket_is_closed_with_4401(live_server_process):
    with open_chain_socket(live_server_process, "alpha.localhost", None) as anonymous:
        with pytest.raises(Exception) as closed:
            anonymous.recv(timeout=10)
    assert closed.value.rcvd.code == 4401
