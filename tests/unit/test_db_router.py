"""ReplicaRouter and ReadYourWritesMiddleware in process: where reads and writes go.

The replicas' health comes from a ReplicaMonitor with a scripted probe (what a real probe
reports is tested against PostgreSQL in tests/integration/test_postgres.py); the cache is
Django's local-memory cache and the sessions are Django's cache sessions, both real.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from django_arena_scale.db import ReadYourWritesMiddleware, ReplicaRouter, use_primary
from django_arena_scale.db import _router as router
from django_arena_scale.db._monitor import ReplicaMonitor

REPLICAS = ["replica_1"]
router_ = ReplicaRouter()


@pytest.fixture(autouse=True)
def replicas_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bool]]:
    up = {"replica_1": True}

    def probe(alias: str) -> float:
        if not up[alias]:
            raise ConnectionRefusedError(alias)
        return 0.0

    monkeypatch.setattr(router, "monitor", ReplicaMonitor(probe))
    cache.clear()
    with override_settings(ARENA_SCALE_READ_REPLICAS=REPLICAS):
        yield up


def fresh(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a context of its own (no write remembered from another test)."""
    return contextvars.copy_context().run(func)


def test_reads_go_to_a_healthy_replica_and_writes_to_the_primary() -> None:
    assert fresh(lambda: router_.db_for_read(User)) == "replica_1"
    assert fresh(lambda: router_.db_for_write(User)) == "default"


def test_a_down_replica_sends_reads_to_the_primary(replicas_up: dict[str, bool]) -> None:
    replicas_up["replica_1"] = False
    assert fresh(lambda: router_.db_for_read(User)) == "default"


def test_without_replicas_the_router_has_no_opinion() -> None:
    with override_settings(ARENA_SCALE_READ_REPLICAS=[]):
        assert fresh(lambda: router_.db_for_read(User)) is None


@pytest.mark.django_db
def test_reads_inside_a_transaction_go_to_the_primary() -> None:
    def inside() -> str | None:
        with transaction.atomic():
            return router_.db_for_read(User)

    assert fresh(inside) == "default"


def test_use_primary_and_writes_outside_a_request() -> None:
    def scenario() -> list[str | None]:
        seen = [router_.db_for_read(User)]
        with use_primary():
            seen.append(router_.db_for_read(User))
        seen.append(router_.db_for_read(User))
        router_.db_for_write(User)  # a shell or a task wrote: its next reads follow
        seen.append(router_.db_for_read(User))
        return seen

    assert fresh(scenario) == ["replica_1", "default", "replica_1", "default"]
    with override_settings(ARENA_SCALE_READ_YOUR_WRITES=0):

        def no_window() -> str | None:
            router_.db_for_write(User)
            return router_.db_for_read(User)

        assert fresh(no_window) == "replica_1"


def test_migrations_skip_replicas_and_relations_stay_in_the_group() -> None:
    assert router_.allow_migrate("replica_1", "arena") is False
    assert router_.allow_migrate("default", "arena") is None
    a, b, c = User(), User(), User()
    a._state.db, b._state.db, c._state.db = "default", "replica_1", "analytics"
    assert router_.allow_relation(a, b) is True
    assert router_.allow_relation(a, c) is None


def session_request(session: SessionStore, method: str = "get") -> HttpRequest:
    request: HttpRequest = getattr(RequestFactory(), method)("/")
    request.session = session  # type: ignore[attr-defined]
    return request


def new_session() -> SessionStore:
    session = SessionStore()
    session.create()
    return session


def test_middleware_reads_of_a_recent_writer_go_to_the_primary_across_processes() -> None:
    reads: list[str | None] = []

    def writing_view(request: HttpRequest) -> HttpResponse:
        router_.db_for_write(User)
        reads.append(router_.db_for_read(User))  # within the request: at once
        return HttpResponse()

    def reading_view(request: HttpRequest) -> HttpResponse:
        reads.append(router_.db_for_read(User))
        return HttpResponse()

    writer, other = new_session(), new_session()
    fresh(lambda: ReadYourWritesMiddleware(writing_view)(session_request(writer, "post")))
    # A new middleware instance (another process reads the same cache) sees the record.
    fresh(lambda: ReadYourWritesMiddleware(reading_view)(session_request(writer)))
    fresh(lambda: ReadYourWritesMiddleware(reading_view)(session_request(other)))
    assert reads == ["default", "default", "replica_1"]
    # The records are keyed by hashes, never by the session key (a credential).
    records = [key for key in cache._cache if "arena_scale:ryw:" in key]  # type: ignore[attr-defined]
    assert records
    assert not any(str(writer.session_key) in key for key in records)


def test_middleware_keys_a_logged_in_writer_by_user_across_sessions() -> None:
    reads: list[str | None] = []

    def writing_view(request: HttpRequest) -> HttpResponse:
        router_.db_for_write(User)
        return HttpResponse()

    def reading_view(request: HttpRequest) -> HttpResponse:
        reads.append(router_.db_for_read(User))
        return HttpResponse()

    first, second = new_session(), new_session()
    first["_auth_user_id"] = second["_auth_user_id"] = "42"
    fresh(lambda: ReadYourWritesMiddleware(writing_view)(session_request(first, "post")))
    fresh(lambda: ReadYourWritesMiddleware(reading_view)(session_request(second)))
    assert reads == ["default"]


def test_middleware_records_nothing_when_the_window_is_off() -> None:
    def writing_view(request: HttpRequest) -> HttpResponse:
        router_.db_for_write(User)
        return HttpResponse()

    with override_settings(ARENA_SCALE_READ_YOUR_WRITES=0):
        fresh(lambda: ReadYourWritesMiddleware(writing_view)(session_request(new_session())))
    assert not any("arena_scale:ryw:" in key for key in cache._cache)  # type: ignore[attr-defined]


def test_async_middleware_records_writes_made_in_a_sync_view() -> None:
    from asgiref.sync import sync_to_async

    reads: list[str | None] = []

    def write() -> None:
        router_.db_for_write(User)

    async def writing_view(request: HttpRequest) -> HttpResponse:
        await sync_to_async(write)()
        return HttpResponse()

    async def reading_view(request: HttpRequest) -> HttpResponse:
        reads.append(await sync_to_async(router_.db_for_read)(User))
        return HttpResponse()

    session = new_session()
    fresh(lambda: asyncio.run(ReadYourWritesMiddleware(writing_view)(session_request(session))))
    fresh(lambda: asyncio.run(ReadYourWritesMiddleware(reading_view)(session_request(session))))
    assert reads == ["default"]
