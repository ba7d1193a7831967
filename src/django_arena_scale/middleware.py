"""``ProbeMiddleware``: answers the probe paths before any other middleware runs.

Put it first in ``MIDDLEWARE``.  It answers exactly ``<prefix>live``, ``health``, ``ready`` and
``status`` (with or without the trailing slash) for GET and HEAD (other methods get 405), so
host validation, HTTPS redirects, login requirements, locale redirects and throttling never see
a probe.  Any other request costs one dict lookup.  Works under WSGI and ASGI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

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
