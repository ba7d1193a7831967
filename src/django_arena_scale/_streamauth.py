"""Read-only session and lazy user for the auth routes of ``asgi.StreamRouter``.

A fast-path request gets what ``SessionMiddleware`` and ``AuthenticationMiddleware`` would give
it, read-only and without blocking the event loop: :func:`read_only_store` wraps the
configured engine's ``SessionStore`` (loads lazily, never writes) and :class:`AuthStreamRequest`
adds ``await request.auser()`` and a ``request.user`` that refuses to block the loop.

``SESSION_ENGINE`` is read when the router is built.  Where the I/O happens, per engine
(Django 5.2, 6.0 and 6.1 have the same async session API and ``aget_user``):

* ``cache`` (``redis_sessions()``): the engine awaits ``cache.aget``, which Django's cache
  backends and django-redis 7 implement as ``sync_to_async(get)``; ``db`` and ``cached_db``
  use the async ORM, which is ``sync_to_async`` too.  A session load is one hop to asgiref's
  shared thread: the loop never blocks, but the loads of one worker run one at a time on that
  thread.  (``cached_db`` refills its cache after a miss, as on any read: a cache write, not a
  session change);
* ``signed_cookies``: pure CPU, loaded inline on the loop (no hop);
* ``file``: Django's ``aload`` reads the file on the calling thread; here it runs in a thread;
* a third-party engine with a native async ``aload`` (or a cache backend with a native
  ``aget``) is awaited as is, without any thread.

The user itself is loaded by the auth backend's ``aget_user`` (``ModelBackend``: the async
ORM, i.e. the same shared thread).  After a lookup the router closes that thread's database
connections that are obsolete or broken (``close_old_connections``, what ``request_finished``
does), so ``CONN_MAX_AGE`` holds and a database restart is survived.  An anonymous request
without a session cookie costs no I/O and no thread at all.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["AuthStreamRequest", "ReadOnlySession", "aget_user", "read_only_store"]


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ReadOnlySession:
    """Mixin over a session engine's ``SessionStore``: loads lazily, never writes.

    Sync access that would load the session raises on the event loop (it would block it);
    ``aload`` runs a blocking engine (``file``) in a thread.  Writes are dropped: a stream never
    creates, rotates, extends or deletes a session.
    """

    _blocking_aload = False

    def _get_session(self, no_load: bool = False) -> dict[str, Any]:
        if (
            not no_load
            and not hasattr(self, "_session_cache")
            and getattr(self, "_session_key", None) is not None
            and _on_event_loop()
        ):
            msg = (
                "request.session of a StreamRouter auth route is not loaded yet, and loading it "
                "here would block the event loop; use 'await request.session.aget(key)' or "
                "'await request.auser()' first (sync access works afterwards)."
            )
            raise SynchronousOnlyOperation(msg)
        data: dict[str, Any] = super()._get_session(no_load)  # type: ignore[misc]
        return data

    _session = property(_get_session)

    async def aload(self) -> dict[str, Any]:
        if self._blocking_aload:
            data: dict[str, Any] = await sync_to_async(self.load)()  # type: ignore[attr-defined]
            return data
        data = await super().aload()  # type: ignore[misc]
        return data

    def save(self, must_create: bool = False) -> None:
        pass

    async def asave(self, must_create: bool = False) -> None:
        pass

    def create(self) -> None:
        pass

    async def acreate(self) -> None:
        pass

    def delete(self, session_key: str | None = None) -> None:
        pass

    async def adelete(self, session_key: str | None = None) -> None:
        pass


def read_only_store() -> type[SessionBase]:
    """The read-only ``SessionStore`` of ``settings.SESSION_ENGINE``."""
    from django.apps import apps
    from django.conf import settings
    from django.contrib.sessions.backends import file

    if not apps.is_installed("django.contrib.auth"):
        msg = (
            "StreamRouter auth routes need 'django.contrib.auth' in INSTALLED_APPS "
            "(request.auser() loads the user through it)."
        )
        raise ImproperlyConfigured(msg)
    engine = settings.SESSION_ENGINE
    try:
        store: type[SessionBase] = import_string(f"{engine}.SessionStore")
    except ImportError as exc:
        msg = (
            f"StreamRouter auth routes need a session engine; SESSION_ENGINE={engine!r} "
            "has no SessionStore."
        )
        raise ImproperlyConfigured(msg) from exc
    attrs = {
        "_blocking_aload": issubclass(store, file.SessionStore),
        "__module__": __name__,
        # SessionBase.key_salt is derived from the class's __qualname__: the stored data of
        # the db, cached_db and file engines only decodes under the engine's own name.
        "__qualname__": store.__qualname__,
    }
    read_only: type[SessionBase] = type(
        f"ReadOnly{store.__name__}", (ReadOnlySession, store), attrs
    )
    return read_only


class AuthStreamRequest(ASGIRequest):
    """The request of an ``auth`` route: ``session`` (read-only), ``auser()`` and ``user``."""

    _cached_user: Any = None

    async def auser(self) -> Any:
        if self._cached_user is None:
            self._cached_user = await aget_user(self)
        return self._cached_user

    @property
    def user(self) -> Any:
        if self._cached_user is None:
            if _on_event_loop():
                msg = (
                    "request.user on a StreamRouter route would load the session and the user "
                    "with blocking I/O on the event loop; use 'user = await request.auser()' "
                    "(request.user returns that user afterwards)."
                )
                raise SynchronousOnlyOperation(msg)
            from django.contrib.auth import get_user
            from django.db import close_old_connections

            try:
                self._cached_user = get_user(self)
            finally:
                # As in aget_user: no request_finished will clean up this thread's connection.
                close_old_connections()
        return self._cached_user

    @user.setter
    def user(self, value: Any) -> None:
        self._cached_user = value


async def aget_user(request: HttpRequest) -> Any:
    from django.contrib.auth import SESSION_KEY, aget_user
    from django.db import close_old_connections

    if await request.session.aget(SESSION_KEY) is None:
        # Anonymous: no backend, no database (and, without a cookie, no I/O at all).
        return await aget_user(request)
    try:
        return await aget_user(request)
    finally:
        # The backend's lookup ran on asgiref's shared thread; without request_finished its
        # connection would outlive CONN_MAX_AGE, and a broken one would never be replaced.
        await sync_to_async(close_old_connections)()
