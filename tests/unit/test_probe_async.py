"""ProbeMiddleware under ASGI: async mode, same answers, no event-loop blocking."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse
from django.test import AsyncClient, AsyncRequestFactory

from django_arena_scale.health._model import Check, Unavailable
from django_arena_scale.health._service import get_runner
from django_arena_scale.lifecycle._state import get_lifecycle
from django_arena_scale.middleware import ProbeMiddleware


@pytest.fixture(autouse=True)
def _async_settings(settings: Any) -> None:
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_CHECKS = []


async def _app(request: Any) -> HttpResponse:
    return HttpResponse("app")


def test_probe_async_mode_detected() -> None:
    """With an async get_response the middleware is a coroutine function."""
    assert iscoroutinefunction(ProbeMiddleware(_app))


async def test_probe_async_live(async_client: AsyncClient) -> None:
    """/live/ under ASGI answers 200 pass."""
    response = await async_client.get("/live/")
    assert (response.status_code, json.loads(response.content)) == (200, {"status": "pass"})


async def test_probe_async_ready_failure_reason(async_client: AsyncClient, settings: Any) -> None:
    """/ready/ under ASGI reports failing checks with their reason."""

    def down() -> None:
        raise Unavailable

    settings.ARENA_SCALE_CHECKS = [Check("redis", down)]
    response = await async_client.get("/ready/")
    assert json.loads(response.content) == {"status": "fail", "checks": {"redis": "unavailable"}}


async def test_probe_async_ready_async_check_raising_fails(
    async_client: AsyncClient, client: Any, settings: Any
) -> None:
    """An async def check that raises fails /ready/ under ASGI and WSGI (it read as a pass)."""

    async def broken() -> None:
        raise RuntimeError("boom")

    settings.ARENA_SCALE_CHECKS = [Check("search", broken)]
    under_asgi = await async_client.get("/ready/")
    get_runner().clear()
    from asgiref.sync import sync_to_async

    under_wsgi = await sync_to_async(client.get)("/ready/")
    expected = {"status": "fail", "checks": {"search": "error"}}
    assert [(r.status_code, json.loads(r.content)) for r in (under_asgi, under_wsgi)] == [
        (503, expected),
        (503, expected),
    ]


async def test_probe_async_health_draining(async_client: AsyncClient) -> None:
    """/health/ under ASGI answers 503 while draining."""
    get_lifecycle().begin_drain()
    assert (await async_client.get("/health/")).status_code == 503


async def test_probe_async_status_minimal(async_client: AsyncClient) -> None:
    """/status/ under ASGI answers health+json."""
    response = await async_client.get("/status/")
    assert response["Content-Type"] == "application/health+json"


async def test_probe_async_passes_other_paths() -> None:
    """Non-probe paths are awaited through to the app."""
    response = await ProbeMiddleware(_app)(AsyncRequestFactory().get("/other/"))
    assert response.content == b"app"


async def test_probe_async_head_has_no_body() -> None:
    """HEAD under ASGI has no body."""
    response = await ProbeMiddleware(_app)(AsyncRequestFactory().head("/ready/"))
    assert (response.status_code, response.content) == (200, b"")


async def test_probe_async_ready_does_not_block_loop(settings: Any) -> None:
    """A slow check does not block the event loop of an async /ready/."""
    release = threading.Event()
    settings.ARENA_SCALE_READY_DEADLINE = 5
    settings.ARENA_SCALE_CHECKS = [Check("slow", lambda: release.wait(5), timeout=5)]
    middleware = ProbeMiddleware(_app)
    task = asyncio.ensure_future(middleware(AsyncRequestFactory().get("/ready/")))
    for _ in range(3):
        await asyncio.sleep(0)
    blocked_loop_ran = not task.done()
    release.set()
    await task
    assert blocked_loop_ran


async def test_probe_async_single_flight_100_requests(settings: Any) -> None:
    """100 concurrent async /ready/ requests cause one evaluation."""
    release = threading.Event()
    calls = []

    def slow() -> None:
        calls.append(1)
        release.wait(10)

    settings.ARENA_SCALE_READY_DEADLINE = 10
    settings.ARENA_SCALE_CHECKS = [Check("slow", slow, timeout=10)]
    middleware = ProbeMiddleware(_app)
    factory = AsyncRequestFactory()
    tasks = [asyncio.ensure_future(middleware(factory.get("/ready/"))) for _ in range(100)]
    for _ in range(2000):
        if get_runner().joined >= 99:
            break
        await asyncio.sleep(0.005)
    release.set()
    responses = await asyncio.gather(*tasks)
    statuses = [r.status_code for r in responses]
    assert (get_runner().evaluations, len(calls), statuses.count(200)) == (1, 1, 100)


async def test_probe_async_internal_failure_is_bare_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected failure in the async path is a bare JSON 503."""
    from django_arena_scale.health import _service as service

    async def boom(request: Any) -> Any:
        raise RuntimeError("secret")

    monkeypatch.setattr(service, "aready", boom)
    response = await ProbeMiddleware(_app)(AsyncRequestFactory().get("/ready/"))
    assert (response.status_code, response.content) == (503, b'{"status":"fail"}')
