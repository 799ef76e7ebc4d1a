from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.permissions import consumer_user_has_role
from accounts.roles import Role
from medportal.realtime import tenant_group, user_group


class RoleRequiredConsumer(AsyncJsonWebsocketConsumer):
    """Base for every consumer: the same role check as pages and the API.

    A refused socket is accepted and closed at once with 4401 (signed out) or
    4403 (role not allowed), so the page can say why; refusing the handshake
    would only show the browser a bare 403. Nothing is sent before closing."""

    allowed_roles: tuple[str, ...] = tuple(Role.values)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=4401)
            return
        if not consumer_user_has_role(self.scope, self.allowed_roles):
            await self.accept()
            await self.close(code=4403)
            return
        await self.joined()

    async def joined(self) -> None:
        await self.accept()


class EventsConsumer(RoleRequiredConsumer):
    """Live events for this tenant's pages and for the signed-in person."""

    async def joined(self) -> None:
        schema = self.scope["tenant"].schema_name
        self.event_groups = [tenant_group(schema), user_group(schema, self.scope["user"].pk)]
        for group in self.event_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json(
            {"type": "hello", "tenant": self.scope["tenant"].slug, "role": self.scope["user"].role}
        )

    async def disconnect(self, code) -> None:
        for group in getattr(self, "event_groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def portal_event(self, event) -> None:
        await self.send_json(event["payload"])

    async def receive_json(self, content, **kwargs) -> None:
        # The stream is one-way; ignore anything a client sends.
        return None
