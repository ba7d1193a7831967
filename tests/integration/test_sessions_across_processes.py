"""Sessions configured by ``redis_sessions`` are shared by separate Django processes.

Each step runs in its own ``python`` process (as two replicas would), with the tests' settings
plus the documented ``redis_cache`` / ``redis_sessions`` lines, against real ``redis-server``s:
one for the cache, one for sessions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import django_arena_scale
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Wherever this run imports the package from (src/ or an installed wheel), so do the replicas.
PACKAGE_PARENT = Path(django_arena_scale.__file__).resolve().parents[1]
Replica = Callable[..., dict[str, Any]]

SETTINGS = textwrap.dedent(
    """
    import os

    from django_arena_scale.redis import redis_cache, redis_sessions
    from tests.settings import *  # noqa: F403

    ROOT_URLCONF = "replica_urls"
    CACHES = redis_cache(os.environ["CACHE_URL"])
    globals().update(redis_sessions(os.environ["SESSIONS_URL"], caches=CACHES))
    """
)

URLS = textwrap.dedent(
    """
    from django.http import JsonResponse
    from django.urls import path


    def login(request):
        request.session["user"] = request.GET["user"]
        return JsonResponse({"ok": True})


    def whoami(request):
        return JsonResponse({"user": request.session.get("user"), "pid": __import__("os").getpid()})


    def logout(request):
        request.session.flush()
        return JsonResponse({"ok": True})


    urlpatterns = [path("login/", login), path("whoami/", whoami), path("logout/", logout)]
    """
)

# One request per process: `replica.py <path> [cookie]` prints the JSON body and the cookie.
REPLICA = textwrap.dedent(
    """
    import json, os, sys

    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    client = Client()
    if len(sys.argv) > 2:
        client.cookies[settings.SESSION_COOKIE_NAME] = sys.argv[2]
    response = client.get(sys.argv[1])
    cookie = response.cookies.get(settings.SESSION_COOKIE_NAME)
    print(json.dumps({
        "status": response.status_code,
        "body": json.loads(response.content),
        "cookie": cookie.value if cookie is not None else None,
        "pid": os.getpid(),
    }))
    """
)


@pytest.fixture
def sessions_redis() -> Iterator[RedisServer]:
    """A second real redis-server, for sessions only."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def replica_dir(tmp_path: Path) -> Path:
    (tmp_path / "replica_settings.py").write_text(SETTINGS)
    (tmp_path / "replica_urls.py").write_text(URLS)
    (tmp_path / "replica.py").write_text(REPLICA)
    return tmp_path


@pytest.fixture
def run_replica(
    replica_dir: Path, fresh_redis: RedisServer, sessions_redis: RedisServer
) -> Replica:
    """Run one request in a new Django process; returns its parsed output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="replica_settings",
        PYTHONPATH=os.pathsep.join([str(replica_dir), str(ROOT), str(PACKAGE_PARENT)]),
        CACHE_URL=fresh_redis.url,
        SESSIONS_URL=sessions_redis.url,
    )

    def run(path: str, cookie: str | None = None) -> dict[str, Any]:
        args = [sys.executable, str(replica_dir / "replica.py"), path]
        if cookie is not None:
            args.append(cookie)
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    return run


def test_sessions_written_by_one_process_are_read_by_another(run_replica: Replica) -> None:
    """A login stored by one process is seen by a second, separate process."""
    written = run_replica("/login/?user=alice")
    read = run_replica("/whoami/", written["cookie"])
    assert read["pid"] != written["pid"]
    assert read["body"]["user"] == "alice"


def test_sessions_logout_in_one_process_is_seen_by_another(run_replica: Replica) -> None:
    """A logout (session flush) in one process logs the user out in every other process."""
    cookie = run_replica("/login/?user=bob")["cookie"]
    run_replica("/logout/", cookie)
    assert run_replica("/whoami/", cookie)["body"]["user"] is None


def test_sessions_live_on_the_sessions_redis_only(
    run_replica: Replica, fresh_redis: RedisServer, sessions_redis: RedisServer
) -> None:
    """Session keys go to the sessions server (with the session age as TTL), not the cache."""
    run_replica("/login/?user=carol")
    with (
        redis.Redis.from_url(sessions_redis.url) as sessions,
        redis.Redis.from_url(fresh_redis.url) as cache,
    ):
        keys = sessions.keys("*")
        assert (len(keys), cache.dbsize()) == (1, 0)
        assert 0 < sessions.ttl(keys[0]) <= 1209600  # SESSION_COOKIE_AGE, two weeks
