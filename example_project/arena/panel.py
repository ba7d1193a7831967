"""The demo page's stack panel: what each replica is doing, safe to show to anyone.

Every worker process of every replica publishes a small record (replica name, lifecycle state,
SSE streams and WebSockets it holds, its LLM breaker states) into one Redis hash every
:data:`PUBLISH_INTERVAL` seconds, from a daemon thread started by its first request.  Any
replica answers ``GET /api/stack/`` from that hash, so the panel shows the whole stack
whichever replica serves it.  A draining replica no longer gets requests, but its thread keeps
publishing ``draining`` until the process exits; a replica whose records stop is shown as
``down`` for :data:`FORGET_AFTER` seconds, then dropped.

What a record holds is chosen for a public page: names, states and counts.  No address, port,
pid, host name, URL, setting or error text.  Without ``REDIS_URL`` (a single development
process) the panel shows this process alone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

from django_arena_scale.lifecycle import get_lifecycle
from django_arena_scale.resilience import breaker_status

log = logging.getLogger(__name__)

HASH_KEY = "arena:demo:stack"
PUBLISH_INTERVAL = 1.0
#: A replica none of whose records is younger than this is shown as ``down``.
FRESH_FOR = 3.5
#: Records older than this are deleted from the hash.
FORGET_AFTER = 45.0
#: Redis connect and read timeout: the panel never waits on a dead Redis for long.
REDIS_TIMEOUT = 0.5
#: The states a replica is shown in, most alive first (the best state of its processes wins).
STATES = ("ready", "starting", "draining", "down")

_lock = threading.Lock()
_counts = {"streams": 0, "websockets": 0}
_publisher: tuple[int, threading.Thread] | None = None
_client: tuple[int, Any] | None = None


def replica_name() -> str:
    from arena.views import replica_name as name

    return name()


def opened(kind: str) -> None:
    """One more SSE stream (``"streams"``) or WebSocket (``"websockets"``) in this process."""
    with _lock:
        _counts[kind] += 1


def closed(kind: str) -> None:
    with _lock:
        _counts[kind] = max(0, _counts[kind] - 1)


def local_record(now: float | None = None) -> dict[str, Any]:
    """This process's record: only names, a state and counts."""
    with _lock:
        counts = dict(_counts)
    return {
        "replica": replica_name(),
        "state": get_lifecycle().state.value,
        "streams": counts["streams"],
        "websockets": counts["websockets"],
        "breakers": {name: entry["state"] for name, entry in breaker_status().items()},
        "at": time.time() if now is None else now,
    }


def _redis() -> Any:
    """This process's client for ``REDIS_URL`` (thread-safe, pooled), or None without one."""
    global _client
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    pid = os.getpid()
    if _client is None or _client[0] != pid:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        _client = (pid, client)
    return _client[1]


def _field() -> str:
    return f"{replica_name()}/{os.getpid()}"


def publish(client: Any) -> None:
    client.hset(HASH_KEY, _field(), json.dumps(local_record()))
    client.expire(HASH_KEY, int(FORGET_AFTER) + 5)


def _publish_forever() -> None:
    client = _redis()
    if client is None:
        return
    while True:
        try:
            publish(client)
        except Exception:
            log.debug("stack panel: publishing failed", exc_info=True)
        time.sleep(PUBLISH_INTERVAL)


def ensure_publisher(**_: Any) -> None:
    """Start this process's publisher thread once (``request_started`` receiver).

    Started by a request, not at import: a gunicorn master that imported the app and then
    forked its workers would otherwise hold the only thread.
    """
    global _publisher
    pid = os.getpid()
    if _publisher is not None and _publisher[0] == pid:
        return
    with _lock:
        if _publisher is not None and _publisher[0] == pid:
            return
        if not getattr(settings, "REDIS_URL", ""):
            _publisher = (pid, threading.current_thread())
            return
        thread = threading.Thread(target=_publish_forever, name="arena-stack-panel", daemon=True)
        _publisher = (pid, thread)
        thread.start()


def _worst(states: list[str]) -> str:
    order = {"closed": 0, "half-open": 1, "open": 2}
    return max(states, key=lambda s: order.get(s, 3))


def aggregate(records: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """One row per replica name from its processes' records (pure, for the tests)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if now - float(record.get("at", 0)) <= FORGET_AFTER:
            by_name.setdefault(str(record.get("replica", "?")), []).append(record)
    rows = []
    for name in sorted(by_name):
        fresh = [r for r in by_name[name] if now - float(r["at"]) <= FRESH_FOR]
        breakers: dict[str, list[str]] = {}
        for record in fresh:
            for breaker, state in record.get("breakers", {}).items():
                breakers.setdefault(breaker, []).append(str(state))
        states = [str(r.get("state", "down")) for r in fresh] or ["down"]
        rows.append(
            {
                "name": name,
                "state": min(states, key=lambda s: STATES.index(s) if s in STATES else 9),
                "streams": sum(int(r.get("streams", 0)) for r in fresh),
                "websockets": sum(int(r.get("websockets", 0)) for r in fresh),
                "breakers": {b: _worst(s) for b, s in sorted(breakers.items())},
                "seen_s": round(max(0.0, now - max(float(r["at"]) for r in by_name[name])), 1),
            }
        )
    return rows


def snapshot() -> dict[str, Any]:
    """The panel's data: every replica seen recently, or this process alone without Redis."""
    now = time.time()
    mine = local_record(now)
    client = _redis()
    records: list[dict[str, Any]] = []
    shared = False
    if client is not None:
        try:
            publish(client)
            raw = client.hgetall(HASH_KEY)
            stale = []
            for field, value in raw.items():
                record = json.loads(value)
                if now - float(record.get("at", 0)) > FORGET_AFTER:
                    stale.append(field)
                else:
                    records.append(record)
            if stale:
                client.hdel(HASH_KEY, *stale)
            shared = True
        except Exception:
            log.debug("stack panel: reading failed", exc_info=True)
            records = []
    if not shared:
        records = [mine]
    return {"served_by": mine["replica"], "shared": shared, "replicas": aggregate(records, now)}
