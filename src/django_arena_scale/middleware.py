"""``ProbeMiddleware`` and ``DependencyErrorMiddleware``.

``ProbeMiddleware``: put it first in ``MIDDLEWARE``.  It answers exactly ``<prefix>live``,
``health``, ``ready`` and ``status`` (with or without the trailing slash) for GET and HEAD
(other methods get 405), so host validation, HTTPS redirects, login requirements, locale
redirects and throttling never see a probe.  Any other request costs one dict lookup.

``DependencyErrorMiddleware``: put it right after ``ProbeMiddleware``, so that it wraps
``SessionMiddleware`` and everything else.  A request that fails because a shared dependency
is down (Redis refused, timed out, loading, full, read-only; the database unreachable) gets
``503 {"error": "dependency_unavailable", "dependency": "redis"}`` with ``Retry-After`` and
``Cache-Control: no-store`` instead of a 500, and one log line with the exception.

Both work under WSGI and ASGI.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from django_arena_scale.health import service

GetResponse = Callable[[HttpRequest], Any]
logger = logging.getLogger("django_arena_scale.health")


def probe_routes(prefix: str) -> dict[str, str]:
    """Exact request paths answered for ``prefix`` (which starts and ends with ``/``)."""
    routes: dict[str, str] = {}
    for kind in service.PROBES:
        routes[f"{prefix}{kind}"] = kind
        routes[f"{prefix}{kind}/"] = kind
    return routes


class ProbeMiddleware:
    """Answer ``live``/``health``/``ready``/``status`` probes first; pass everything else on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        from django_arena_scale.lifecycle.warmup import start_warmups

        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        self.prefix = service.setting_or_default("PROBE_PREFIX")
        self.routes = probe_routes(self.prefix)
        # Django builds the middleware chain once its apps are ready: the moment to warm up.
        try:
            start_warmups()
        except Exception:
            # Never break the application over warm-ups; /health/ retries on its first call.
            logger.exception("Starting the warm-ups failed.")

    def __repr__(self) -> str:
        mode = "async" if self.async_mode else "sync"
        return f"<ProbeMiddleware prefix={self.prefix!r} {mode}>"

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        kind = self.routes.get(request.path_info)
        if kind is None:
            response: HttpResponseBase = self.get_response(request)
            return response
        if request.method not in ("GET", "HEAD"):
            return service.method_not_allowed(request)
        return service.safe(service.SYNC[kind], request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        kind = self.routes.get(request.path_info)
        if kind is None:
            response: HttpResponseBase = await self.get_response(request)
            return response
        if request.method not in ("GET", "HEAD"):
            return service.method_not_allowed(request)
        return await service.asafe(kind, request)


# --- dependency failures -> 503 ---------------------------------------------------------------
#: Seconds a client is asked to wait before retrying a request that met a failed dependency.
RETRY_AFTER = 5
# Redis error replies (first word) that mean "the server cannot serve this now", as redis-py
# raises them as a plain ResponseError when it has no class for them.
_REDIS_UNAVAILABLE_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "CLUSTERDOWN")
_GUARD = "_arena_scale_dependency_guard"
dependency_logger = logging.getLogger("django_arena_scale.dependencies")
_LOGGED = "_arena_scale_dependency_logged"


class DependencyUnavailable(Exception):
    """A request met a failed dependency; carries it through Django's exception conversion."""

    def __init__(self, dependency: str, original: BaseException) -> None:
        super().__init__(dependency)
        self.dependency = dependency
        self.original = original


def _redis_dependency(exc: BaseException) -> bool | None:
    """True: a Redis outage; False: another Redis error (look no further); None: not Redis."""
    try:
        from redis import exceptions as rex
    except ImportError:  # pragma: no cover - redis is a dependency of the [servers] extra
        return None
    unavailable: tuple[type[BaseException], ...] = (
        rex.ConnectionError,  # refused, reset, BusyLoadingError, AuthenticationError, ...
        rex.TimeoutError,
        rex.ReadOnlyError,
        rex.MasterDownError,
        rex.ClusterDownError,
        getattr(rex, "OutOfMemoryError", rex.ConnectionError),  # redis-py >= 4.x
    )
    if isinstance(exc, unavailable):
        return True
    if isinstance(exc, rex.ResponseError):
        first = str(exc).split(" ", 1)[0]
        return first in _REDIS_UNAVAILABLE_REPLIES
    if isinstance(exc, rex.RedisError):
        return False
    return None


def dependency_of(exc: BaseException) -> str | None:
    """``"redis"`` or ``"database"`` when ``exc`` (or what it was raised from) is an outage.

    Follows ``raise ... from`` causes (django-redis wraps Redis errors in
    ``ConnectionInterrupted``), not implicit contexts, so a bug raised while handling an
    outage is still a bug.  Anything else (a Redis ``WRONGTYPE`` reply, an ``IntegrityError``)
    is ``None``: it stays a 500.
    """
    from django.db import InterfaceError, OperationalError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        if isinstance(current, DependencyUnavailable):
            return current.dependency
        if isinstance(current, (OperationalError, InterfaceError)):
            return "database"
        redis_outage = _redis_dependency(current)
        if redis_outage is not None:
            return "redis" if redis_outage else None
        if type(current).__name__ == "ConnectionInterrupted" and (
            current.__cause__ is None or _redis_dependency(current.__cause__) is None
        ):
            return "redis"  # django-redis wrapping a socket error (or nothing): connection lost
        current = current.__cause__
    return None


def dependency_unavailable_response(dependency: str) -> HttpResponse:
    """The 503 a request that met a failed dependency gets: no exception text, no secret."""
    body = json.dumps({"error": "dependency_unavailable", "dependency": dependency})
    response = HttpResponse(body, content_type="application/json", status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _exception_being_converted() -> BaseException | None:
    """The exception ``got_request_exception`` is being sent for.

    Under WSGI that is ``sys.exc_info()``.  Under ASGI Django calls ``response_for_exception``
    in a worker thread, outside the ``except`` block, so the exception is taken from that
    function's ``exc`` argument (the signal's caller, a few frames up).
    """
    exc = sys.exc_info()[1]
    if exc is not None:
        return exc
    frame: FrameType | None = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        if frame.f_code.co_name == "response_for_exception":
            found = frame.f_locals.get("exc")
            return found if isinstance(found, BaseException) else None
        frame = frame.f_back
    return None


def _on_request_exception(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Re-raise a dependency failure past Django's conversion of it into a 500.

    Django turns an exception raised by a middleware (``SessionMiddleware`` saving the
    session after the view) into a 500 response before any outer middleware sees it; the one
    hook on that path is this signal, sent just before.  Only for requests that
    ``DependencyErrorMiddleware`` wraps: it catches :class:`DependencyUnavailable` and answers
    503, and Django neither logs a 500 nor mails the admins for it.  Receivers connected
    before this one (error trackers set up in ``settings.py``) still see the exception.
    """
    if request is None or not getattr(request, _GUARD, False):
        return
    exc = _exception_being_converted()
    if exc is None:
        return
    if isinstance(exc, DependencyUnavailable):
        raise exc
    dependency = dependency_of(exc)
    if dependency is not None:
        raise DependencyUnavailable(dependency, exc) from exc


got_request_exception.connect(
    _on_request_exception, dispatch_uid="django_arena_scale.middleware.dependency_errors"
)


class DependencyErrorMiddleware:
    """Answer 503 ``dependency_unavailable`` when a request meets a failed Redis or database.

    Put it right after ``ProbeMiddleware``.  Exceptions raised by the view reach
    :meth:`process_exception`; exceptions raised by inner middleware (saving the session)
    come back as :class:`DependencyUnavailable` through ``got_request_exception``.  Other
    exceptions are left to Django (500, logged as usual).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"<DependencyErrorMiddleware {'async' if self.async_mode else 'sync'}>"

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        setattr(request, _GUARD, True)
        try:
            response: HttpResponseBase = self.get_response(request)
        except DependencyUnavailable as exc:
            return self._unavailable(request, exc.dependency, exc.original)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        setattr(request, _GUARD, True)
        try:
            response: HttpResponseBase = await self.get_response(request)
        except DependencyUnavailable as exc:
            return self._unavailable(request, exc.dependency, exc.original)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        dependency = dependency_of(exception)
        if dependency is None:
            return None
        return self._unavailable(request, dependency, exception)

    def _unavailable(
        self, request: HttpRequest, dependency: str, exc: BaseException
    ) -> HttpResponse:
        if not getattr(request, _LOGGED, False):
            setattr(request, _LOGGED, True)
            dependency_logger.warning(
                "%s %s: dependency %s unavailable; answered 503.",
                request.method,
                request.path,
                dependency,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        response = dependency_unavailable_response(dependency)
        # Logged above with the exception: Django's handler need not log "Service Unavailable"
        # again (django.utils.log.log_response skips responses marked like this).
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
