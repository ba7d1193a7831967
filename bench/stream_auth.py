"""StreamRouter auth routes: what ``auth`` costs per new stream, in-process (no network).

Run: ``.venv/bin/python bench/stream_auth.py [--requests N] [--rounds R] [--before REV]``.

The example's ASGI stack (its settings, sessions in a real redis-server through
``redis_sessions()``, SQLite with the demo user) serves one-token streams through
``StreamRouter`` directly (an in-process ASGI client, 64 requests at a time), rounds interleaved,
median reported, in microseconds per request:

1. ``/messages/stream/``, auth off, with ``StreamRouter`` as of ``--before`` (default: the
   commit before auth routes) and as of this tree: the ratio is the cost of the change on the
   anonymous path (target: 1.00, i.e. within noise);
2. ``/messages/stream/mine/`` (auth route): a logged-in session (Redis load + user lookup)
   and an anonymous request without cookie (401, no I/O); the same logged-in request through
   Django's own ASGI handler (full middleware) as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]

from tests.servers import RedisServer  # noqa: E402

BATCH = 64


def _load_before(rev: str, workdir: Path) -> Any:
    source = subprocess.run(
        ["git", "show", f"{rev}:src/django_arena_scale/asgi.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = workdir / "asgi_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("asgi_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scope(path: str, cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"tokens=1&delay=0",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _one(app: Any, scope: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []
    asked = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def _round(app: Any, scope: dict[str, Any], requests: int, expect: int) -> float:
    start = time.perf_counter()
    for _ in range(requests // BATCH):
        statuses = await asyncio.gather(*(_one(app, scope) for _ in range(BATCH)))
        if set(statuses) != {expect}:
            msg = f"expected status {expect} for {scope['path']!r}, got {sorted(set(statuses))!r}."
            raise RuntimeError(msg)
    return (time.perf_counter() - start) / (requests // BATCH * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="12a0e6b~1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis_server:
        workdir = Path(tmp)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="arena_project.settings",
            SESSION_REDIS_URL=redis_server.url,
            SQLITE_PATH=str(workdir / "db.sqlite3"),
            ALLOWED_HOSTS="localhost",
            ARENA_DEMO_USER="demo",
            ARENA_DEMO_PASSWORD="demo-password",
            LOG_LEVEL="ERROR",
            SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0, interactive=False)
        client = Client()
        assert client.login(username="demo", password="demo-password")
        cookie = client.cookies["sessionid"].value

        from django.core.asgi import get_asgi_application

        from arena.views import my_stream, stream
        from django_arena_scale.asgi import StreamRouter

        django_app = get_asgi_application()
        before = _load_before(args.before, workdir).StreamRouter(
            django_app, {"/messages/stream/": stream}
        )
        after = StreamRouter(
            django_app,
            {"/messages/stream/": stream, "/messages/stream/mine/": my_stream},
            auth=["/messages/stream/mine/"],
        )
        cases = {
            "before, public stream": (before, _scope("/messages/stream/", cookie), 200),
            "after, public stream (auth off)": (after, _scope("/messages/stream/", cookie), 200),
            "after, auth route, logged in": (after, _scope("/messages/stream/mine/", cookie), 200),
            "after, auth route, no cookie (401)": (
                after,
                _scope("/messages/stream/mine/", None),
                401,
            ),
            "Django's handler, same view, logged in": (
                django_app,
                _scope("/messages/stream/mine/", cookie),
                200,
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}

        async def run() -> None:
            for app, scope, expect in cases.values():
                await _round(app, scope, BATCH * 4, expect)  # warm-up
            for _ in range(args.rounds):
                for name, (app, scope, expect) in cases.items():
                    times[name].append(await _round(app, scope, args.requests, expect))

        asyncio.run(run())
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, value in medians.items():
            rounds = ", ".join(f"{v:.0f}" for v in times[name])
            print(f"{name}: {value:.0f} us/request (rounds: {rounds})")
        ratio = medians["after, public stream (auth off)"] / medians["before, public stream"]
        django_ratio = (
            medians["Django's handler, same view, logged in"]
            / medians["after, auth route, logged in"]
        )
        print(
            f"auth off, after/before = {ratio:.2f} (target 1.00 within noise); logged-in "
            f"stream, Django's handler / auth route = {django_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
