from __future__ import annotations

from django.apps import AppConfig


class ArenaScaleConfig(AppConfig):
    """Registers the system checks. Nothing heavy happens here, and no signal handler is set."""

    name = "django_arena_scale"
    verbose_name = "Arena Scale"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_arena_scale import checks  # noqa: F401  (registers the checks)
