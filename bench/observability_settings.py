"""Example-project settings for ``bench/observability.py``: ``ARENA_BENCH_OBSERVABILITY=off``
removes what the bench measures (``RequestIDMiddleware``, ``MetricsMiddleware``, the
request-id log filter and ``ARENA_SCALE_METRICS``); ``on`` keeps the example as it ships."""

from __future__ import annotations

import os

from arena_project.settings import *  # noqa: F403
from arena_project.settings import LOGGING, MIDDLEWARE

if os.environ.get("ARENA_BENCH_OBSERVABILITY", "on") == "off":
    MIDDLEWARE = [
        m
        for m in MIDDLEWARE
        if m
        not in (
            "django_arena_scale.requestid.RequestIDMiddleware",
            "django_arena_scale.metrics.MetricsMiddleware",
        )
    ]
    ARENA_SCALE_METRICS = False
    LOGGING = {
        **LOGGING,
        "filters": {},
        "formatters": {"text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            name: {k: v for k, v in handler.items() if k != "filters"} | {"formatter": "text"}
            for name, handler in LOGGING["handlers"].items()
        },
    }
