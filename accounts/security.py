"""Client address behind reverse proxies, for lockout and audit."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str:
    """The address of the client, trusting exactly TRUSTED_PROXY_COUNT proxies.

    Each trusted proxy appends the address it saw to X-Forwarded-For, so the
    client is the N-th entry from the right; anything further left was written
    by the client and can be forged. With no trusted proxy the header is ignored.
    """
    remote = request.META.get("REMOTE_ADDR", "") or ""
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    forwarded = [
        part for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    if len(forwarded) < count:
        return remote
    return _valid_ip(forwarded[-count]) or remote
