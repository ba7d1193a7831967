"""A dead or full sessions Redis under a real gunicorn and uvicorn: the example project.

Requests that need the session get a fast, clear 503 ``dependency_unavailable``: the login
from ``DependencyErrorMiddleware`` (the session is created in the view), a logged-in POST to
a full Redis from the package's ``SessionMiddleware`` (the session is saved after the view).
Each 503 is logged once at WARNING and never as Django's "Service Unavailable" or "Internal
Server Error".  Requests that need no session (``/api/ping/``) answer 200; ``/ready/`` stays
200 (a shared dependency does not take the replica out); ``/status/`` shows the Redis check
failing.  Also in-process with Django's handler (WSGI and ASGI) and a real redis-server, for
the session save after the view.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path

from django_arena_scale.health._builtin import memory_status, redis_checks
from django_arena_scale.health._runner import Runner
from tests.example_app import DEMO_PASSWORD, DEMO_USER, ExampleServer, example_env
from tests.example_db import ExampleDatabase, ExampleDatabases
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

TOKEN = "dependency-errors-status-token"
REDIS_503 = {"error": "dependency_unavailable", "dependency": "redis"}
CREDENTIALS = {"username": DEMO_USER, "password": DEMO_PASSWORD}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def fill(server: RedisServer) -> int:
    """Put the server over its ``maxmemory`` with ``noeviction``: every write is refused.

    Writes 256 keys of 1 KiB, then sets ``maxmemory`` 128 KiB below what is in use (Redis
    cannot evict, so it refuses writes: "OOM command not allowed"), which is where a
    sessions Redis ends when it fills up.  Returns the ``maxmemory`` set.
    """
    client = redis.Redis.from_url(server.url)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        for i in range(256):
            client.set(f"filler:{i}", b"x" * 1024)
        limit = int(client.info("memory")["used_memory"]) - 128 * 1024
        client.config_set("maxmemory", limit)
        try:
            client.set("filler:probe", b"x")
        except redis.exceptions.ResponseError as exc:
            refused = str(exc)
        else:
            refused = ""
    finally:
        client.close()
    if "maxmemory" not in refused:
        raise AssertionError(f"Redis still takes writes at maxmemory {limit}: {refused!r}")
    return limit


def unfill(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        client.config_set("maxmemory", 0)
        client.flushall()
    finally:
        client.close()


# --- the example project under real servers ---------------------------------------------------
@pytest.fixture(scope="module")
def example_db(example_databases: ExampleDatabases) -> Iterator[ExampleDatabase]:
    with example_databases.database("deps") as db:
        yield db


class Answered503:
    """Counts the ``dependency_unavailable`` 503s a client received (an httpx response hook)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, response: httpx.Response) -> None:
        if response.status_code == 503:
            response.read()
            if response.json().get("error") == "dependency_unavailable":
                self.count += 1


@pytest.fixture(params=["gunicorn", "uvicorn"])
def served(
    request: pytest.FixtureRequest,
    example_db: ExampleDatabase,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> Iterator[tuple[ExampleServer, httpx.Client]]:
    env = example_env(
        example_db,
        REDIS_URL=fresh_redis.url,
        ARENA_SCALE_STATUS_TOKEN=TOKEN,
        ARENA_SCALE_CHECK_CACHE_TTL="0.2",
    )
    answered = Answered503()
    with (
        ExampleServer(request.param, env, tmp_path / "server.log") as server,
        httpx.Client(
            base_url=server.url, timeout=5.0, event_hooks={"response": [answered]}
        ) as client,
    ):
        client.answered_503 = answered  # type: ignore[attr-defined]
        yield server, client


def _log_of_503s(server: ExampleServer, client: httpx.Client) -> tuple[int, int, int, int]:
    """(503s received, WARNING lines for them, Django 'Service Unavailable' / 500 lines)."""
    log = server.log_path.read_text(errors="replace")
    return (
        client.answered_503.count,  # type: ignore[attr-defined]
        log.count("unavailable; answered 503."),
        log.count("Service Unavailable: /"),
        log.count("Internal Server Error"),
    )


def _redis_checks(client: httpx.Client) -> dict[str, tuple[str, str | None]]:
    body = client.get("/status/", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    return {
        name: (entries[0]["status"], entries[0].get("output"))
        for name, entries in body["checks"].items()
        if name.startswith("redis:")
    }


def _login(client: httpx.Client) -> httpx.Response:
    client.cookies.clear()
    return client.post("/auth/login/", json=CREDENTIALS)


def _post_message(client: httpx.Client, csrf_token: str) -> httpx.Response:
    """A logged-in POST: the view adds to the session, SessionMiddleware saves it after."""
    return client.post(
        "/api/messages/", json={"text": "hello"}, headers={"X-CSRFToken": csrf_token}
    )


def _shape(response: httpx.Response) -> tuple[int, Any, str | None, str | None, str]:
    return (
        response.status_code,
        response.json(),
        response.headers.get("Retry-After"),
        response.headers.get("Cache-Control"),
        response.headers.get("Content-Type", ""),
    )


EXPECTED_503 = (503, REDIS_503, "5", "no-store", "application/json")


def test_sessions_redis_killed(
    served: tuple[ExampleServer, httpx.Client], fresh_redis: RedisServer
) -> None:
    """Redis killed: login 503 JSON, ping 200, /ready/ 200, /status/ shows Redis failing."""
    server, client = served
    logged_in = _login(client)
    before = logged_in.status_code
    csrf_token = logged_in.json().get("csrf_token", "")
    fresh_redis.kill()
    _wait_until(
        lambda: any(s[0] == "fail" for s in _redis_checks(client).values()),
        10,
        "/status/ shows Redis failing",
    )
    # The logged-in user's session cannot be read: 503, never "anonymous" (401/403/None).
    whoami = client.get("/api/whoami/")
    posted = _post_message(client, csrf_token)
    started = time.monotonic()
    login = _login(client)
    login_seconds = time.monotonic() - started
    ping = client.get("/api/ping/")
    ready = client.get("/ready/")
    checks = _redis_checks(client)
    print(f"[{server.kind}] login with Redis killed: {login.status_code} in {login_seconds:.3f}s")
    fresh_redis.start()
    _wait_until(lambda: _login(client).status_code == 200, 15, "login works after restart")

    logged = _log_of_503s(server, client)
    assert before == 200
    assert _shape(login) == EXPECTED_503
    assert (_shape(whoami), _shape(posted)) == (EXPECTED_503, EXPECTED_503)
    assert ("Error" in login.text, "Traceback" in login.text) == (False, False)
    assert (logged[0] >= 1, logged[1:]) == (True, (logged[0], 0, 0))
    assert (ping.status_code, ping.json()) == (200, {"pong": True})
    assert (ready.status_code, ready.json()) == (200, {"status": "pass"})
    assert (len(checks) > 0, set(checks.values())) == (True, {("fail", "unavailable")})


def test_sessions_redis_full(
    served: tuple[ExampleServer, httpx.Client], fresh_redis: RedisServer
) -> None:
    """Redis at maxmemory with noeviction: login 503; a logged-in POST, whose session save
    after the view is refused, 503 too; ping 200, /status/ Redis unavailable."""
    server, client = served
    before = _login(client)
    token = before.json()["csrf_token"]
    post_before = _post_message(client, token)
    limit = fill(fresh_redis)
    _wait_until(
        lambda: any(s[0] == "fail" for s in _redis_checks(client).values()),
        10,
        "/status/ shows the full Redis failing",
    )
    # Reading the session still works on a full Redis; saving it is refused.
    post = _post_message(client, token)
    login = _login(client)
    ping = client.get("/api/ping/")
    ready = client.get("/ready/")
    checks = _redis_checks(client)
    print(
        f"[{server.kind}] Redis over maxmemory {limit}: POST {post.status_code}, "
        f"login {login.status_code}"
    )
    unfill(fresh_redis)
    _wait_until(lambda: _login(client).status_code == 200, 15, "login works after unfill")
    logged = _log_of_503s(server, client)

    assert (before.status_code, post_before.status_code) == (200, 201)
    assert _shape(post) == EXPECTED_503
    assert "OOM" not in post.text
    assert _shape(login) == EXPECTED_503
    assert "OOM" not in login.text
    assert (logged[0] >= 2, logged[1:]) == (True, (logged[0], 0, 0))
    assert (ping.status_code, ping.json()) == (200, {"pong": True})
    assert (ready.status_code, ready.json()) == (200, {"status": "pass"})
    assert (len(checks) > 0, set(checks.values())) == (True, {("fail", "unavailable")})


# --- in-process: the session save in SessionMiddleware, after the view ------------------------
def write_session(request: HttpRequest) -> JsonResponse:
    """Writes the session without reading it: Redis is first touched by the save."""
    request.session["seen"] = 1
    return JsonResponse({"ok": True})


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pong": True})


urlpatterns = [path("write-session/", write_session), path("ping/", ping)]


@pytest.fixture
def sessions_on(settings: Any, fresh_redis: RedisServer) -> RedisServer:
    settings.ROOT_URLCONF = __name__
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": fresh_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.SESSION_CACHE_ALIAS = "sessions"
    settings.MIDDLEWARE = [
        "django_arena_scale.middleware.ProbeMiddleware",
        "django_arena_scale.middleware.DependencyErrorMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django_arena_scale.middleware.SessionMiddleware",
    ]
    return fresh_redis


def _in_process(client: Client, url: str) -> tuple[int, Any]:
    response = client.get(url)
    return response.status_code, json.loads(response.content)


def test_session_save_after_view_dead_redis(sessions_on: RedisServer) -> None:
    """Killed Redis: the save in process_response becomes 503, not Django's 500."""
    client = Client()
    before = _in_process(client, "/write-session/")
    sessions_on.kill()
    after = _in_process(client, "/write-session/")
    assert (before, after, _in_process(client, "/ping/")) == (
        (200, {"ok": True}),
        (503, REDIS_503),
        (200, {"pong": True}),
    )


async def test_session_save_after_view_dead_redis_under_asgi(sessions_on: RedisServer) -> None:
    """Under ASGI (SessionMiddleware's process_response runs in a worker thread): 503 too."""
    client = AsyncClient()

    async def get(url: str) -> tuple[int, Any]:
        response = await client.get(url)
        return response.status_code, json.loads(response.content)

    before = await get("/write-session/")
    sessions_on.kill()
    after = await get("/write-session/")
    assert (before, after, await get("/ping/")) == (
        (200, {"ok": True}),
        (503, REDIS_503),
        (200, {"pong": True}),
    )


def test_session_save_after_view_full_redis(sessions_on: RedisServer) -> None:
    """Full Redis (OOM on write): the save in process_response becomes 503 too."""
    client = Client()
    before = _in_process(client, "/write-session/")
    fill(sessions_on)
    client.cookies.clear()
    assert (before, _in_process(client, "/write-session/")) == (
        (200, {"ok": True}),
        (503, REDIS_503),
    )


def test_redis_check_full_is_unavailable_and_nearly_full_warns(
    sessions_on: RedisServer,
) -> None:
    """The built-in Redis check reads INFO memory: full -> unavailable; and recovers."""

    def outcome() -> dict[str, str]:
        report = Runner().evaluate(redis_checks(), deadline=5, default_timeout=5)
        return {r.name: (r.reason.value if r.reason else r.status.value) for r in report.results}

    healthy = outcome()
    fill(sessions_on)
    full = outcome()
    unfill(sessions_on)
    assert (healthy, full, outcome()) == (
        {"redis:sessions": "pass"},
        {"redis:sessions": "unavailable"},
        {"redis:sessions": "pass"},
    )


def test_memory_status_thresholds() -> None:
    """Only noeviction with a maxmemory can be full (64 KiB headroom); 90% warns."""
    mib = 2**20
    full_at = 10 * mib - 64 * 1024

    def info(used: int, policy: str = "noeviction", maxmemory: int = 10 * mib, **extra: int):
        return {"used_memory": used, "maxmemory": maxmemory, "maxmemory_policy": policy, **extra}

    cases = [
        info(10 * mib, maxmemory=0),
        info(10 * mib, policy="allkeys-lru"),
        info(5 * mib),
        info(9 * mib + mib // 2),
        info(full_at - 1),
        info(full_at),
        info(11 * mib),
        info(11 * mib, mem_not_counted_for_evict=3 * mib),
    ]
    assert [memory_status(c).value for c in cases] == [
        "pass",
        "pass",
        "pass",
        "warn",
        "warn",
        "fail",
        "fail",
        "pass",
    ]
