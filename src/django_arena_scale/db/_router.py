"""The Django side of read replicas: ``ReplicaRouter``, read-your-writes and ``use_primary``.

Where a query goes (``ARENA_SCALE_READ_REPLICAS`` lists the replicas; the primary is
``'default'``):

- writes (``save``, ``create``, ``update``, ``delete``, ``select_for_update``) and every query
  inside an ``atomic()`` block on the primary: the primary;
- reads of a client that wrote within the last ``ARENA_SCALE_READ_YOUR_WRITES`` seconds: the
  primary.  ``ReadYourWritesMiddleware`` records a write in the cache
  (``ARENA_SCALE_READ_YOUR_WRITES_CACHE``), keyed by a hash of the user id or, for an
  anonymous client, of the session key, so every replica of the app sees it; within the
  request that wrote, reads follow at once.  Outside a request (a shell, a task), reads of the
  same context follow its writes for the same window;
- ``with use_primary():`` reads inside it: the primary;
- any other read: one of the replicas that are reachable and no further behind than
  ``ARENA_SCALE_REPLICA_MAX_LAG`` (checked with ``ARENA_SCALE_REPLICA_CHECK_TIMEOUT``, reused
  for ``ARENA_SCALE_REPLICA_CHECK_INTERVAL`` per process), else the primary.

Migrations run on the primary only: the replicas receive them through replication.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from django_arena_scale._conf import conf
from django_arena_scale.db._monitor import ReplicaHealth, ReplicaMonitor
from django_arena_scale.db._urls import PRIMARY

logger = logging.getLogger("django_arena_scale.db")
CACHE_PREFIX = "arena_scale:ryw:"
AUTH_USER_KEY = "_auth_user_id"  # django.contrib.auth.SESSION_KEY, without importing auth

# Replication lag in seconds: 0 for a primary, and for a standby that has replayed all it
# received while it streams from its primary; otherwise the age of the last replayed
# transaction (which grows while the primary is silent or unreachable: a standby cut off from
# its primary is skipped once that exceeds the bound).
LAG_SQL = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
  ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 'Infinity')
END
"""


def probe_replica(alias: str) -> float:
    """Connect to ``alias`` (a connection of its own, closed after) and return its lag (s)."""
    from django.db import connections

    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        with wrapper.temporary_connection() as cursor:
            cursor.execute("SELECT 1")
        return 0.0
    params = wrapper.get_connection_params()
    driver: Any = wrapper.Database  # type: ignore[attr-defined]
    connection = driver.connect(**params)
    try:
        cursor = connection.cursor()
        cursor.execute(LAG_SQL)
        row = cursor.fetchone()
        return float(row[0])
    finally:
        connection.close()


monitor = ReplicaMonitor(probe_replica)


def replica_health(alias: str) -> ReplicaHealth | None:
    """The last verdict on replica ``alias`` in this process (None before its first check)."""
    return monitor.health(alias)


def replica_unreachable(alias: str) -> None:
    """A connection to replica ``alias`` failed: skip it until its next check."""
    before = monitor.health(alias)
    monitor.report_down(alias)
    if before is None or before.usable:
        logger.warning("Read replica %s is unreachable: its reads go to the primary.", alias)


# --- per request (or per context) state ---------------------------------------------------------


@dataclass
class _RequestState:
    request: HttpRequest | None = None
    wrote: bool = False
    forced: int = 0
    _recent_writer: bool | None = None

    def recent_writer(self) -> bool:
        """Whether the cache says this client wrote within the window (looked up once)."""
        if self._recent_writer is None:
            # Reads made by the lookup itself (a database session) go to the primary.
            self._recent_writer = True
            self._recent_writer = _recently_wrote(self.request)
        return self._recent_writer


_request_state: ContextVar[_RequestState | None] = ContextVar("arena_scale_db", default=None)
# Outside a request: when this context last wrote (monotonic seconds).
_last_write: ContextVar[float | None] = ContextVar("arena_scale_db_last_write", default=None)
# Inside use_primary() outside a request.
_forced: ContextVar[int] = ContextVar("arena_scale_db_forced", default=0)


def _client_keys(request: HttpRequest | None) -> list[str]:
    """Cache keys of the client of ``request``: its user and its session; no DB query."""
    session = getattr(request, "session", None)
    if session is None:
        return []
    keys: list[str] = []
    user_id = session.get(AUTH_USER_KEY)
    if user_id is not None:
        keys.append(f"u:{user_id}")
    if session.session_key:
        keys.append(f"s:{session.session_key}")
    return [_hashed(key) for key in keys]


def _hashed(client: str) -> str:
    # A session key is a credential: the cache sees only a hash of it.
    return CACHE_PREFIX + hashlib.sha256(client.encode()).hexdigest()[:40]


def _cache() -> Any:
    from django.core.cache import caches

    return caches[conf.READ_YOUR_WRITES_CACHE]


def _recently_wrote(request: HttpRequest | None) -> bool:
    if conf.READ_YOUR_WRITES <= 0 or request is None:
        return False
    try:
        keys = _client_keys(request)
        return bool(keys) and bool(_cache().get_many(keys))
    except Exception:
        # The session or the cache is unreachable: read from the primary (never stale).
        logger.warning("Read-your-writes lookup failed; reading from the primary.", exc_info=True)
        return True


def _remember(request: HttpRequest, keys_before: list[str]) -> None:
    window = conf.READ_YOUR_WRITES
    if window <= 0 or not conf.READ_REPLICAS:
        return
    try:
        keys = set(keys_before) | set(_client_keys(request))
        if keys:
            _cache().set_many(dict.fromkeys(keys, 1), timeout=max(1, round(window + 0.5)))
    except Exception:
        # The write is done; the next read may be stale for this client, not fail.
        logger.warning("Recording a write for read-your-writes failed.", exc_info=True)


@contextlib.contextmanager
def use_primary() -> Iterator[None]:
    """Read from the primary inside this block (e.g. right after an external write)."""
    state = _request_state.get()
    if state is not None:
        state.forced += 1
        try:
            yield
        finally:
            state.forced -= 1
        return
    token = _forced.set(_forced.get() + 1)
    try:
        yield
    finally:
        _forced.reset(token)


def _primary_needed() -> bool:
    state = _request_state.get()
    if state is not None:
        if state.wrote or state.forced:
            return True
    else:
        if _forced.get():
            return True
        last = _last_write.get()
        if last is not None and time.monotonic() - last < conf.READ_YOUR_WRITES:
            return True
    from django.db import connections

    if connections[PRIMARY].in_atomic_block:
        return True
    return state is not None and state.recent_writer()


class ReplicaRouter:
    """``DATABASE_ROUTERS = ['django_arena_scale.db.ReplicaRouter']`` (see the module doc)."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        replicas = conf.READ_REPLICAS
        if not replicas:
            return None
        if _primary_needed():
            return PRIMARY
        instance = hints.get("instance")
        db = getattr(getattr(instance, "_state", None), "db", None)
        if db in replicas:
            # Related objects of an instance read from a replica come from the same one.
            health = monitor.health(db)
            if health is not None and health.usable:
                return str(db)
        picked = monitor.pick(
            replicas,
            max_lag=conf.REPLICA_MAX_LAG,
            interval=conf.REPLICA_CHECK_INTERVAL,
            timeout=conf.REPLICA_CHECK_TIMEOUT,
        )
        return picked or PRIMARY

    def db_for_write(self, model: Any, **hints: Any) -> str:
        state = _request_state.get()
        if state is not None:
            state.wrote = True
        else:
            _last_write.set(time.monotonic())
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        group = {PRIMARY, *conf.READ_REPLICAS}
        if obj1._state.db in group and obj2._state.db in group:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db in conf.READ_REPLICAS else None


class ReadYourWritesMiddleware:
    """Reads of a client that just wrote go to the primary, on every replica of the app.

    Put it right after ``SessionMiddleware``.  It costs nothing until the request reads the
    database; then one cache lookup, and one cache write after a request that wrote.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        state = _RequestState(request=request)
        token = _request_state.set(state)
        try:
            keys_before = self._keys(request)
            response: HttpResponseBase = self.get_response(request)
        finally:
            _request_state.reset(token)
        if state.wrote:
            _remember(request, keys_before)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        state = _RequestState(request=request)
        token = _request_state.set(state)
        try:
            keys_before = await sync_to_async(self._keys)(request)
            response: HttpResponseBase = await self.get_response(request)
        finally:
            _request_state.reset(token)
        if state.wrote:
            await sync_to_async(_remember)(request, keys_before)
        return response

    @staticmethod
    def _keys(request: HttpRequest) -> list[str]:
        # Before the view, the session key alone (no I/O): a login or logout changes it.
        session = getattr(request, "session", None)
        if session is None or not conf.READ_REPLICAS:
            return []
        key = session.session_key
        if not key:
            return []
        return [_hashed(f"s:{key}")]
