"""Fleet coordination of circuit breakers through Redis: shared "open until" flags, probe leases.

Redis only *coordinates*; every replica keeps a full local breaker, so a Redis outage degrades
to per-replica breakers instead of breaking calls.  Keys (``prefix`` defaults to
``arena-scale:breaker``)::

    {prefix}:{name}:open    exists while the breaker is open fleet-wide; PTTL = time left
    {prefix}:{name}:probe   half-open probe lease, SET NX PX by the replica that probes

Using the key's TTL instead of a timestamp keeps replicas immune to wall-clock skew.  The
closed hot path never talks to Redis: one pipeline of PTTLs (all breakers, one round trip)
refreshes the local snapshot at most once per ``refresh_interval``, run inline by the first
call that finds it stale (single-flight).  The client has a short timeout and no retries, and
after a failure no Redis I/O is tried until the next refresh, so a dead Redis costs at most one
``timeout`` per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django_arena_scale._redact import redact_url

if TYPE_CHECKING:
    from django_arena_scale.resilience._breaker import CircuitBreaker

__all__ = ["RedisCoordinator"]

logger = logging.getLogger("django_arena_scale.resilience")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisCoordinator:
    """Shares breaker state through one Redis; see the module docstring."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str = "arena-scale:breaker",
        refresh_interval: float = 1.0,
        timeout: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (client is None):
            msg = "RedisCoordinator needs exactly one of url= or client=."
            raise ValueError(msg)
        if not 0 < refresh_interval <= 60:
            msg = f"refresh_interval should be in (0, 60] seconds, got {refresh_interval!r}."
            raise ValueError(msg)
        if not 0 < timeout <= 5:
            msg = f"timeout should be in (0, 5] seconds, got {timeout!r}."
            raise ValueError(msg)
        self.url = redact_url(url) if url is not None else repr(client)
        if url is not None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.prefix = prefix
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._next_refresh = 0.0
        self._refresh_lock = threading.Lock()
        self._to_close: set[str] = set()
        self.available = True
        self.refreshes = 0
        self.errors = 0

    def __repr__(self) -> str:
        state = "up" if self.available else "down"
        return f"<RedisCoordinator {self.url} redis={state} breakers={len(self._breakers)}>"

    def _key(self, name: str, kind: str) -> str:
        return f"{self.prefix}:{name}:{kind}"

    def register(self, breaker: CircuitBreaker) -> None:
        self._breakers[breaker.name] = breaker
        breaker.coordinator = self

    def close(self) -> None:
        for breaker in self._breakers.values():
            if breaker.coordinator is self:
                breaker.coordinator = None
        self._breakers.clear()
        if self._owns_client:
            self.client.close()

    # --- the snapshot ----------------------------------------------------------------------

    def maybe_refresh(self) -> None:
        """Refresh the local snapshot when it is older than ``refresh_interval`` (hot path)."""
        if self._clock() >= self._next_refresh:
            self.refresh()

    def refresh(self) -> bool:
        """One round trip: read every breaker's open flag; apply it locally.  False if down."""
        if not self._refresh_lock.acquire(blocking=False):
            return self.available  # someone else is refreshing: keep using the snapshot
        try:
            self._next_refresh = self._clock() + self.refresh_interval
            breakers = list(self._breakers.values())
            try:
                pipe = self.client.pipeline(transaction=False)
                for name in sorted(self._to_close):
                    pipe.delete(self._key(name, "open"))
                for breaker in breakers:
                    pipe.pttl(self._key(breaker.name, "open"))
                results = pipe.execute()
            except Exception as exc:  # redis.RedisError, OSError: degrade to local breakers
                self._mark_down(exc)
                return False
            self._to_close.clear()
            self._mark_up()
            self.refreshes += 1
            republish: list[tuple[str, float]] = []
            for breaker, pttl in zip(
                breakers, results[len(results) - len(breakers) :], strict=False
            ):
                seconds = pttl / 1000.0 if isinstance(pttl, int) and pttl > 0 else None
                still_open = breaker.apply_remote(seconds)
                if still_open is not None:
                    republish.append((breaker.name, still_open))
            for name, seconds in republish:
                self.publish_open(name, seconds)
            return True
        finally:
            self._refresh_lock.release()

    # --- writes (only on transitions and in half-open) -------------------------------------

    def publish_open(self, name: str, seconds: float) -> None:
        """Tell the fleet ``name`` is open for ``seconds`` (keeps the longer of two trips)."""
        if not self.available:
            return
        try:
            ms = max(1, int(seconds * 1000))
            # GT keeps the later expiry if two replicas trip at once (Redis >= 7).
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self._key(name, "open"), "1", px=ms, nx=True)
            pipe.pexpire(self._key(name, "open"), ms, gt=True)
            pipe.execute()
            self._to_close.discard(name)
        except Exception as exc:
            self._mark_down(exc)

    def publish_closed(self, name: str) -> None:
        """Tell the fleet ``name`` closed (after a successful probe)."""
        if not self.available:
            self._to_close.add(name)
            return
        try:
            self.client.delete(self._key(name, "open"))
            self._to_close.discard(name)
        except Exception as exc:
            self._to_close.add(name)
            self._mark_down(exc)

    def acquire_probe(self, name: str, token: str, ttl: float) -> bool | None:
        """Try to take the fleet-wide half-open probe lease; None when Redis is unavailable."""
        if not self.available:
            return None
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self._key(name, "probe"), token, nx=True, px=max(1, int(ttl * 1000)))
            pipe.pttl(self._key(name, "open"))
            granted, pttl = pipe.execute()
        except Exception as exc:
            self._mark_down(exc)
            return None
        breaker = self._breakers.get(name)
        if isinstance(pttl, int) and pttl > 0:
            # Another replica's probe failed and reopened the breaker: do not probe.
            if breaker is not None:
                breaker.apply_remote(pttl / 1000.0)
            if granted:
                self.release_probe(name, token)
            return False
        return bool(granted)

    def release_probe(self, name: str, token: str) -> None:
        if not self.available:
            return
        try:
            self.client.eval(_RELEASE, 1, self._key(name, "probe"), token)
        except Exception as exc:
            self._mark_down(exc)

    # --- availability ----------------------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            logger.warning(
                "breaker coordination: Redis %s unavailable (%s); using local breakers",
                self.url,
                type(exc).__name__,
            )
        self.available = False
        # No Redis I/O before the next refresh: a dead Redis costs one timeout per interval.
        self._next_refresh = self._clock() + self.refresh_interval

    def _mark_up(self) -> None:
        if not self.available:
            logger.warning("breaker coordination: Redis %s reachable again", self.url)
        self.available = True
