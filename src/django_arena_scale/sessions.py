"""Session engine ``django_arena_scale.sessions``: Django's cache sessions, outage-aware.

Django's cache session store treats any exception while loading a session as "no session"
(memcached raises on keys it cannot store).  During a Redis outage that turns every logged-in
user into an anonymous one: a view answers 401/403 or redirects to the login page, and the
user may be logged out for good once a new session is written.  This store raises
:class:`~django_arena_scale.middleware.DependencyUnavailable` instead when the error is an
outage, so ``DependencyErrorMiddleware`` answers ``503 dependency_unavailable``; any other
error keeps Django's behaviour.  ``redis_sessions(engine="cache")`` selects it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from django_arena_scale.middleware import DependencyUnavailable, dependency_of

__all__ = ["SessionStore"]


def _raise_outage(exc: Exception) -> None:
    dependency = dependency_of(exc)
    if dependency is not None:
        raise DependencyUnavailable(dependency, exc) from exc


class SessionStore(CacheSessionStore):
    """Cache-backed sessions that fail loudly (503) while the cache is unreachable."""

    def load(self) -> dict[str, Any]:
        try:
            session_data = self._cache.get(self.cache_key)  # type: ignore[attr-defined]
        except Exception as exc:
            _raise_outage(exc)
            session_data = None  # Django's behaviour for anything else (#17810)
        if session_data is not None:
            return session_data  # type: ignore[no-any-return]
        self._session_key = None
        return {}

    async def aload(self) -> dict[str, Any]:
        try:
            session_data = await self._cache.aget(  # type: ignore[attr-defined]
                await self.acache_key()
            )
        except Exception as exc:
            _raise_outage(exc)
            session_data = None
        if session_data is not None:
            return session_data  # type: ignore[no-any-return]
        self._session_key = None
        return {}
