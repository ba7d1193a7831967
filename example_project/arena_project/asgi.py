"""ASGI entry point: ``uvicorn arena_project.asgi:application`` (HTTP, SSE and WebSockets)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena_project.settings")

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from arena.routing import websocket_urlpatterns  # noqa: E402
from arena.views import my_stream, stream  # noqa: E402
from django_arena_scale.asgi import StreamRouter  # noqa: E402

# The SSE endpoints skip Django's per-request threads (a reconnect storm opens thousands of
# streams at once); StreamRouter documents which middleware hooks it still runs.  The user's
# own stream is an auth route: a lazy read-only session and ``await request.auser()``.
streams = StreamRouter(
    django_asgi_app,
    {"/messages/stream/": stream, "/messages/stream/mine/": my_stream},
    auth=["/messages/stream/mine/"],
)
application = ProtocolTypeRouter(
    {
        "http": streams,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
