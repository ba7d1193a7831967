"""Per-provider breaker status for ``/status/``: cheap, in-process, no network I/O."""

from __future__ import annotations

from typing import Any

from django_arena_scale.resilience._breaker import CLOSED
from django_arena_scale.resilience._registry import registry

__all__ = ["breaker_status"]


def breaker_status() -> dict[str, dict[str, Any]]:
    """Map breaker name (``provider`` or ``provider:key``) -> status dict.

    Keys of each entry: ``status`` ("pass" | "warn": open or half-open is warn), ``state``
    ("closed" | "open" | "half-open"), ``calls``, ``failures``, ``retries``,
    ``short_circuits``, ``fallbacks``, plus ``successes``, ``rejected``, ``neutral``,
    ``failure_count`` (consecutive) and ``retry_after`` (seconds until a probe is admitted).
    Reads local snapshots only (the Redis view is at most one refresh interval old).
    """
    result: dict[str, dict[str, Any]] = {}
    for name, breaker in sorted(registry.breakers().items()):
        snap = breaker.snapshot()
        entry: dict[str, Any] = {"status": "pass" if snap["state"] == CLOSED else "warn"}
        entry.update(snap)
        result[name] = entry
    return result
