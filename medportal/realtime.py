"""Websockets: the tenant from the Host header, the user from that tenant's
session, and group names that always include the tenant."""

from __future__ import annotations

import logging
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django_tenants.utils import tenant_context

logger = logging.getLogger(__name__)


def tenant_group(schema_name: str) -> str:
    return f"tenant.{schema_name}"


def user_group(schema_name: str, user_id: int) -> str:
    return f"user.{schema_name}.{user_id}"


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _host_without_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


class _SessionHolder:
    """The bit of a request that ``django.contrib.auth.get_user`` reads."""

    def __init__(self, session):
        self.session = session


def _resolve_tenant_and_user(host: str, session_key: str | None) -> tuple[Any, Any]:
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.receivers import SESSION_TENANT_KEY
    from medportal.tenants.models import Domain

    # Channels runs these calls on one shared thread: never rely on, or leave
    # behind, a schema set by an earlier call (STACK-NOTES trap 2).
    connection.set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(domain=host).first()
    if domain is None:
        return None, AnonymousUser()
    tenant = domain.tenant
    user: Any = AnonymousUser()
    if session_key:
        with tenant_context(tenant):
            session = SessionStore(session_key)
            if session.get(SESSION_TENANT_KEY) == tenant.schema_name:
                user = get_user(_SessionHolder(session))
    return tenant, user


class TenantWebsocketMiddleware:
    """Resolve ``scope["tenant"]`` and ``scope["user"]``; refuse unknown hosts and
    origins other than the host itself (a page on beta may not open alpha's
    socket, although both are allowed hosts)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        host = _host_without_port(_header(scope, b"host"))
        origin = _header(scope, b"origin")
        origin_host = _host_without_port(urlsplit(origin).netloc) if origin else ""
        if not host or origin_host != host:
            return await WebsocketDenier()(scope, receive, send)
        session_key = None
        try:
            cookie = SimpleCookie(_header(scope, b"cookie"))
            if settings.SESSION_COOKIE_NAME in cookie:
                session_key = cookie[settings.SESSION_COOKIE_NAME].value
        except CookieError:
            session_key = None
        tenant, user = await database_sync_to_async(_resolve_tenant_and_user)(host, session_key)
        if tenant is None:
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(dict(scope, tenant=tenant, user=user), receive, send)


def group_send(group: str, payload: dict) -> None:
    """Push ``payload`` to every socket in ``group``. At most once: pages that
    miss it catch up by pulling. Call it after commit."""
    group_send_many([(group, payload)])


def group_send_many(messages: list[tuple[str, dict]]) -> None:
    """Several pushes with one trip into the event loop (each trip costs ms)."""
    layer = get_channel_layer()

    async def send_all() -> None:
        for group, payload in messages:
            await layer.group_send(group, {"type": "portal.event", "payload": payload})

    async_to_sync(send_all)()


def event_send(*, schema_name: str, payload: dict, user_id: int | None = None) -> None:
    """Push an event to a tenant's open pages (or one user's)."""
    group_send(user_group(schema_name, user_id) if user_id else tenant_group(schema_name), payload)
