"""ASGI entry point: HTTP through Django, websockets through Channels.

Both resolve the tenant from the Host header: HTTP with django-tenants'
middleware, websockets with ``medportal.realtime.TenantWebsocketMiddleware``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from medportal.realtime import TenantWebsocketMiddleware  # noqa: E402
from medportal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            TenantWebsocketMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
