"""Per-provider breaker status for ``/status/``: cheap, in-process, no network I/O."""

from __future__ import annotations

from typing import Any

__all__ = ["breaker_status"]


def breaker_status() -> dict[str, dict[str, Any]]:
    """Map provider name -> status dict (``status`` is ``"warn"`` when open or half-open).

    Keys of each entry: ``status`` ("pass" | "warn"), ``state`` ("closed" | "open" |
    "half-open"), ``calls``, ``failures``, ``retries``, ``short_circuits``, ``fallbacks``.
    """
    return {}
