from __future__ import annotations

from django.urls import include, path

# The probes (/live/, /health/, /ready/, /status/) are answered by ProbeMiddleware before any
# URL resolution, so they need no entry here.
urlpatterns = [path("", include("arena.urls"))]
