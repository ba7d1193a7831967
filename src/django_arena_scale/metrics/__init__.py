"""Prometheus metrics of a replica, exact across its workers and across worker recycling.

With ``PROMETHEUS_MULTIPROC_DIR`` set in the server's master before its workers start
(:func:`prepare_multiprocess_dir`, gunicorn's ``on_starting``), every worker writes its values to
files there and a scrape of any worker merges all of them (prometheus_client's multiprocess
mode); without it, one process keeps its values in memory.  The names, labels and meanings
are the table in ``docs/observability.md``.

* :class:`MetricsMiddleware` (after ``RequestIDMiddleware``) counts requests and their
  durations by method (:func:`method_label`) and URL pattern (:func:`route_label`), never by
  raw path.
* ``ProbeMiddleware`` answers ``<ARENA_SCALE_PROBE_PREFIX>metrics`` under the access rule of
  the ``/status/`` details (bearer token, allowed network, staff session); anyone else gets a
  403 JSON answer.  ``ARENA_SCALE_METRICS = False`` turns both off.

This module does not import prometheus_client (the master imports it for the process helpers;
see ``_process``); ``_prom`` does, on first use in a worker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from django_arena_scale.metrics._process import (
    MULTIPROC_ENV,
    cleanup_multiprocess_dir,
    mark_worker_dead,
    multiprocess_dir,
    prepare_multiprocess_dir,
)

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

__all__ = [
    "METHODS",
    "MULTIPROC_ENV",
    "UNMATCHED",
    "MetricsMiddleware",
    "cleanup_multiprocess_dir",
    "mark_worker_dead",
    "method_label",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
    "route_label",
]

#: The methods counted by name; any other is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no URL pattern matched (a 404, or answered before resolving).
UNMATCHED = "unmatched"


def method_label(method: str | None) -> str:
    """``method`` when it is one of :data:`METHODS`, else ``other``."""
    return method if method in METHODS else "other"


def route_label(request: Any) -> str:
    """The matched URL pattern (``request.resolver_match.route``, e.g. ``api/ping/``).

    ``unmatched`` when nothing matched; ``/`` for the root pattern (an empty route).  Never the
    request's path, so the label has one value per pattern.
    """
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    route = getattr(match, "route", None)
    if route is None:
        return UNMATCHED
    return str(route) or "/"


class MetricsMiddleware:
    """Count each request (``arena_http_requests_total``) and time it (``..._duration_seconds``).

    Put it after ``RequestIDMiddleware`` (and after ``ProbeMiddleware``: probes are not
    counted).  The duration runs until the response is ready: a stream's headers, not its end.
    Removed from the chain (``MiddlewareNotUsed``) when ``ARENA_SCALE_METRICS`` is False.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from django.core.exceptions import MiddlewareNotUsed

        from django_arena_scale.health import _fastconf as fastconf

        if not fastconf.get("METRICS"):
            raise MiddlewareNotUsed("ARENA_SCALE_METRICS is False")
        from django_arena_scale.metrics import _prom

        _prom.install()
        self.record = _prom.record_request
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"<MetricsMiddleware {'async' if self.async_mode else 'sync'}>"

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        started = time.perf_counter()
        response: HttpResponseBase = self.get_response(request)
        self.record(
            method_label(request.method),
            route_label(request),
            response.status_code,
            time.perf_counter() - started,
        )
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response: HttpResponseBase = await self.get_response(request)
        self.record(
            method_label(request.method),
            route_label(request),
            response.status_code,
            time.perf_counter() - started,
        )
        return response
