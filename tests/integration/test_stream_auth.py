"""The user's own SSE stream (a StreamRouter auth route) with sessions in a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.example_app import DEMO_USER, ExampleServer, example_env, login
from tests.example_db import ExampleDatabases
from tests.integration.test_example_project import sse_events
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

MINE = "/messages/stream/mine/"
PARAMS = {"tokens": 2, "delay": 0}


@pytest.fixture(scope="module")
def sessions_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def server(
    request: pytest.FixtureRequest,
    sessions_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    example_databases: ExampleDatabases,
) -> Iterator[ExampleServer]:
    """The example under uvicorn (fast path) or gunicorn (Django's stack), Redis sessions."""
    log = tmp_path_factory.mktemp("logs") / f"{request.param}-auth.log"
    with example_databases.database("stream_auth") as db:
        env = example_env(db, SESSION_REDIS_URL=sessions_redis.url)
        with ExampleServer(request.param, env, log) as srv:
            yield srv


@pytest.fixture
def client(server: ExampleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def test_stream_auth_user_logged_in_by_view_is_seen_by_stream(client: httpx.Client) -> None:
    """A login through the regular Django view is the user of the stream (session in Redis)."""
    login(client)
    with client.stream("GET", MINE, params=PARAMS) as response:
        events = sse_events(response)
    assert response.status_code == 200
    assert events[0] == ("user", {"user": DEMO_USER})
    assert [name for name, _ in events[1:]] == ["token", "token", "done"]


def test_stream_auth_session_lives_in_redis(
    client: httpx.Client, sessions_redis: RedisServer
) -> None:
    """The session the stream reads is the one the login view stored in the sessions Redis."""
    login(client)
    with redis.Redis.from_url(sessions_redis.url) as r:
        keys = [k.decode() for k in r.keys("*")]
    assert any(k.endswith(client.cookies["sessionid"]) for k in keys)


def test_stream_auth_read_only_sends_no_cookie(client: httpx.Client) -> None:
    """The stream reads the session but neither rotates nor refreshes it: no Set-Cookie."""
    login(client)
    with client.stream("GET", MINE, params=PARAMS) as response:
        response.read()
    assert "set-cookie" not in response.headers
    assert "Cookie" in response.headers["vary"]


def test_stream_auth_anonymous_is_rejected(client: httpx.Client) -> None:
    """Without a session the user's stream answers 401 and streams nothing."""
    response = client.get(MINE, params=PARAMS)
    assert (response.status_code, response.json()) == (401, {"error": "authentication required"})


def test_stream_auth_logged_out_session_is_rejected(client: httpx.Client) -> None:
    """After logout through the regular view, the old session cookie no longer opens it."""
    token = login(client)
    old = client.cookies["sessionid"]
    assert client.post("/auth/logout/", headers={"X-CSRFToken": token}).status_code == 200
    client.cookies.set("sessionid", old)
    assert client.get(MINE, params=PARAMS).status_code == 401


def test_stream_auth_public_stream_stays_anonymous(client: httpx.Client) -> None:
    """The public stream (auth off) still serves anonymous clients, without Vary: Cookie."""
    with client.stream("GET", "/messages/stream/", params=PARAMS) as response:
        events = sse_events(response)
    assert (response.status_code, events[-1][0]) == (200, "done")
    assert "vary" not in response.headers
