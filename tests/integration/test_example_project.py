"""The example project under a real gunicorn (WSGI) and a real uvicorn (ASGI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.example_app import ExampleServer, example_env, login
from tests.example_db import ExampleDatabase, ExampleDatabases
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

WS_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def example_db(example_databases: ExampleDatabases) -> Iterator[ExampleDatabase]:
    """A migrated database (with the demo user) shared by the module's servers."""
    with example_databases.database("example") as db:
        yield db


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest,
    example_db: ExampleDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExampleServer]:
    """The example project served by gunicorn (gthread) or uvicorn."""
    log = tmp_path_factory.mktemp("logs") / f"{request.param}.log"
    with ExampleServer(request.param, example_env(example_db), log) as srv:
        yield srv


@pytest.fixture(scope="module")
def asgi_server(
    example_db: ExampleDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExampleServer]:
    """The example project under uvicorn, for WebSockets."""
    log = tmp_path_factory.mktemp("logs") / "uvicorn-ws.log"
    with ExampleServer("uvicorn", example_env(example_db), log) as srv:
        yield srv


@pytest.fixture
def client(server: ExampleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    """Parse a text/event-stream body into (event, data) pairs."""
    events = []
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and data:
            events.append((event, json.loads(data)))
            event, data = "message", ""
    return events


def test_example_ping_answers_json(client: httpx.Client) -> None:
    """/api/ping/ is the trivial JSON baseline view."""
    response = client.get("/api/ping/")
    assert (response.status_code, response.json()) == (200, {"pong": True})


def test_example_probe_answered_for_unknown_host(client: httpx.Client) -> None:
    """ProbeMiddleware answers /health/ even for a Host header not in ALLOWED_HOSTS."""
    response = client.get("/health/", headers={"Host": "10.9.8.7"})
    assert (response.status_code, response.json()["status"]) == (200, "pass")


def test_example_login_rejects_wrong_password(client: httpx.Client) -> None:
    """Bad credentials give 401 JSON, not a redirect or HTML."""
    response = client.post("/auth/login/", json={"username": "demo", "password": "nope"})
    assert response.status_code == 401


def test_example_post_without_login_is_rejected(client: httpx.Client) -> None:
    """Posting a message needs a logged-in session."""
    response = client.post("/api/messages/", json={"text": "anonymous"})
    assert response.status_code in {401, 403}


def test_example_post_without_csrf_token_is_rejected(client: httpx.Client) -> None:
    """A session-authenticated POST without X-CSRFToken is refused by CsrfViewMiddleware."""
    login(client)
    response = client.post("/api/messages/", json={"text": "no token"})
    assert response.status_code == 403


def test_example_messages_roundtrip_uses_session(
    client: httpx.Client, server: ExampleServer
) -> None:
    """Login, POST a message, GET it back; the session counts the posts."""
    token = login(client)
    text = f"hello from {server.kind}"
    headers = {"X-CSRFToken": token}
    first = client.post("/api/messages/", json={"text": text}, headers=headers)
    second = client.post("/api/messages/", json={"text": text + " again"}, headers=headers)
    listed = client.get("/api/messages/").json()["messages"]
    whoami = client.get("/api/whoami/").json()
    assert (first.status_code, second.json()["session_posted"]) == (201, 2)
    assert listed[0]["text"] == text + " again"
    assert (whoami["user"], whoami["session_posted"]) == ("demo", 2)


def test_example_logout_ends_session(client: httpx.Client) -> None:
    """After /auth/logout/ the session has no user."""
    token = login(client)
    client.post("/auth/logout/", headers={"X-CSRFToken": token})
    assert client.get("/api/whoami/").json()["user"] is None


def test_example_stream_delivers_tokens_in_order(client: httpx.Client) -> None:
    """The SSE stream sends N token events, indexed 0..N-1, then a done event."""
    count = 12
    with client.stream("GET", "/messages/stream/", params={"tokens": count, "delay": 0.01}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    tokens = [data["index"] for name, data in events if name == "token"]
    assert tokens == list(range(count))
    assert events[-1] == ("done", {"tokens": count})


def test_example_stream_is_not_buffered(client: httpx.Client) -> None:
    """The first token arrives while the rest of a slow stream is still being generated."""
    params = {"tokens": 3, "delay": 5}
    with client.stream("GET", "/messages/stream/", params=params, timeout=3.0) as response:
        first = next(response.iter_lines())
    assert first == "id: 0"


def test_example_stream_sets_no_buffering_header(client: httpx.Client) -> None:
    """nginx is told not to buffer the stream."""
    with client.stream("GET", "/messages/stream/", params={"tokens": 1, "delay": 0}) as r:
        r.read()
    assert r.headers["x-accel-buffering"] == "no"


def test_example_stream_simulated_429_before_first_token(client: httpx.Client) -> None:
    """A provider 429 before the first token is a real 429 with Retry-After."""
    response = client.get(
        "/messages/stream/", headers={"X-Arena-Simulate": "fail=429;retry_after=3"}
    )
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")


def test_example_stream_break_after_k_sends_error_event(client: httpx.Client) -> None:
    """A provider that breaks after k tokens ends the stream with an error event."""
    with client.stream(
        "GET",
        "/messages/stream/",
        params={"tokens": 10, "delay": 0},
        headers={"X-Arena-Simulate": "break_after=3"},
    ) as response:
        events = sse_events(response)
    assert [name for name, _ in events] == ["token", "token", "token", "error"]


def test_example_stream_rejects_bad_token_count(client: httpx.Client) -> None:
    """An out-of-range token count is a 400 JSON error."""
    response = client.get("/messages/stream/", params={"tokens": -1})
    assert response.status_code == 400


def _ws_url(srv: ExampleServer, room: str) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws/chat/{room}/"


async def test_example_websocket_broadcasts_to_room(asgi_server: ExampleServer) -> None:
    """A message sent by one client reaches every client in the room, sender included."""
    url, origin = _ws_url(asgi_server, "lobby"), asgi_server.url
    async with connect(url, origin=origin) as alice, connect(url, origin=origin) as bob:
        await alice.send(json.dumps({"message": "hi bob"}))
        got_bob = json.loads(await asyncio.wait_for(bob.recv(), WS_TIMEOUT))
        got_alice = json.loads(await asyncio.wait_for(alice.recv(), WS_TIMEOUT))
    assert got_bob["message"] == got_alice["message"] == "hi bob"


async def test_example_websocket_other_room_does_not_receive(asgi_server: ExampleServer) -> None:
    """A client in another room gets its own room's message first, never the first room's."""
    origin = asgi_server.url
    async with (
        connect(_ws_url(asgi_server, "red"), origin=origin) as red,
        connect(_ws_url(asgi_server, "blue"), origin=origin) as blue,
    ):
        await red.send(json.dumps({"message": "for red"}))
        await asyncio.wait_for(red.recv(), WS_TIMEOUT)
        await blue.send(json.dumps({"message": "for blue"}))
        got_blue = json.loads(await asyncio.wait_for(blue.recv(), WS_TIMEOUT))
    assert got_blue["message"] == "for blue"


async def test_example_websocket_without_origin_is_refused(asgi_server: ExampleServer) -> None:
    """AllowedHostsOriginValidator refuses a handshake without an allowed Origin."""
    with pytest.raises(InvalidStatus) as excinfo:
        async with connect(_ws_url(asgi_server, "lobby")):
            pass
    assert excinfo.value.response.status_code == 403


# --- several replicas sharing one Redis ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with RedisServer() as redis:
        yield redis


@pytest.fixture(scope="module")
def replicas(
    example_db: ExampleDatabase, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExampleServer, ExampleServer]]:
    """A gunicorn and a uvicorn replica sharing the database and Redis (cache/sessions/channels)."""
    logs = tmp_path_factory.mktemp("replica-logs")
    servers = []
    try:
        for index, kind in enumerate(["gunicorn", "uvicorn"], start=1):
            env = example_env(
                example_db, REDIS_URL=shared_redis.url, ARENA_REPLICA_NAME=f"web-{index}"
            )
            servers.append(ExampleServer(kind, env, logs / f"web-{index}.log").start())
        yield servers[0], servers[1]
    finally:
        for srv in servers:
            srv.stop()


def test_example_session_crosses_replicas(replicas: tuple[ExampleServer, ExampleServer]) -> None:
    """A session created on one replica is the same logged-in session on the other."""
    web1, web2 = replicas
    with httpx.Client(base_url=web1.url, timeout=10.0) as one:
        token = login(one)
        one.post("/api/messages/", json={"text": "from web-1"}, headers={"X-CSRFToken": token})
        cookies = one.cookies
    with httpx.Client(base_url=web2.url, timeout=10.0, cookies=cookies) as two:
        whoami = two.get("/api/whoami/").json()
    assert (whoami["replica"], whoami["user"], whoami["session_posted"]) == ("web-2", "demo", 1)


async def test_example_websocket_broadcast_crosses_replicas(
    replicas: tuple[ExampleServer, ExampleServer], tmp_path: Path
) -> None:
    """With the Redis channel layer, a room spans replicas."""
    _, web2 = replicas
    env = dict(web2.env, ARENA_REPLICA_NAME="web-3")
    with ExampleServer("uvicorn", env, tmp_path / "web-3.log") as web3:
        async with (
            connect(_ws_url(web2, "shared"), origin=web2.url) as left,
            connect(_ws_url(web3, "shared"), origin=web3.url) as right,
        ):
            await left.send(json.dumps({"message": "across"}))
            got = json.loads(await asyncio.wait_for(right.recv(), WS_TIMEOUT))
    assert (got["message"], got["from_replica"], got["replica"]) == ("across", "web-2", "web-3")
