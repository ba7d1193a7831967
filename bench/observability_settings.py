"""Example-project settings for ``bench/observability.py``: ``ARENA_BENCH_OBSERVABILITY=off``
removes what the bench measures (``RequestIDMiddleware``, ``MetricsMiddleware``, the
request-id log filter and ``ARENA_SCALE_METRICS``); ``metrics`` keeps only the metrics,
``request_id`` only the request ids (and their log filter); ``on`` keeps the example as it
ships."""

from __future__ import annotations

import os

from arena_project.settings import *  # noqa: F403
from arena_project.settings import LOGGING, MIDDLEWARE

_VARIANT = os.environ.get("ARENA_BENCH_OBSERVABILITY", "on")
_REQUEST_ID = "django_arena_scale.requestid.RequestIDMiddleware"
_METRICS = "django_arena_scale.metrics.MetricsMiddleware"
_REMOVED = {"on": (), "off": (_REQUEST_ID, _METRICS), "metrics": (_REQUEST_ID,),
            "request_id": (_METRICS,)}[_VARIANT]  # fmt: skip

MIDDLEWARE = [m for m in MIDDLEWARE if m not in _REMOVED]
if _METRICS in _REMOVED:
    ARENA_SCALE_METRICS = False
if _REQUEST_ID in _REMOVED:
    LOGGING = {
        **LOGGING,
        "filters": {},
        "formatters": {"text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            name: {k: v for k, v in handler.items() if k != "filters"} | {"formatter": "text"}
            for name, handler in LOGGING["handlers"].items()
        },
    }
