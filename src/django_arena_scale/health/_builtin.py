"""Built-in checks: every database alias, every distinct Redis URL, the channel layer (opt-in).

All of them are ``scope="shared"``: every replica uses the same database, Redis and channel
layer, so their failure is reported in ``/status/`` and logged but does not fail ``/ready/``
(which would take every replica out at once) unless ``ARENA_SCALE_READY_INCLUDE_SHARED`` says so.

Django adapter.  Checks run in helper threads (see ``_runner.py``); database connections they
open there are closed before the thread ends.  Redis is pinged through the pool the app
already uses (django-redis or Django's own ``RedisCache``); the channel layer's Redis, whose
pools are bound to event loops, gets one small dedicated client per URL with short timeouts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django_arena_scale.health._model import Check, CheckFunc, Scope, Status, Unavailable
from django_arena_scale.redis import CACHE_SESSION_ENGINES

# Socket timeouts of the dedicated channel-layer ping clients (seconds).
PING_SOCKET_TIMEOUT = 0.5
# The round trip gives up on its own, so a hung layer does not keep the helper thread forever.
CHANNEL_ROUND_TRIP_TIMEOUT = 2.0
DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"
DJANGO_BUILTIN_REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


# --- databases -----------------------------------------------------------------------------
def database_check(alias: str) -> Check:
    def run() -> None:
        from django.db import DatabaseError, InterfaceError, connections

        conn = connections[alias]
        opened_here = conn.connection is None
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1" + conn.features.bare_select_suffix)
                cursor.fetchone()
            if getattr(conn, "fell_back", False):
                # A read replica's backend answered from the primary: the replica is down.
                raise Unavailable(alias)
        except (DatabaseError, InterfaceError) as exc:
            raise Unavailable(alias) from exc
        finally:
            if opened_here:
                _close_database(conn)

    return Check(
        name=f"database:{alias}",
        func=run,
        tags=frozenset({"database"}),
        target=_database_target(alias),
        component_type="datastore",
        scope=Scope.SHARED,
    )


def _close_database(conn: Any) -> None:
    conn.close()
    # Django keeps in-memory SQLite connections open on close(); this thread's handle is ours.
    raw = getattr(conn, "connection", None)
    if raw is not None:
        raw.close()
        conn.connection = None


def _database_target(alias: str) -> str:
    from django.conf import settings

    cfg = settings.DATABASES.get(alias, {})
    engine = str(cfg.get("ENGINE", "")).rsplit(".", 1)[-1]
    host, port, name = cfg.get("HOST") or "", cfg.get("PORT") or "", cfg.get("NAME") or ""
    if engine == "sqlite3":
        return f"sqlite3:{os.path.basename(str(name))}"
    location = f"{host}:{port}" if port else str(host)
    return f"{engine}://{location}/{name}"


def database_checks() -> list[Check]:
    from django.conf import settings

    from django_arena_scale._conf import conf

    wanted = conf.DATABASE_CHECKS
    if wanted is False:
        return []
    aliases = list(settings.DATABASES) if wanted is True else list(wanted)
    return [database_check(alias) for alias in aliases if alias in settings.DATABASES]


# --- redis -----------------------------------------------------------------------------------
def redis_key(url: str) -> tuple[str, str, int, str]:
    """Identity of a Redis server+db, so one URL used by several roles is pinged once."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return (parts.scheme or "redis", parts.hostname or "", parts.port or 6379, db)


# A ``noeviction`` Redis refuses writes ("OOM command not allowed") once its memory reaches
# ``maxmemory``; it counts the writing client's query buffer (up to 16 KiB and more) too, so
# writes are refused a little before ``used_memory`` itself gets there.  Reported unavailable
# within FULL_HEADROOM bytes of ``maxmemory``, warn from FULL_WARN_RATIO of it.
FULL_HEADROOM = 64 * 1024
FULL_WARN_RATIO = 0.9


def memory_status(info: dict[str, Any]) -> Status:
    """PASS, WARN (nearly full) or FAIL (full: writes refused) from ``INFO memory``.

    Only a ``noeviction`` policy with a ``maxmemory`` refuses writes when full; the memory
    compared is what Redis itself compares (``used_memory`` minus the replication and AOF
    buffers, ``mem_not_counted_for_evict``).
    """
    maxmemory = int(info.get("maxmemory") or 0)
    if maxmemory <= 0 or str(info.get("maxmemory_policy", "")) != "noeviction":
        return Status.PASS
    used = int(info.get("used_memory") or 0) - int(info.get("mem_not_counted_for_evict") or 0)
    if used >= maxmemory - min(FULL_HEADROOM, maxmemory // 10):
        return Status.FAIL
    if used >= FULL_WARN_RATIO * maxmemory:
        return Status.WARN
    return Status.PASS


def _ping(client_factory: Callable[[], Any]) -> CheckFunc:
    """One ``INFO memory`` round trip (a ``PING`` where ACLs forbid ``INFO``)."""

    def run() -> Status:
        import redis

        try:
            client = client_factory()
            try:
                info = client.info("memory")
            except redis.exceptions.ResponseError:  # NOPERM: INFO not allowed for this user
                info = None
                if not client.ping():
                    raise Unavailable("ping") from None
        except redis.exceptions.TimeoutError as exc:
            raise TimeoutError("redis ping timed out") from exc
        except redis.exceptions.RedisError as exc:
            raise Unavailable("redis") from exc
        status = Status.PASS if info is None else memory_status(info)
        if status is Status.FAIL:
            raise Unavailable("redis is full (maxmemory reached, noeviction): writes refused")
        return status

    return run


def _cache_client(alias: str, backend: str) -> Callable[[], Any]:
    def get() -> Any:
        if backend == DJANGO_REDIS_BACKEND:
            from django_redis import get_redis_connection

            return get_redis_connection(alias)
        from django.core.cache import caches

        return caches[alias]._cache.get_client(write=True)  # type: ignore[attr-defined]

    return get


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _dedicated_client(url: str) -> Callable[[], Any]:
    def get() -> Any:
        import redis

        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=PING_SOCKET_TIMEOUT,
                    socket_connect_timeout=PING_SOCKET_TIMEOUT,
                    max_connections=4,
                )
                _clients[url] = client
            return client

    return get


def close_clients() -> None:
    """Close the dedicated ping clients (tests; process shutdown)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def _locations(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def _channel_urls(config: dict[str, Any]) -> list[str]:
    urls: list[str] = []
    for host in config.get("hosts", []) or []:
        if isinstance(host, str):
            urls.append(host)
        elif isinstance(host, dict) and isinstance(host.get("address"), str):
            urls.append(host["address"])
        elif isinstance(host, dict) and isinstance(host.get("address"), (list, tuple)):
            h, p = host["address"][:2]
            urls.append(f"redis://{h}:{p}/0")
        elif isinstance(host, (list, tuple)) and len(host) >= 2:
            urls.append(f"redis://{host[0]}:{host[1]}/0")
    return urls


def redis_usages() -> list[tuple[str, str, Callable[[], Any]]]:
    """(role, url, client factory) for each Redis use: caches, cache sessions, channel layers."""
    from django.conf import settings

    usages: list[tuple[str, str, Callable[[], Any]]] = []
    session_alias = None
    if settings.SESSION_ENGINE in CACHE_SESSION_ENGINES:
        session_alias = settings.SESSION_CACHE_ALIAS
    for alias, cfg in settings.CACHES.items():
        backend = cfg.get("BACKEND", "")
        if backend not in (DJANGO_REDIS_BACKEND, DJANGO_BUILTIN_REDIS_BACKEND):
            continue
        locations = _locations(cfg.get("LOCATION"))
        if not locations:
            continue
        role = "sessions" if alias == session_alias else f"cache.{alias}"
        usages.append((role, locations[0], _cache_client(alias, backend)))
    for alias, cfg in getattr(settings, "CHANNEL_LAYERS", {}).items():
        if "channels_redis" not in str(cfg.get("BACKEND", "")):
            continue
        for url in _channel_urls(cfg.get("CONFIG", {}) or {}):
            usages.append((f"channels.{alias}", url, _dedicated_client(url)))
    return usages


def redis_checks() -> list[Check]:
    from django_arena_scale._conf import conf

    if not conf.REDIS_CHECKS:
        return []
    seen: dict[tuple[str, str, int, str], tuple[str, str, Callable[[], Any], set[str]]] = {}
    for role, url, factory in redis_usages():
        key = redis_key(url)
        if key in seen:
            seen[key][3].add(role)
        else:
            seen[key] = (role, url, factory, {role})
    return [
        Check(
            name=f"redis:{role}",
            func=_ping(factory),
            tags=frozenset({"redis", *roles}),
            target=url,
            component_type="datastore",
            scope=Scope.SHARED,
        )
        for role, url, factory, roles in seen.values()
    ]


# --- channel layer ---------------------------------------------------------------------------
class _LoopThread:
    """One event loop in a daemon thread per process, so the layer keeps one pool for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="arena-scale-channel-check", daemon=True
                ).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and self._pid == os.getpid():
            loop.call_soon_threadsafe(loop.stop)


_loop_thread = _LoopThread()


def close_channel_layer(layer: Any, timeout: float = 5.0) -> None:
    """Close the connections ``layer`` opened on the check's event loop (tests, shutdown)."""
    close = getattr(layer, "close_pools", None)
    if close is not None:
        asyncio.run_coroutine_threadsafe(close(), _loop_thread.loop()).result(timeout)


def channel_layer_check(alias: str = "default") -> Check:
    def run() -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer(alias)
        if layer is None:
            raise Unavailable(alias)
        future = asyncio.run_coroutine_threadsafe(_round_trip(layer), _loop_thread.loop())
        try:
            future.result(timeout=CHANNEL_ROUND_TRIP_TIMEOUT)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError("channel layer round trip timed out") from exc
        finally:
            future.cancel()

    return Check(
        name=f"channel_layer:{alias}",
        func=run,
        tags=frozenset({"channels"}),
        component_type="component",
        scope=Scope.SHARED,
    )


async def _round_trip(layer: Any) -> None:
    channel = await layer.new_channel("arena-scale-health.")
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "arena_scale.health", "token": token})
    message = await layer.receive(channel)
    if message.get("token") != token:
        raise Unavailable("channel layer returned another message")


def channel_checks() -> list[Check]:
    from django.conf import settings

    from django_arena_scale._conf import conf

    if not conf.CHANNEL_LAYER_CHECK:
        return []
    return [channel_layer_check(alias) for alias in getattr(settings, "CHANNEL_LAYERS", {})]


def builtin_checks() -> list[Check]:
    return [*database_checks(), *redis_checks(), *channel_checks()]
