"""Breaker events for logs, callbacks and (through the Django adapter) signals.

Events carry the breaker name, states, attempt numbers, waits, classifier reason tokens and the
id of the request that caused them: never prompts, call arguments or exception messages.

Listeners get the breaker kinds (:data:`KINDS`) unless they ask for more with ``kinds=``: the
per-attempt kinds (:data:`CALL_KINDS`: ``outcome`` of every attempt, ``first_chunk`` with the
time to a stream's first chunk, ``stream_end`` with the chunks a stream passed on) are built
only while a listener wants them (:data:`observing`), so an unobserved call pays nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django_arena_scale.requestid import current_request_id

__all__ = ["BreakerEvent", "EventListener", "add_listener", "emit", "remove_listener"]

logger = logging.getLogger("django_arena_scale.resilience")

KINDS = frozenset({"state_change", "short_circuit", "retry", "fallback", "failure"})
CALL_KINDS = frozenset({"outcome", "first_chunk", "stream_end"})
ALL_KINDS = KINDS | CALL_KINDS


@dataclass(frozen=True)
class BreakerEvent:
    """Something a breaker or guard did.

    ``kind`` is one of ``state_change``, ``short_circuit``, ``retry``, ``fallback`` and
    ``failure``; ``reason`` is a classifier token such as ``"http_429"`` or ``"timeout"``.
    For listeners that asked for them: ``outcome`` (``reason`` is the attempt's outcome:
    ``success``, ``retry``, ``failure``, ``rejected`` or ``neutral``), ``first_chunk``
    (``value``: seconds from opening the stream to its first chunk) and ``stream_end``
    (``value``: chunks passed on to the caller).  ``request_id`` is the id of the request
    being handled when the event happened (``django_arena_scale.requestid``), or None.
    """

    kind: str
    breaker: str
    old_state: str | None = None
    new_state: str | None = None
    attempt: int | None = None
    wait: float | None = None
    reason: str | None = None
    target: str | None = None
    value: float | None = None
    request_id: str | None = field(default_factory=current_request_id)


EventListener = Callable[[BreakerEvent], None]

_listeners: tuple[tuple[EventListener, frozenset[str]], ...] = ()
_lock = threading.Lock()
#: Whether some listener wants the per-attempt kinds (read on the guard's hot path).
observing = False


def add_listener(listener: EventListener, *, kinds: Iterable[str] | None = None) -> None:
    """Call ``listener(event)`` for every event (from the thread that caused it; keep it fast).

    ``kinds``: the event kinds wanted; default :data:`KINDS` (the breaker events).  Add
    ``"outcome"``, ``"first_chunk"`` or ``"stream_end"`` (:data:`CALL_KINDS`) for per-attempt
    events.  Adding the same listener again replaces its kinds.
    """
    global _listeners, observing
    if not callable(listener):
        msg = f"add_listener() expects a callable, got {listener!r}."
        raise TypeError(msg)
    wanted = KINDS if kinds is None else frozenset(kinds)
    unknown = sorted(wanted - ALL_KINDS)
    if unknown:
        msg = f"add_listener() got unknown kinds {unknown!r}; expected some of {sorted(ALL_KINDS)}."
        raise ValueError(msg)
    with _lock:
        kept = tuple(item for item in _listeners if item[0] is not listener)
        _listeners = (*kept, (listener, wanted))
        observing = any(k & CALL_KINDS for _, k in _listeners)


def remove_listener(listener: EventListener) -> None:
    global _listeners, observing
    with _lock:
        _listeners = tuple(item for item in _listeners if item[0] is not listener)
        observing = any(k & CALL_KINDS for _, k in _listeners)


def emit(event: BreakerEvent) -> None:
    if event.kind == "state_change":
        # Opening is what an operator must see; half-open and closed are the recovery.
        level = logging.WARNING if event.new_state == "open" else logging.INFO
        logger.log(
            level, "circuit breaker %r: %s -> %s", event.breaker, event.old_state, event.new_state
        )
    for listener, kinds in _listeners:
        if event.kind not in kinds:
            continue
        try:
            listener(event)
        except Exception:
            # A broken metrics hook must never break an LLM call.
            logger.exception("breaker event listener %r failed", listener)
