"""Lifecycle state (STARTING -> READY -> DRAINING), drain control and shutdown hooks."""

from __future__ import annotations

from django_arena_scale.lifecycle.state import (
    Lifecycle,
    State,
    get_lifecycle,
    reset_lifecycle,
)

__all__ = ["Lifecycle", "State", "begin_drain", "get_lifecycle", "reset_lifecycle"]


def begin_drain() -> None:
    """Put this process in DRAINING: /ready/ and /health/ answer 503 from now on."""
    get_lifecycle().begin_drain()
