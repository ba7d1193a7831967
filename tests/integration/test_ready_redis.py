"""Readiness against a real redis-server: outage and recovery, in-process and under gunicorn.

The gunicorn scenarios serve the example project with one real gunicorn worker and stop its
Redis.  By default the Redis checks are shared-scope: ``/ready/`` stays 200 (a dependency every
replica shares must not take every replica out), while ``/status/`` shows the Redis checks
failing with an enum reason.  With ``ARENA_SCALE_READY_INCLUDE_SHARED=1`` ``/ready/`` answers
503 with the reason within the deadline while ``/live/`` and ``/health/`` stay 200.  Either
way, when Redis comes back on the same port the checks pass again, served by the same (never
restarted) worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_arena_scale.deploy._server import WSGI_WORKER
from django_arena_scale.health._builtin import redis_checks
from django_arena_scale.health._runner import Runner
from tests.example_db import ExampleDatabase
from tests.servers import RedisServer, free_port, wait_for_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "integration-status-token"
DEADLINE = 0.8
# Generous bounds (the numbers plus room for a loaded 2-core machine).
SLACK = 1.0
REASONS = {"timeout", "error", "unavailable", "draining", "starting"}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


# --- in-process: the built-in Redis checks use the app's pools --------------------------------
def _django_redis(url: str) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }


def _evaluate(deadline: float = 5.0) -> dict[str, str]:
    """Run the Redis checks; passing cases get a generous deadline (cold imports, busy CI)."""
    report = Runner().evaluate(redis_checks(), deadline=deadline, default_timeout=deadline)
    return {r.name: (r.reason.value if r.reason else r.status.value) for r in report.results}


def test_redis_check_passes_through_django_redis(settings: Any, fresh_redis: RedisServer) -> None:
    """A django-redis cache on a live server passes."""
    settings.CACHES = {"default": _django_redis(fresh_redis.url)}
    assert _evaluate() == {"redis:cache.default": "pass"}


def test_redis_check_uses_app_pool(settings: Any, fresh_redis: RedisServer) -> None:
    """The ping goes through django-redis's own pool: no new pool per probe."""
    from django_redis import get_redis_connection

    settings.CACHES = {"default": _django_redis(fresh_redis.url)}
    pool = get_redis_connection("default").connection_pool
    _evaluate()
    _evaluate()
    assert get_redis_connection("default").connection_pool is pool
    assert pool._created_connections >= 1  # the app's pool served the pings


def test_redis_check_django_builtin_backend(settings: Any, fresh_redis: RedisServer) -> None:
    """Django's own RedisCache backend is checked too."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": fresh_redis.url,
        }
    }
    assert _evaluate() == {"redis:cache.default": "pass"}


def test_redis_check_channels_layer_url(settings: Any, fresh_redis: RedisServer) -> None:
    """A channels_redis layer URL is pinged with a dedicated short-timeout client."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [fresh_redis.url]},
        }
    }
    assert _evaluate() == {"redis:channels.default": "pass"}


def test_redis_check_stopped_server_is_unavailable(settings: Any, fresh_redis: RedisServer) -> None:
    """A stopped Redis is reported unavailable (connection refused), within the deadline."""
    settings.CACHES = {"default": _django_redis(fresh_redis.url)}
    _evaluate()
    fresh_redis.stop()
    started = time.monotonic()
    result = _evaluate(DEADLINE)
    assert (result, time.monotonic() - started < DEADLINE + SLACK) == (
        {"redis:cache.default": "unavailable"},
        True,
    )


def test_redis_check_paused_server_is_timeout(settings: Any, fresh_redis: RedisServer) -> None:
    """A Redis that accepts but never answers (SIGSTOP) is reported timeout, within the deadline."""
    settings.CACHES = {"default": _django_redis(fresh_redis.url)}
    _evaluate()
    assert fresh_redis.proc is not None
    fresh_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = _evaluate(DEADLINE)
        elapsed = time.monotonic() - started
    finally:
        fresh_redis.proc.send_signal(signal.SIGCONT)
    assert (result, elapsed < DEADLINE + SLACK) == ({"redis:cache.default": "timeout"}, True)


def test_redis_check_recovers_after_restart(settings: Any, fresh_redis: RedisServer) -> None:
    """After Redis comes back on the same port, the same pool passes again."""
    settings.CACHES = {"default": _django_redis(fresh_redis.url)}
    _evaluate()
    fresh_redis.stop()
    _evaluate()
    fresh_redis.start()
    results = []
    for _ in range(20):  # a pooled socket may fail once after the restart
        results.append(_evaluate())
        if results[-1] == {"redis:cache.default": "pass"}:
            break
    assert results[-1] == {"redis:cache.default": "pass"}


def test_channel_layer_round_trip_check(settings: Any, fresh_redis: RedisServer) -> None:
    """The opt-in channel-layer check sends and receives one message through Redis."""
    from channels.layers import channel_layers

    from django_arena_scale.health._builtin import channel_checks, close_channel_layer

    settings.ARENA_SCALE_CHANNEL_LAYER_CHECK = True
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [fresh_redis.url]},
        }
    }
    channel_layers.backends.clear()
    try:
        report = Runner().evaluate(channel_checks(), deadline=3, default_timeout=3)
    finally:
        close_channel_layer(channel_layers["default"])
        channel_layers.backends.clear()
    assert [(r.name, r.status.value) for r in report.results] == [("channel_layer:default", "pass")]


# --- the example project under a real gunicorn ------------------------------------------------
class Gunicorn:
    """One gunicorn worker serving the example project on a free loopback port."""

    def __init__(
        self, redis_url: str, workdir: Path, db: ExampleDatabase, **extra_env: str
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "example_project")]),
            "DJANGO_SETTINGS_MODULE": "arena_project.settings",
            "REDIS_URL": redis_url,
            **db.env(),
            "ARENA_SCALE_CHECK_CACHE_TTL": "0.2",
            "ARENA_SCALE_READY_DEADLINE": str(DEADLINE),
            "ARENA_SCALE_STATUS_TOKEN": TOKEN,
            **extra_env,
        }
        self.log = open(workdir / "gunicorn.log", "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "arena_project.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "--worker-class",
                WSGI_WORKER,
                "--graceful-timeout",
                "2",
            ],
            cwd=ROOT / "example_project",
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=30)

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, Any], float]:
        request = urllib.request.Request(self.base + path, headers=headers)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
            exc.close()
        return status, json.loads(body), time.monotonic() - started

    def worker_pid(self) -> int:
        _, body, _ = self.get("/status/", Authorization=f"Bearer {TOKEN}")
        return int(body["replica"]["pid"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def _serve(server: Gunicorn) -> Iterator[Gunicorn]:
    try:
        _wait_until(lambda: server.get("/ready/")[0] == 200, 30, "/ready/ 200 at start")
        yield server
    finally:
        server.stop()


@pytest.fixture
def app(
    fresh_redis: RedisServer, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[Gunicorn]:
    yield from _serve(Gunicorn(fresh_redis.url, tmp_path, example_database))


@pytest.fixture
def app_include_shared(
    fresh_redis: RedisServer, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[Gunicorn]:
    """The example project with shared checks opted back into readiness."""
    yield from _serve(
        Gunicorn(fresh_redis.url, tmp_path, example_database, ARENA_SCALE_READY_INCLUDE_SHARED="1")
    )


def _redis_status(app: Gunicorn) -> dict[str, tuple[str, str | None, bool]]:
    """(status, output, affectsReadiness) of each redis:* check in the detailed /status/."""
    _, body, _ = app.get("/status/", Authorization=f"Bearer {TOKEN}")
    return {
        name: (e[0]["status"], e[0].get("output"), e[0]["affectsReadiness"])
        for name, e in body["checks"].items()
        if name.startswith("redis:")
    }


def test_ready_stays_up_in_redis_outage_under_gunicorn(
    app: Gunicorn, fresh_redis: RedisServer
) -> None:
    """Redis down: /ready/ stays 200 (shared dependency), /status/ shows it failing; back: pass."""
    pid = app.worker_pid()
    fresh_redis.stop()
    statuses: list[dict[str, tuple[str, str | None, bool]]] = []
    _wait_until(
        lambda: (
            statuses.append(_redis_status(app))
            or any(s[0] == "fail" for s in statuses[-1].values())
        ),
        10,
        "/status/ shows Redis failing",
    )
    failing = statuses[-1]
    outage = (app.get("/ready/")[:2], app.get("/live/")[:2], app.get("/health/")[:2])
    _, minimal, _ = app.get("/status/")
    fresh_redis.start()
    _wait_until(
        lambda: all(s[0] == "pass" for s in _redis_status(app).values()),
        15,
        "/status/ shows Redis passing after it is back",
    )

    assert failing
    assert {s[0] for s in failing.values()} == {"fail"}
    assert {s[1] for s in failing.values()} <= REASONS - {"draining", "starting"}
    assert {s[2] for s in failing.values()} == {False}  # visible, but not deciding readiness
    assert minimal == {"status": "warn"}
    assert outage == ((200, {"status": "pass"}),) * 3
    assert app.get("/ready/")[:2] == (200, {"status": "pass"})
    assert app.worker_pid() == pid


def test_ready_redis_outage_and_recovery_opted_in_under_gunicorn(
    app_include_shared: Gunicorn, fresh_redis: RedisServer
) -> None:
    """Opted in: Redis down -> /ready/ 503 with reason in time, /live/ /health/ 200; back: 200."""
    app = app_include_shared
    pid = app.worker_pid()
    fresh_redis.stop()
    stopped_at = time.monotonic()
    answers: list[tuple[int, dict[str, Any], float]] = []
    _wait_until(
        lambda: answers.append(app.get("/ready/")) or answers[-1][0] == 503, 10, "/ready/ 503"
    )
    body = answers[-1][1]
    failing = body["checks"]
    outage = (
        time.monotonic() - stopped_at,
        [a[2] for a in answers],
        app.get("/live/")[:2],
        app.get("/health/")[:2],
    )
    status_during = _redis_status(app)
    fresh_redis.start()
    _wait_until(lambda: app.get("/ready/")[0] == 200, 15, "/ready/ 200 after Redis is back")

    assert failing
    assert all(k.startswith("redis:") for k in failing)
    assert set(failing.values()) <= REASONS - {"draining", "starting"}
    assert {s[2] for s in status_during.values()} == {True}
    # Detected within cache TTL + deadline; no single probe exceeded the deadline.
    assert outage[0] < 0.2 + DEADLINE + SLACK
    assert max(outage[1]) < DEADLINE + SLACK
    assert outage[2:] == ((200, {"status": "pass"}), (200, {"status": "pass"}))
    assert app.worker_pid() == pid


def test_probe_under_gunicorn_bare_ip_host(app: Gunicorn) -> None:
    """Through the real server and the example's full stack, a bare-IP Host still gets 200."""
    assert app.get("/ready/", Host="10.9.8.7")[:2] == (200, {"status": "pass"})


def test_probe_under_gunicorn_head_has_no_body(app: Gunicorn) -> None:
    """A HEAD probe through the real server has an empty body and no cookie."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("HEAD", "/health/")
        response = conn.getresponse()
        body = response.read()
        cookie = response.getheader("Set-Cookie")
    finally:
        conn.close()
    assert (response.status, body, cookie) == (200, b"", None)
