"""Resilient LLM calls: one guard for every call shape, breakers shared across replicas.

Usage::

    from django_arena_scale.resilience import current_attempt_timeout, llm_call

    @llm_call("openai", deadline=30, fallbacks=["openai:backup"])
    def complete(prompt):
        return client.chat.completions.create(..., timeout=current_attempt_timeout())

The guard works on functions, coroutine functions, generator and async generator functions.
Per call: deadline -> fallback chain -> fresh tenacity retryer (wait = max(server hint,
jittered backoff), never past the deadline) -> breaker gate (local pybreaker state; Redis
shares an "open until" flag and a half-open probe lease) -> the call, with a per-attempt
timeout -> classifier (failure / success / neutral) -> record.  Streams are retried only
before their first chunk reaches the caller.

Exceptions (all raised on purpose derive from ``django_arena_scale.ArenaScaleError``)::

    ArenaScaleError
    ├── GuardConfigError (also ValueError)   bad guard / provider options, at decoration time
    └── LLMCallError
        ├── ProviderUnavailable              breaker open for every target; .retry_at, .retry_after
        ├── RetriesExhausted                 attempts used up; provider error is __cause__
        │   └── DeadlineExceeded (also TimeoutError)   the overall deadline ran out
        ├── StreamInterrupted                provider failed after the first chunk; never restarted
        └── LLMTimeout (also TimeoutError)   limits enforced by the guard (retryable)
            ├── AttemptTimeout
            ├── FirstChunkTimeout
            └── IdleTimeout

Provider errors that are not worth retrying (400, 401, 403, 404, 422, content errors) and
unknown exceptions propagate unchanged; cancellation propagates and counts as neutral.

The names exported here are the public API, ``breaker_event`` included (the Django signal that
carries every :class:`BreakerEvent`; loaded on first use, so importing this package imports
no Django).  The modules inside are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_arena_scale.resilience._classify import (
    Classifier,
    Outcome,
    Verdict,
    default_classifier,
)
from django_arena_scale.resilience._context import (
    AttemptContext,
    Target,
    current_attempt,
    current_attempt_timeout,
    current_target,
)
from django_arena_scale.resilience._errors import (
    AttemptTimeout,
    DeadlineExceeded,
    FirstChunkTimeout,
    GuardConfigError,
    IdleTimeout,
    LLMCallError,
    LLMTimeout,
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
)
from django_arena_scale.resilience._events import BreakerEvent, add_listener, remove_listener
from django_arena_scale.resilience._guard import LLMGuard, llm_call
from django_arena_scale.resilience._policy import llm_test_mode, set_testing
from django_arena_scale.resilience._registry import configure, reset
from django_arena_scale.resilience._status import breaker_status

if TYPE_CHECKING:
    from django_arena_scale.resilience._django import breaker_event


def __getattr__(name: str) -> Any:
    if name == "breaker_event":
        from django_arena_scale.resilience import _django

        return _django.breaker_event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttemptContext",
    "AttemptTimeout",
    "BreakerEvent",
    "Classifier",
    "DeadlineExceeded",
    "FirstChunkTimeout",
    "GuardConfigError",
    "IdleTimeout",
    "LLMCallError",
    "LLMGuard",
    "LLMTimeout",
    "Outcome",
    "ProviderUnavailable",
    "RetriesExhausted",
    "StreamInterrupted",
    "Target",
    "Verdict",
    "add_listener",
    "breaker_event",
    "breaker_status",
    "configure",
    "current_attempt",
    "current_attempt_timeout",
    "current_target",
    "default_classifier",
    "llm_call",
    "llm_test_mode",
    "remove_listener",
    "reset",
    "set_testing",
]
