"""``ProbeMiddleware``, ``DependencyErrorMiddleware`` and ``SessionMiddleware``.

``ProbeMiddleware``: put it first in ``MIDDLEWARE``.  It answers exactly ``<prefix>live``,
``health``, ``ready``, ``status`` and, unless ``ARENA_SCALE_METRICS`` is False, ``metrics``
(with or without the trailing slash) for GET and HEAD (other methods get 405), so host
validation, HTTPS redirects, login requirements, locale redirects and throttling never see a
probe.  Any other request costs one dict lookup.

A request that fails because a shared dependency is down (Redis refused, timed out, loading,
full, read-only; the database unreachable) gets ``503 {"error": "dependency_unavailable",
"dependency": "redis"}`` with ``Retry-After`` and ``Cache-Control: no-store`` instead of a 500,
and one WARNING log line with the exception.  Two middleware cover the two places it happens:

- ``DependencyErrorMiddleware`` (right after ``ProbeMiddleware``): exceptions raised by the
  view, through ``process_exception``.
- ``SessionMiddleware`` (in place of ``django.contrib.sessions.middleware.SessionMiddleware``,
  a subclass of it): the session save after the view, in ``process_response``.

All of them work under WSGI and ASGI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.log import log_response

from django_arena_scale.health import _service as service

GetResponse = Callable[[HttpRequest], Any]
logger = logging.getLogger("django_arena_scale.health")


def probe_routes(prefix: str, *, metrics: bool = False) -> dict[str, str]:
    """Exact request paths answered for ``prefix`` (which starts and ends with ``/``)."""
    routes: dict[str, str] = {}
    for kind in (*service.PROBES, "metrics") if metrics else service.PROBES:
        routes[f"{prefix}{kind}"] = kind
        routes[f"{prefix}{kind}/"] = kind
    return routes


class ProbeMiddleware:
    """Answer ``live``/``health``/``ready``/``status`` probes first; pass everything else on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        from django_arena_scale.lifecycle._warmup import start_warmups_or_log

        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        self.prefix = service.setting_or_default("PROBE_PREFIX")
        metrics = bool(service.setting_or_default("METRICS"))
        self.routes = probe_routes(self.prefix, metrics=metrics)
        if metrics:
            from django_arena_scale.metrics import _prom

            # Readiness, LLM and shutdown metrics are recorded from now on in this process.
            _prom.install()
        # Django builds the middleware chain once its apps are ready: the moment to warm up.
        # Never break the application over warm-ups; /health/ retries on its first call.
        start_warmups_or_log()

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
dependency_logger = logging.getLogger("django_arena_scale.dependencies")


class DependencyUnavailable(Exception):
    """A dependency of the application's own is unavailable: answer the same 503.

    Raise it from a view (``raise DependencyUnavailable("search", exc) from exc``) to get
    ``503 {"error": "dependency_unavailable", "dependency": "search"}`` from
    ``DependencyErrorMiddleware``, logged like a Redis or database outage.
    """

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


def _unavailable(request: HttpRequest, dependency: str, exc: BaseException) -> HttpResponse:
    """The 503 for ``request``, logged once at WARNING with ``exc``.

    ``log_response`` is how Django logs a response once: the handler's own call for this
    response (an ERROR "Service Unavailable", which the default logging mails to the admins)
    then does nothing.
    """
    response = dependency_unavailable_response(dependency)
    log_response(
        "%s %s: dependency %s unavailable; answered 503.",
        request.method,
        request.path,
        dependency,
        response=response,
        request=request,
        logger=dependency_logger,
        level="warning",
        exception=exc,
    )
    return response


class DependencyErrorMiddleware:
    """Answer 503 ``dependency_unavailable`` when a view meets a failed Redis or database.

    Put it right after ``ProbeMiddleware``.  Exceptions raised by the view (also while its
    ``TemplateResponse`` renders) reach :meth:`process_exception`, Django's public hook for
    them; middleware below it that define one of their own are asked first.  The session save
    after the view is :class:`SessionMiddleware`'s part.  Other exceptions are left to Django
    (500, logged as usual).
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
        response: HttpResponseBase = self.get_response(request)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        dependency = dependency_of(exception)
        if dependency is None:
            return None
        return _unavailable(request, dependency, exception)


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``, with a failed session store answered 503.

    Use it in place of ``django.contrib.sessions.middleware.SessionMiddleware``, at the same
    position.  Django saves a modified session after the view, in ``process_response``; when the
    store (the sessions Redis, the database) fails there, the request gets the same ``503
    dependency_unavailable`` as a view that meets it, instead of the 500 Django makes of the
    exception before any outer middleware sees it.  Any other exception (``SessionInterrupted``,
    a bug) is raised unchanged.  A subclass, so whatever looks for Django's (the admin's
    ``admin.E410`` check) still finds it.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        try:
            return super().process_response(request, response)
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                raise
            return _unavailable(request, dependency, exc)
