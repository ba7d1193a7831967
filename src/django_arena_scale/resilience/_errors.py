"""Errors raised by the LLM call guard (the tree is drawn in the package docstring)."""

from __future__ import annotations

import datetime as dt

from django_arena_scale import ArenaScaleError

__all__ = [
    "AttemptTimeout",
    "DeadlineExceeded",
    "FirstChunkTimeout",
    "GuardConfigError",
    "IdleTimeout",
    "LLMCallError",
    "LLMTimeout",
    "ProviderUnavailable",
    "RetriesExhausted",
    "StreamInterrupted",
]


class GuardConfigError(ArenaScaleError, ValueError):
    """A guard, breaker or provider option is invalid (raised at decoration time)."""


class LLMCallError(ArenaScaleError):
    """Base class of the errors the guard raises around a provider call."""


class ProviderUnavailable(LLMCallError):
    """Every target's circuit breaker is open: no call was made.

    ``retry_at`` is the UTC time at which a call may be admitted again; ``retry_after`` the
    same as seconds from when the error was raised (handy for a ``Retry-After`` header).
    """

    def __init__(self, provider: str, retry_after: float, *, reason: str = "open") -> None:
        self.provider = provider
        self.retry_after = max(0.0, retry_after)
        self.retry_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.retry_after)
        self.reason = reason
        super().__init__(
            f"Provider {provider!r} is unavailable (circuit {reason}); "
            f"retry after {self.retry_after:.1f} s."
        )


class RetriesExhausted(LLMCallError):
    """Every attempt on every target failed before a result (or first chunk) was produced.

    The last provider error is ``__cause__`` (and ``last_error``).
    """

    def __init__(self, provider: str, attempts: int, last_error: BaseException | None) -> None:
        self.provider = provider
        self.attempts = attempts
        self.last_error = last_error
        kind = type(last_error).__name__ if last_error is not None else "none"
        super().__init__(
            f"Call to {provider!r} failed after {attempts} attempt(s); last error: {kind}."
        )


class DeadlineExceeded(RetriesExhausted, TimeoutError):
    """The deadline ran out, or the next wait plus a minimal attempt would not fit in it."""

    def __init__(
        self, provider: str, attempts: int, last_error: BaseException | None, deadline: float
    ) -> None:
        super().__init__(provider, attempts, last_error)
        self.deadline = deadline
        self.args = (
            f"Call to {provider!r} could not complete within its {deadline:g} s deadline "
            f"({attempts} attempt(s)).",
        )


class StreamInterrupted(LLMCallError):
    """The provider failed after the first chunk reached the caller; the stream is not restarted.

    ``chunks`` is how many chunks the caller received; the provider error is ``__cause__``.
    """

    def __init__(self, provider: str, chunks: int, error: BaseException) -> None:
        self.provider = provider
        self.chunks = chunks
        self.error = error
        super().__init__(
            f"Stream from {provider!r} broke after {chunks} chunk(s): {type(error).__name__}."
        )


class LLMTimeout(LLMCallError, TimeoutError):
    """A time limit enforced by the guard itself; classified as a retryable timeout."""

    def __init__(self, provider: str, seconds: float) -> None:
        self.provider = provider
        self.seconds = seconds
        super().__init__(f"{self.what} of {provider!r} exceeded {seconds:.3g} s.")

    what = "Attempt"


class AttemptTimeout(LLMTimeout):
    """One attempt took longer than its per-attempt timeout (async calls only)."""

    what = "Attempt"


class FirstChunkTimeout(LLMTimeout):
    """A stream produced no first chunk within ``first_chunk_timeout``."""

    what = "Time to first chunk"


class IdleTimeout(LLMTimeout):
    """A stream was silent between two chunks for longer than ``idle_timeout``."""

    what = "Idle time between chunks"
