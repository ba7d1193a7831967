"""Probe views for projects that prefer URL routing to ``ProbeMiddleware``.

They give the same answers, but run after every middleware listed before the URL resolver,
so host validation, HTTPS redirects or login requirements may intercept them; the middleware
is the recommended way.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from django_arena_scale.health import _service as service

View = Callable[[HttpRequest], HttpResponse]


def _probe(kind: str) -> View:
    handler = service.SYNC[kind]

    def view(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return service.method_not_allowed(request)
        return service.safe(handler, request)

    view.__name__ = view.__qualname__ = kind
    view.__doc__ = handler.__doc__
    return csrf_exempt(login_not_required(view))


live = _probe("live")
health = _probe("health")
ready = _probe("ready")
status = _probe("status")
