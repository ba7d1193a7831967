"""WebSocket chat: every message sent into a room is broadcast to the room's group."""

from __future__ import annotations

import re
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena.views import replica_name
from django_arena_scale.lifecycle.streams import DrainAwareConsumerMixin

ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MESSAGE = 2000


class ChatConsumer(DrainAwareConsumerMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Joins the group ``chat.<room>``; a ``{"message": "..."}`` frame is sent to every member.

    Closed with 1012 when the replica drains, so the client reconnects to another replica.
    """

    group_name = ""

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room"]
        if not ROOM_RE.match(room):
            await self.close(code=4400)
            return
        self.group_name = f"chat.{room}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group_name:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        message = content.get("message") if isinstance(content, dict) else None
        if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE:
            await self.send_json({"error": "expected {'message': '<1-2000 characters>'}"})
            return
        user = self.scope.get("user")
        await self.channel_layer.group_send(
            self.group_name,
            {
                "type": "chat.message",
                "message": message,
                "user": user.get_username() if user and user.is_authenticated else None,
                "replica": replica_name(),
            },
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "message": event["message"],
                "user": event["user"],
                "from_replica": event["replica"],
                "replica": replica_name(),
            }
        )
