"""The example's WSGI application, plus ``/bare/``: a WSGI hello world that never enters Django.

For ``bench/probes.py`` only.  ``/bare/`` shows what the server alone costs per request on this
machine: no path through Django can be faster, so ``/bare/`` vs ``/api/ping/`` is the ceiling
for the ``/live/`` vs ``/api/ping/`` ratio.  Every other path goes to the example's own
``application`` after one string comparison, the same for ``/live/`` and ``/api/ping/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from arena_project.wsgi import application as django_application

BODY = b'{"status":"pass"}'
HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(BODY))),
    ("Cache-Control", "no-store"),
]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/bare/":
        start_response("200 OK", HEADERS)
        return [BODY]
    response: Iterable[bytes] = django_application(environ, start_response)
    return response
