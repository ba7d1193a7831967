"""Breaker events for logs, callbacks and (through the Django adapter) signals.

Events carry the breaker name, states, attempt numbers, waits and classifier reason tokens:
never prompts, call arguments or exception messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerEvent", "EventListener", "add_listener", "emit", "remove_listener"]

logger = logging.getLogger("django_arena_scale.resilience")

KINDS = frozenset({"state_change", "short_circuit", "retry", "fallback", "failure"})


@dataclass(frozen=True)
class BreakerEvent:
    """Something a breaker or guard did.

    ``kind`` is one of ``state_change``, ``short_circuit``, ``retry``, ``fallback`` and
    ``failure``; ``reason`` is a classifier token such as ``"http_429"`` or ``"timeout"``.
    """

    kind: str
    breaker: str
    old_state: str | None = None
    new_state: str | None = None
    attempt: int | None = None
    wait: float | None = None
    reason: str | None = None
    target: str | None = None


EventListener = Callable[[BreakerEvent], None]

_listeners: tuple[EventListener, ...] = ()
_lock = threading.Lock()


def add_listener(listener: EventListener) -> None:
    """Call ``listener(event)`` for every event (from the thread that caused it; keep it fast)."""
    global _listeners
    if not callable(listener):
        msg = f"add_listener() expects a callable, got {listener!r}."
        raise TypeError(msg)
    with _lock:
        _listeners = (*_listeners, listener)


def remove_listener(listener: EventListener) -> None:
    global _listeners
    with _lock:
        _listeners = tuple(item for item in _listeners if item is not listener)


def emit(event: BreakerEvent) -> None:
    if event.kind == "state_change":
        # Opening is what an operator must see; half-open and closed are the recovery.
        level = logging.WARNING if event.new_state == "open" else logging.INFO
        logger.log(
            level, "circuit breaker %r: %s -> %s", event.breaker, event.old_state, event.new_state
        )
    for listener in _listeners:
        try:
            listener(event)
        except Exception:
            # A broken metrics hook must never break an LLM call.
            logger.exception("breaker event listener %r failed", listener)
