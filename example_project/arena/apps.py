from __future__ import annotations

from django.apps import AppConfig


class ArenaConfig(AppConfig):
    name = "arena"
    verbose_name = "Arena (example)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import request_started

        from arena import panel

        # The stack panel's publisher starts with a process's first request (a forked
        # worker's, never the gunicorn master's); it needs REDIS_URL, else it does nothing.
        request_started.connect(panel.ensure_publisher, dispatch_uid="arena-stack-panel")
