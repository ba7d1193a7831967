"""WebSocket chat: every message sent into a room is broadcast to the room's group.

Limits per connection (a client cannot make a replica relay unbounded data):

- a frame larger than :data:`MAX_FRAME_BYTES` (4 KiB of UTF-8) closes the connection with
  1009 (message too big); binary frames close it with 1003 (unsupported data).  The server
  refuses far larger frames itself: ``UvicornWorker`` lowers uvicorn's ``ws_max_size``.
- more than :data:`RATE_PER_SECOND` messages a second, after a burst of :data:`BURST`, closes
  it with 1008 (policy violation): a token bucket per connection.
- a frame that is not a JSON object with a 1-2000 character ``message`` gets an ``error`` frame
  and the connection stays open.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena import panel
from arena.views import replica_name
from django_arena_scale.lifecycle import DrainAwareConsumerMixin

ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MESSAGE = 2000
MAX_FRAME_BYTES = 4096
RATE_PER_SECOND = 5.0
BURST = 10
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
EXPECTED = {"error": "expected {'message': '<1-2000 characters>'}"}


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` is False when none is left."""

    def __init__(self, rate: float, burst: int, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ChatConsumer(DrainAwareConsumerMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Joins the group ``chat.<room>``; a ``{"message": "..."}`` frame is sent to every member.

    Closed with 1012 when the replica drains, so the client reconnects to another replica.
    """

    group_name = ""
    closing = False
    counted = False

    async def connect(self) -> None:
        self.bucket = TokenBucket(RATE_PER_SECOND, BURST)
        room = self.scope["url_route"]["kwargs"]["room"]
        if not ROOM_RE.match(room):
            await self.close(code=4400)
            return
        self.group_name = f"chat.{room}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        panel.opened("websockets")
        self.counted = True

    async def disconnect(self, code: int) -> None:
        if self.counted:
            self.counted = False
            panel.closed("websockets")
        if self.group_name:
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def _refuse(self, code: int, reason: str) -> None:
        self.closing = True
        await self.close(code=code, reason=reason)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if self.closing:
            return  # frames already queued when the connection was refused
        if not self.bucket.take():
            await self._refuse(
                CLOSE_POLICY, f"at most {RATE_PER_SECOND:g} messages a second (burst {BURST})"
            )
            return
        if text_data is None:
            await self._refuse(CLOSE_UNSUPPORTED, "text frames only")
            return
        if len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
            await self._refuse(CLOSE_TOO_BIG, f"at most {MAX_FRAME_BYTES} bytes a message")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_json(EXPECTED)
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        message = content.get("message") if isinstance(content, dict) else None
        if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE:
            await self.send_json(EXPECTED)
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
