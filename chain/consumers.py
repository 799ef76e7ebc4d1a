from __future__ import annotations

from accounts.consumers import RoleRequiredConsumer
from accounts.permissions import consumer_user_has_role
from accounts.roles import Role

DASHBOARD_GROUP = "chain.dashboard"


def chain_group(schema_name: str) -> str:
    return f"chain.{schema_name}"


class ChainConsumer(RoleRequiredConsumer):
    """New blocks of this host's copy of the chain (``chain.<schema>``; the hub's
    is ``chain.public``) and, for operators on the hub, every replica's progress
    (``chain.dashboard``). One-way: pages pull the rows themselves."""

    async def joined(self) -> None:
        tenant = self.scope["tenant"]
        self.chain_groups = [chain_group(tenant.schema_name)]
        if tenant.is_hub and consumer_user_has_role(self.scope, (Role.OPERATOR,)):
            self.chain_groups.append(DASHBOARD_GROUP)
        for group in self.chain_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        # Sent once the groups are joined: from here on no block is missed.
        await self.send_json({"type": "hello", "tenant": tenant.slug})

    async def disconnect(self, code) -> None:
        for group in getattr(self, "chain_groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def portal_event(self, event) -> None:
        await self.send_json(event["payload"])

    async def receive_json(self, content, **kwargs) -> None:
        # The stream is one-way; ignore anything a client sends.
        return None
