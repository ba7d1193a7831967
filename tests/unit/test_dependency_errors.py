"""A request that meets a failed Redis or database gets a clear 503.

``DependencyErrorMiddleware`` answers it for exceptions from the view (``process_exception``),
the package's ``SessionMiddleware`` for the session save after the view (``process_response``).

The Redis here is a real redis-py client pointed at a loopback port nobody listens on (a real
"connection refused"); outages of a real redis-server are in
``tests/integration/test_dependency_errors_redis.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.signals import got_request_exception
from django.db import IntegrityError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path
from django_redis.exceptions import ConnectionInterrupted

from django_arena_scale.middleware import (
    DependencyErrorMiddleware,
    DependencyUnavailable,
    SessionMiddleware,
    dependency_of,
)
from tests.servers import free_port

SECRET = "password=hunter2"
PROBE = "django_arena_scale.middleware.ProbeMiddleware"
GUARD = "django_arena_scale.middleware.DependencyErrorMiddleware"
SESSIONS = "django_arena_scale.middleware.SessionMiddleware"
DJANGO_SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


# --- views of this module's urlconf ---------------------------------------------------------
def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pong": True})


def write_session(request: HttpRequest) -> JsonResponse:
    """Writes the session without reading it: the save happens in SessionMiddleware."""
    request.session["seen"] = 1
    return JsonResponse({"ok": True})


def database_down(request: HttpRequest) -> JsonResponse:
    raise OperationalError(f"could not connect to server: {SECRET}")


def integrity(request: HttpRequest) -> JsonResponse:
    raise IntegrityError("duplicate key")


def redis_in_view(request: HttpRequest) -> JsonResponse:
    from django.core.cache import caches

    caches["sessions"].set("k", 1)
    return JsonResponse({"ok": True})


class _InterruptedStore(CacheSessionStore):
    """A session deleted by a concurrent request: the save raises what Django's store does."""

    def save(self, must_create: bool = False) -> None:
        raise UpdateError


class _BuggyStore(CacheSessionStore):
    def save(self, must_create: bool = False) -> None:
        raise ValueError("a bug in the session store")


def session_interrupted(request: HttpRequest) -> JsonResponse:
    request.session = _InterruptedStore()
    request.session["seen"] = 1
    return JsonResponse({"ok": True})


def session_bug(request: HttpRequest) -> JsonResponse:
    request.session = _BuggyStore()
    request.session["seen"] = 1
    return JsonResponse({"ok": True})


def own_dependency(request: HttpRequest) -> JsonResponse:
    try:
        raise TimeoutError(f"search index did not answer ({SECRET})")
    except TimeoutError as exc:
        raise DependencyUnavailable("search", exc) from exc


urlpatterns = [
    path("ping/", ping),
    path("write-session/", write_session),
    path("database-down/", database_down),
    path("integrity/", integrity),
    path("redis-in-view/", redis_in_view),
    path("session-interrupted/", session_interrupted),
    path("session-bug/", session_bug),
    path("own-dependency/", own_dependency),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture
def dead_redis_sessions(settings: Any) -> str:
    """Sessions on a django-redis cache whose port refuses connections."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.SESSION_CACHE_ALIAS = "sessions"
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    return url


def _answer(response: Any) -> tuple[int, Any, str | None, str | None]:
    return (
        response.status_code,
        json.loads(response.content),
        response.get("Retry-After"),
        response.get("Cache-Control"),
    )


REDIS_503 = (503, {"error": "dependency_unavailable", "dependency": "redis"}, "5", "no-store")


# --- classification -------------------------------------------------------------------------
def _interrupted_by(cause: BaseException) -> BaseException:
    """django-redis's wrapping: ``raise ConnectionInterrupted(connection=...) from e``."""
    try:
        raise ConnectionInterrupted(connection=None) from cause
    except ConnectionInterrupted as exc:
        return exc


def _bug_while_handling_outage() -> None:
    try:
        raise redis.exceptions.ConnectionError("refused")
    except redis.exceptions.ConnectionError:
        raise KeyError("bug")  # noqa: B904


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (redis.exceptions.ConnectionError("refused"), "redis"),
        (redis.exceptions.TimeoutError("timed out"), "redis"),
        (redis.exceptions.BusyLoadingError("loading"), "redis"),
        (redis.exceptions.ReadOnlyError("replica"), "redis"),
        (redis.exceptions.OutOfMemoryError("command not allowed"), "redis"),
        (redis.exceptions.ResponseError("OOM command not allowed when used memory"), "redis"),
        (redis.exceptions.ResponseError("BUSY Redis is busy running a script"), "redis"),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), None),
        (redis.exceptions.DataError("bad value"), None),
        (_interrupted_by(redis.exceptions.OutOfMemoryError("x")), "redis"),
        (_interrupted_by(redis.exceptions.ResponseError("WRONGTYPE")), None),
        (_interrupted_by(TimeoutError("socket")), "redis"),
        (OperationalError("could not connect"), "database"),
        (IntegrityError("duplicate"), None),
        (ValueError("bug"), None),
        (DependencyUnavailable("redis", ValueError()), "redis"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_dependency_of(exc: BaseException, expected: str | None) -> None:
    """Outages map to their dependency; other errors (bugs, bad data) are left alone."""
    assert dependency_of(exc) == expected


def test_dependency_of_ignores_implicit_context() -> None:
    """A bug raised while handling an outage is still a bug (only explicit causes count)."""
    with pytest.raises(KeyError) as info:
        _bug_while_handling_outage()
    assert (type(info.value.__context__), dependency_of(info.value)) == (
        redis.exceptions.ConnectionError,
        None,
    )


# --- through Django's handler ----------------------------------------------------------------
def test_view_redis_failure_is_503(dead_redis_sessions: str) -> None:
    """A view that hits the dead Redis: 503 JSON, Retry-After, no-store (process_exception)."""
    assert _answer(Client().get("/redis-in-view/")) == REDIS_503


def test_session_save_failure_is_503(dead_redis_sessions: str) -> None:
    """The session save fails in SessionMiddleware.process_response, after the view: 503."""
    assert _answer(Client().get("/write-session/")) == REDIS_503


@pytest.mark.parametrize(
    "middleware",
    [[PROBE, DJANGO_SESSIONS], [PROBE, GUARD, DJANGO_SESSIONS]],
    ids=["alone", "guard"],
)
def test_session_save_failure_with_djangos_session_middleware_is_500(
    dead_redis_sessions: str, settings: Any, middleware: list[str]
) -> None:
    """With Django's own SessionMiddleware the same request is a 500, DependencyErrorMiddleware
    or not (what the package's SessionMiddleware fixes)."""
    settings.MIDDLEWARE = middleware
    response = Client(raise_request_exception=False).get("/write-session/")
    assert response.status_code == 500


def test_session_save_failure_is_503_without_dependency_error_middleware(
    dead_redis_sessions: str, settings: Any
) -> None:
    """The package's SessionMiddleware answers the 503 by itself."""
    settings.MIDDLEWARE = [PROBE, SESSIONS]
    assert _answer(Client().get("/write-session/")) == REDIS_503


def test_session_save_failure_sets_no_session_cookie(dead_redis_sessions: str) -> None:
    """The 503 replaces the view's response: no cookie for a session that was not saved."""
    response = Client().get("/write-session/")
    assert (response.status_code, dict(response.cookies)) == (503, {})


def test_session_interrupted_is_still_djangos_400(settings: Any) -> None:
    """Other exceptions of the save are raised unchanged: SessionInterrupted stays a 400."""
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    response = Client(raise_request_exception=False).get("/session-interrupted/")
    assert response.status_code == 400


def test_session_save_bug_is_raised_unchanged(settings: Any) -> None:
    """A bug in the session store is not an outage: the same exception reaches Django (500)."""
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    with pytest.raises(ValueError, match="a bug in the session store"):
        Client().get("/session-bug/")
    response = Client(raise_request_exception=False).get("/session-bug/")
    assert response.status_code == 500


def test_session_middleware_is_djangos_subclass() -> None:
    """Whatever looks for Django's SessionMiddleware (the admin's E410 check) finds it."""
    assert issubclass(SessionMiddleware, DjangoSessionMiddleware)


def test_session_save_failure_is_503_behind_other_middleware(
    dead_redis_sessions: str, settings: Any
) -> None:
    """With middleware between it and SessionMiddleware, the 503 still comes through."""
    settings.MIDDLEWARE = [
        PROBE,
        GUARD,
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        SESSIONS,
    ]
    assert _answer(Client().get("/write-session/")) == REDIS_503


async def test_session_save_failure_is_503_under_asgi(dead_redis_sessions: str) -> None:
    """Under ASGI (Django converts the exception in a worker thread) the 503 holds too."""
    assert _answer(await AsyncClient().get("/write-session/")) == REDIS_503


async def test_view_redis_failure_is_503_under_asgi(dead_redis_sessions: str) -> None:
    """... and for a view that hits Redis."""
    assert _answer(await AsyncClient().get("/redis-in-view/")) == REDIS_503


def test_request_without_session_still_200(dead_redis_sessions: str) -> None:
    """A view that needs no session answers 200 while the sessions Redis is dead."""
    response = Client().get("/ping/")
    assert (response.status_code, json.loads(response.content)) == (200, {"pong": True})


def test_database_failure_is_503_without_text(settings: Any) -> None:
    """OperationalError -> 503 database; the exception text is not in the response."""
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    response = Client().get("/database-down/")
    assert _answer(response) == (
        503,
        {"error": "dependency_unavailable", "dependency": "database"},
        "5",
        "no-store",
    )
    assert b"hunter2" not in response.content
    assert not any("hunter2" in str(v) for v in response.headers.values())


def test_other_errors_stay_500(settings: Any) -> None:
    """An IntegrityError is a bug or bad data, not an outage: Django's 500 as before."""
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    response = Client(raise_request_exception=False).get("/integrity/")
    assert response.status_code == 500


def _logged(caplog: pytest.LogCaptureFixture) -> tuple[list[logging.LogRecord], list[str]]:
    ours = [r for r in caplog.records if r.name == "django_arena_scale.dependencies"]
    django_request = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    return ours, django_request


@pytest.mark.parametrize("url", ["/write-session/", "/redis-in-view/"])
def test_logged_once_per_request_with_exception(
    dead_redis_sessions: str, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    """One WARNING with the exception per request; Django logs no 500 (nor a 503 error)."""
    with caplog.at_level(logging.WARNING):
        Client().get(url)
    ours, django_request = _logged(caplog)
    assert (len(ours), ours[0].levelno, ours[0].exc_info is not None, django_request) == (
        1,
        logging.WARNING,
        True,
        [],
    )
    assert url in ours[0].getMessage()
    assert isinstance(ours[0].exc_info[1], redis.exceptions.ConnectionError | ConnectionInterrupted)


@pytest.mark.parametrize("url", ["/write-session/", "/redis-in-view/"])
async def test_logged_once_per_request_under_asgi(
    dead_redis_sessions: str, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    """Under ASGI too (Django logs the response from a worker thread): one WARNING, nothing
    from django.request."""
    with caplog.at_level(logging.WARNING):
        await AsyncClient().get(url)
    ours, django_request = _logged(caplog)
    assert ([r.levelno for r in ours], ours[0].exc_info is not None, django_request) == (
        [logging.WARNING],
        True,
        [],
    )


@pytest.fixture
def request_exceptions() -> Iterator[list[str]]:
    """Paths of the requests ``got_request_exception`` is sent for (what error trackers see)."""
    seen: list[str] = []

    def receiver(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        seen.append(request.path if request is not None else "?")

    got_request_exception.connect(receiver)
    yield seen
    got_request_exception.disconnect(receiver)


async def test_dependency_failures_send_no_request_exception(
    dead_redis_sessions: str, request_exceptions: list[str]
) -> None:
    """A 503 answered for an outage is not an unhandled exception: got_request_exception is
    not sent (WSGI and ASGI, view and session save); a real 500 still sends it once."""
    client, aclient = Client(raise_request_exception=False), AsyncClient()
    statuses = [
        client.get("/write-session/").status_code,
        client.get("/redis-in-view/").status_code,
        (await aclient.get("/write-session/")).status_code,
        (await aclient.get("/redis-in-view/")).status_code,
    ]
    during_outage = list(request_exceptions)
    integrity = client.get("/integrity/").status_code
    assert (statuses, during_outage, integrity, request_exceptions) == (
        [503, 503, 503, 503],
        [],
        500,
        ["/integrity/"],
    )


def test_own_dependency_unavailable_is_503(settings: Any) -> None:
    """A view may raise DependencyUnavailable for a dependency of its own: same 503."""
    settings.MIDDLEWARE = [PROBE, GUARD, SESSIONS]
    assert _answer(Client().get("/own-dependency/")) == (
        503,
        {"error": "dependency_unavailable", "dependency": "search"},
        "5",
        "no-store",
    )


def test_middleware_repr_and_modes() -> None:
    """Sync and async capable, like ProbeMiddleware."""
    from asgiref.sync import iscoroutinefunction

    async def app(request: Any) -> Any:
        return None

    sync = DependencyErrorMiddleware(lambda request: None)
    assert (repr(sync), iscoroutinefunction(DependencyErrorMiddleware(app))) == (
        "<DependencyErrorMiddleware sync>",
        True,
    )
