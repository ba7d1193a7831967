"""Health checks and probes: the :class:`Check` model, its registry, and the runner.

Importing this package never touches ``django.conf.settings``.
"""

from __future__ import annotations

from django_arena_scale.health._model import (
    Check,
    CheckResult,
    Reason,
    Report,
    Scope,
    Status,
    Unavailable,
)
from django_arena_scale.health._registry import (
    duplicate_check_names,
    get_checks,
    invalid_check_paths,
    register_check,
    unregister_check,
)
from django_arena_scale.health._runner import Runner

__all__ = [
    "Check",
    "CheckResult",
    "Reason",
    "Report",
    "Runner",
    "Scope",
    "Status",
    "Unavailable",
    "duplicate_check_names",
    "get_checks",
    "invalid_check_paths",
    "register_check",
    "unregister_check",
]
