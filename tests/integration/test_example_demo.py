"""The example's demo page and the APIs behind it, under real gunicorn (WSGI) and uvicorn (ASGI).

The page itself runs in Chromium in ``tests/e2e/test_demo_browser.py``; here: the HTML, the
replica header, votes, resumable model streams and the stack panel that two replica processes
publish through a real Redis.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.example_app import EXAMPLE_DIR, ExampleServer, example_env, login
from tests.example_db import ExampleDatabase, ExampleDatabases
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

PROMPT = "Why run three replicas?"


def voice_tokens(model: str, prompt: str, count: int) -> list[str]:
    sys.path.insert(0, str(EXAMPLE_DIR))
    try:
        from arena.llm import Voice
    finally:
        sys.path.remove(str(EXAMPLE_DIR))
    return [Voice(model, prompt).token(i) for i in range(count)]


@pytest.fixture(scope="module")
def example_db(example_databases: ExampleDatabases) -> Iterator[ExampleDatabase]:
    with example_databases.database("demo") as db:
        yield db


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest,
    example_db: ExampleDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("logs") / f"{request.param}.log"
    env = example_env(example_db, ARENA_REPLICA_NAME=f"demo-{request.param}")
    with ExampleServer(request.param, env, log) as srv:
        yield srv


@pytest.fixture
def client(server: ExampleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def sse(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    events, event, data = [], "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and data:
            events.append((event, json.loads(data)))
            event, data = "message", ""
    return events


def test_demo_page_is_served_with_its_static_files_named(
    client: httpx.Client, server: ExampleServer
) -> None:
    """GET / is the HTML page: static CSS/JS by URL (nothing from another origin), a CSRF
    cookie for its API calls, the replica header, and the published demo password only."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-replica"] == f"demo-{server.kind}"
    assert "csrftoken" in response.cookies
    html = response.text
    assert '<script src="/static/arena/arena.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/arena/arena.css">' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<code>demo</code> / <code>demo-password</code>" in html
    assert 'aria-live="polite"' in html


def test_demo_page_hides_a_password_the_operator_chose(
    example_db: ExampleDatabase, tmp_path: Path
) -> None:
    """A non-default ARENA_DEMO_PASSWORD is a secret: the page never prints it."""
    env = example_env(example_db, ARENA_DEMO_PASSWORD="an-operator-secret")
    with ExampleServer("gunicorn", env, tmp_path / "g.log") as srv:
        html = httpx.get(srv.url + "/", timeout=10).text
    assert "an-operator-secret" not in html
    assert "demo-password" not in html


def test_every_json_view_names_its_replica(client: httpx.Client, server: ExampleServer) -> None:
    for path in ("/api/ping/", "/api/whoami/", "/api/votes/", "/api/stack/", "/api/messages/"):
        assert client.get(path).headers["x-replica"] == f"demo-{server.kind}", path
    login_answer = client.post("/auth/login/", json={"username": "demo", "password": "nope"})
    assert login_answer.headers["x-replica"] == f"demo-{server.kind}"


def test_votes_are_stored_and_counted(client: httpx.Client, server: ExampleServer) -> None:
    before = client.get("/api/votes/").json()["tally"]
    assert client.post("/api/votes/", json={"prompt": PROMPT, "winner": "a"}).status_code in {
        401,
        403,
    }
    token = login(client)
    headers = {"X-CSRFToken": token}
    assert client.post("/api/votes/", json={"prompt": PROMPT, "winner": "b"}).status_code == 403
    answer = client.post("/api/votes/", json={"prompt": PROMPT, "winner": "b"}, headers=headers)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["vote"]["user"] == "demo"
    assert body["vote"]["replica"] == f"demo-{server.kind}"
    assert body["tally"] == {**before, "b": before["b"] + 1}
    assert client.get("/api/votes/").json()["tally"] == body["tally"]
    bad = client.post("/api/votes/", json={"prompt": PROMPT, "winner": "c"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "winner"
    assert bad.json()["error"].startswith("winner should be one of a, b, tie")


def test_model_stream_names_its_replica_and_answers_the_prompt(
    client: httpx.Client, server: ExampleServer
) -> None:
    params = {"model": "a", "prompt": PROMPT, "tokens": 12, "delay": 0}
    with client.stream("GET", "/messages/stream/", params=params) as response:
        events = sse(response)
    assert events[0] == (
        "meta",
        {"replica": f"demo-{server.kind}", "model": "a", "from": 0, "tokens": 12},
    )
    tokens = [data for name, data in events if name == "token"]
    assert [t["token"] for t in tokens] == voice_tokens("a", PROMPT, 12)
    assert voice_tokens("a", PROMPT, 12) != voice_tokens("b", PROMPT, 12)
    assert events[-1] == ("done", {"tokens": 12})


@pytest.mark.parametrize(
    ("headers", "extra", "first"),
    [
        ({"Last-Event-ID": "4"}, {}, 5),
        ({}, {"from": 7}, 7),
        ({"Last-Event-ID": "2"}, {"from": 9}, 9),
    ],
)
def test_model_stream_resumes_after_the_last_event_id(
    client: httpx.Client, headers: dict[str, str], extra: dict[str, int], first: int
) -> None:
    """What a reconnecting EventSource sends (Last-Event-ID) or the page's ?from=: the stream
    continues with the next token, the same words any replica computes, never repeating one."""
    params = {"model": "b", "prompt": PROMPT, "tokens": 12, "delay": 0, **extra}
    with client.stream("GET", "/messages/stream/", params=params, headers=headers) as response:
        events = sse(response)
    assert events[0][1]["from"] == first
    tokens = [data for name, data in events if name == "token"]
    assert [t["index"] for t in tokens] == list(range(first, 12))
    assert [t["token"] for t in tokens] == voice_tokens("b", PROMPT, 12)[first:]
    assert events[-1] == ("done", {"tokens": 12})


def test_model_stream_rejects_bad_resume_and_model(client: httpx.Client) -> None:
    bad_id = client.get("/messages/stream/", params={"model": "a"}, headers={"Last-Event-ID": "x1"})
    assert bad_id.status_code == 400
    assert bad_id.json()["parameter"] == "Last-Event-ID"
    bad_model = client.get("/messages/stream/", params={"model": "gpt"})
    assert bad_model.status_code == 400
    assert bad_model.json()["error"] == "model should be one of a, b, got 'gpt'."
    long_prompt = client.get("/messages/stream/", params={"model": "a", "prompt": "x" * 501})
    assert (long_prompt.status_code, long_prompt.json()["parameter"]) == (400, "prompt")


def test_stack_panel_without_redis_shows_this_process(client: httpx.Client) -> None:
    body = client.get("/api/stack/").json()
    assert body["shared"] is False
    assert [r["name"] for r in body["replicas"]] == [body["served_by"]]
    assert body["replicas"][0]["state"] == "ready"


def test_stack_panel_shows_every_replica_through_redis_and_nothing_internal(
    example_db: ExampleDatabase, tmp_path: Path
) -> None:
    """Two replica processes (WSGI and ASGI) on one Redis: either one's panel lists both, with
    their open streams; the body holds names, states and counts, never an address or port."""
    with RedisServer() as redis:
        env = {"REDIS_URL": redis.url}
        one = ExampleServer(
            "gunicorn", example_env(example_db, ARENA_REPLICA_NAME="web-1", **env), tmp_path / "1"
        )
        two = ExampleServer(
            "uvicorn", example_env(example_db, ARENA_REPLICA_NAME="web-2", **env), tmp_path / "2"
        )
        with one, two, httpx.Client(timeout=10) as http:
            params = {"model": "a", "prompt": PROMPT, "tokens": 400, "delay": 0.05}
            with http.stream("GET", two.url + "/messages/stream/", params=params) as stream:
                # Keep the line iterator: a dropped one closes the response, and the stream.
                lines = stream.iter_lines()
                assert next(lines) == "event: meta"  # the stream is open on web-2
                deadline = time.monotonic() + 15
                while True:
                    raw = http.get(one.url + "/api/stack/").text
                    body = json.loads(raw)
                    rows = {r["name"]: r for r in body["replicas"]}
                    if rows.keys() == {"web-1", "web-2"} and rows["web-2"]["streams"] == 1:
                        break
                    assert time.monotonic() < deadline, body
                    time.sleep(0.2)
    assert body["shared"] is True
    assert body["served_by"] == "web-1"
    assert rows["web-1"]["streams"] == 0
    assert {r["state"] for r in rows.values()} == {"ready"}
    assert set(rows["web-2"]) == {"name", "state", "streams", "websockets", "breakers", "seen_s"}
    for secret in ("127.0.0.1", str(redis.port), str(one.port), str(two.port), "redis://"):
        assert secret not in raw
