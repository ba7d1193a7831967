"""StreamRouter: the native ASGI fast path for async stream views."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from django_arena_scale.asgi import INLINE_SAFE_MIDDLEWARE, StreamRouter
from django_arena_scale.lifecycle import _streams as streams
from django_arena_scale.lifecycle._state import Lifecycle, reset_lifecycle

XFRAME = "django.middleware.clickjacking.XFrameOptionsMiddleware"
SECURITY = "django.middleware.security.SecurityMiddleware"


@pytest.fixture(autouse=True)
def lifecycle() -> Iterator[Lifecycle]:
    lc = reset_lifecycle()
    lc.mark_ready()
    yield lc
    reset_lifecycle()


def scope(path: str = "/stream/", host: bytes = b"localhost", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        **extra,
    }


class Client:
    """An ASGI server stand-in: records what the app sends; ``leave()`` disconnects."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.requested = False

    async def receive(self) -> dict[str, Any]:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.gone.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return {k.lower(): v for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


async def django_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


async def ticks(n: int, delay: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(delay)
        yield f"data: {i}\n\n".encode()


async def three_events(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(ticks(3), content_type="text/event-stream")


async def test_stream_router_passes_other_paths_to_app() -> None:
    """A path that is not routed is served by the wrapped Django application."""
    client = Client()
    router = StreamRouter(django_app, {"/stream/": three_events}, middleware=[])
    await router(scope("/api/ping/"), client.receive, client.send)
    assert (client.status, client.body) == (299, b"django")


async def test_stream_router_passes_websocket_scopes_to_app() -> None:
    """Only HTTP scopes are routed; a WebSocket on the stream path goes to the app."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    router = StreamRouter(app, {"/stream/": three_events}, middleware=[])
    await router({"type": "websocket", "path": "/stream/"}, Client().receive, Client().send)
    assert seen == ["websocket"]


async def test_stream_router_streams_view_chunks_then_ends() -> None:
    """The view's chunks go out as more_body messages, then an empty final body."""
    client = Client()
    router = StreamRouter(django_app, {"/stream/": three_events}, middleware=[])
    await router(scope(), client.receive, client.send)
    assert client.status == 200
    assert client.headers[b"content-type"] == b"text/event-stream"
    assert client.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert client.sent[-1] == {"type": "http.response.body"}


async def test_stream_router_sends_plain_response_of_view() -> None:
    """A non-streaming answer of the view (an error) is sent with its status."""

    async def bad(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"error": request.GET["why"]}, status=400)

    client = Client()
    router = StreamRouter(django_app, {"/stream/": bad}, middleware=[])
    await router(scope(query_string=b"why=tokens"), client.receive, client.send)
    assert (client.status, client.body) == (400, b'{"error": "tokens"}')


async def test_stream_router_rejects_disallowed_host(settings: Any) -> None:
    """A Host outside ALLOWED_HOSTS gets 400 and the view never runs."""
    settings.ALLOWED_HOSTS = ["localhost"]
    called: list[bool] = []

    async def view(request: HttpRequest) -> HttpResponse:
        called.append(True)
        return HttpResponse("no")

    client = Client()
    router = StreamRouter(django_app, {"/stream/": view}, middleware=[])
    await router(scope(host=b"evil.example"), client.receive, client.send)
    assert (client.status, called) == (400, [])


async def test_stream_router_applies_middleware_response_hooks(settings: Any) -> None:
    """The listed middleware add their headers (X-Frame-Options, nosniff)."""
    settings.X_FRAME_OPTIONS = "DENY"
    client = Client()
    router = StreamRouter(django_app, {"/stream/": three_events}, middleware=[SECURITY, XFRAME])
    await router(scope(), client.receive, client.send)
    assert client.headers[b"x-frame-options"] == b"DENY"
    assert client.headers[b"x-content-type-options"] == b"nosniff"


def test_stream_router_default_middleware_is_inline_safe_subset(settings: Any) -> None:
    """By default only the inline-safe entries of MIDDLEWARE run, in settings order."""
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        XFRAME,
        "django.middleware.csrf.CsrfViewMiddleware",
        SECURITY,
    ]
    router = StreamRouter(django_app, {"/stream/": three_events})
    assert router.middleware_paths == [XFRAME, SECURITY]
    assert set(router.middleware_paths) <= INLINE_SAFE_MIDDLEWARE


def test_stream_router_refuses_sync_view() -> None:
    """A sync view cannot run on the event loop: configuration error naming the route."""

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(ImproperlyConfigured, match="'/stream/'"):
        StreamRouter(django_app, {"/stream/": sync_view}, middleware=[])  # type: ignore[dict-item]


async def test_stream_router_disconnect_closes_source() -> None:
    """When the client leaves, the view's stream is cancelled and its generator closed."""
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
                await asyncio.sleep(10)
        finally:
            closed.set()

    async def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(endless(), content_type="text/event-stream")

    client = Client()
    router = StreamRouter(django_app, {"/stream/": view}, middleware=[])
    task = asyncio.ensure_future(router(scope(), client.receive, client.send))
    while len(client.sent) < 2:
        await asyncio.sleep(0.01)
    client.leave()
    await asyncio.wait_for(task, 2)
    assert closed.is_set()


async def test_stream_router_drain_ends_stream_with_reconnect(
    lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain-aware stream served by the router ends with the reconnect event on drain."""
    monkeypatch.setattr(streams, "DRAIN_POLL_INTERVAL", 0.01)

    async def view(request: HttpRequest) -> StreamingHttpResponse:
        source = streams.drain_aware_sse(ticks(1000, 0.01), retry_ms=10)
        return StreamingHttpResponse(source, content_type="text/event-stream")

    client = Client()
    router = StreamRouter(django_app, {"/stream/": view}, middleware=[])
    task = asyncio.ensure_future(router(scope(), client.receive, client.send))
    while len(client.sent) < 3:
        await asyncio.sleep(0.01)
    lifecycle.begin_drain()
    await asyncio.wait_for(task, 2)
    assert client.body.endswith(streams.reconnect_event(retry_ms=10))
    client.leave()


class ClosableEvents:
    """An async iterable with a sync ``close()``, which Django registers as a resource closer."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return ticks(2)

    def close(self) -> None:
        self.closed = True


async def test_stream_router_runs_resource_closers() -> None:
    """The response's resource closers run once the stream has been sent."""
    events = ClosableEvents()

    async def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(events, content_type="text/event-stream")

    client = Client()
    await StreamRouter(django_app, {"/stream/": view}, middleware=[])(
        scope(), client.receive, client.send
    )
    assert events.closed


async def test_stream_router_sends_no_request_finished() -> None:
    """Sync request_finished receivers do not run on the event loop for a fast-path stream."""
    calls: list[object] = []

    def receiver(sender: object, **kwargs: object) -> None:
        calls.append(sender)

    request_finished.connect(receiver)
    try:
        client = Client()
        await StreamRouter(django_app, {"/stream/": three_events}, middleware=[])(
            scope(), client.receive, client.send
        )
    finally:
        request_finished.disconnect(receiver)
    assert (client.status, calls) == (200, [])
