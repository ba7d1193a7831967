"""Retry and breaker options, their validation, backoff maths and the test-mode switch."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from django_arena_scale.resilience._errors import GuardConfigError

__all__ = [
    "BREAKER_OPTIONS",
    "PROVIDER_OPTIONS",
    "RETRY_OPTIONS",
    "BreakerOptions",
    "RetryPolicy",
    "is_testing",
    "llm_test_mode",
    "set_testing",
]


def _seconds(owner: str, name: str, value: Any, *, nullable: bool, zero_ok: bool) -> float | None:
    if value is None:
        if nullable:
            return None
        msg = f"{owner} option {name!r} should be a number of seconds, got None."
        raise GuardConfigError(msg)
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = (
            f"{owner} option {name!r} should be a number of seconds or a timedelta, got {value!r}."
        )
        raise GuardConfigError(msg)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        msg = f"{owner} option {name!r} should be finite and {bound}, got {value!r}."
        raise GuardConfigError(msg)
    return seconds


def _count(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{owner} option {name!r} should be an integer >= 1, got {value!r}."
        raise GuardConfigError(msg)
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How one guarded call retries: attempts, overall deadline, backoff and stream timeouts.

    Backoff is exponential with full jitter: ``uniform(0, min(backoff_max, backoff_initial *
    2**(n-1)))``; the wait before attempt n+1 is ``max(server hint capped at max_retry_after,
    backoff)``.  No retry is made when the time left is below that wait plus
    ``min_attempt_time``.
    """

    max_attempts: int = 3
    deadline: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 30.0
    min_attempt_time: float = 0.5
    attempt_timeout: float | None = None
    first_chunk_timeout: float | None = None
    idle_timeout: float | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, owner: str) -> RetryPolicy:
        values: dict[str, Any] = {}
        for name, value in options.items():
            if name == "max_attempts":
                values[name] = _count(owner, name, value)
            elif name in ("attempt_timeout", "first_chunk_timeout", "idle_timeout"):
                values[name] = _seconds(owner, name, value, nullable=True, zero_ok=False)
            elif name in ("backoff_initial", "min_attempt_time"):
                values[name] = _seconds(owner, name, value, nullable=False, zero_ok=True)
            else:
                values[name] = _seconds(owner, name, value, nullable=False, zero_ok=False)
        policy = cls(**values)
        if policy.backoff_max < policy.backoff_initial:
            msg = (
                f"{owner} option 'backoff_max' ({policy.backoff_max!r}) should be >= "
                f"'backoff_initial' ({policy.backoff_initial!r})."
            )
            raise GuardConfigError(msg)
        return policy

    def backoff(self, attempt: int, unit_random: float) -> float:
        """Full-jitter backoff after ``attempt`` failures (``unit_random`` in [0, 1))."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2.0 ** min(attempt - 1, 62)))
        return unit_random * ceiling

    def wait(self, attempt: int, hint: float | None, unit_random: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``: max(capped hint, backoff)."""
        backoff = self.backoff(attempt, unit_random)
        if hint is None:
            return backoff
        return max(min(hint, self.max_retry_after), backoff)

    def attempt_timeout_for(self, time_left: float) -> float:
        """The timeout handed to one attempt: ``attempt_timeout`` shrunk to the time left."""
        if self.attempt_timeout is None:
            return max(0.0, time_left)
        return max(0.0, min(self.attempt_timeout, time_left))


@dataclass(frozen=True)
class BreakerOptions:
    """Circuit breaker options of one provider (or provider+key)."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    success_threshold: int = 1
    probe_lease: float = 30.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, owner: str) -> BreakerOptions:
        values: dict[str, Any] = {}
        for name, value in options.items():
            if name in ("failure_threshold", "success_threshold"):
                values[name] = _count(owner, name, value)
            else:
                values[name] = _seconds(owner, name, value, nullable=False, zero_ok=False)
        return cls(**values)


RETRY_OPTIONS = frozenset(f.name for f in fields(RetryPolicy))
BREAKER_OPTIONS = frozenset(f.name for f in fields(BreakerOptions))
PROVIDER_OPTIONS = RETRY_OPTIONS | BREAKER_OPTIONS
"""Every key accepted in a provider's options (``ARENA_SCALE_LLM_PROVIDERS[name]``)."""


def split_options(options: Mapping[str, Any], *, owner: str) -> tuple[RetryPolicy, BreakerOptions]:
    """Validate ``options`` (unknown keys are an error) into a retry policy and breaker options."""
    unknown = sorted(set(options) - PROVIDER_OPTIONS)
    if unknown:
        msg = (
            f"{owner} has unknown option(s) {', '.join(repr(u) for u in unknown)}; "
            f"expected some of {', '.join(sorted(PROVIDER_OPTIONS))}."
        )
        raise GuardConfigError(msg)
    retry = {k: v for k, v in options.items() if k in RETRY_OPTIONS}
    breaker = {k: v for k, v in options.items() if k in BREAKER_OPTIONS}
    return (
        RetryPolicy.from_options(retry, owner=owner),
        BreakerOptions.from_options(breaker, owner=owner),
    )


class _TestMode:
    __slots__ = ("attempts", "enabled")

    def __init__(self) -> None:
        self.enabled = False
        self.attempts = 1


_test_mode = _TestMode()
_test_lock = threading.Lock()


def set_testing(enabled: bool, *, attempts: int = 1) -> None:
    """Switch test mode: no sleeps between attempts and at most ``attempts`` attempts per target."""
    attempts = _count("set_testing()", "attempts", attempts)
    with _test_lock:
        _test_mode.enabled = bool(enabled)
        _test_mode.attempts = attempts


def is_testing() -> bool:
    return _test_mode.enabled


@contextlib.contextmanager
def llm_test_mode(*, attempts: int = 1) -> Iterator[None]:
    """Test mode inside a ``with`` block (restores the previous mode on exit)."""
    previous = (_test_mode.enabled, _test_mode.attempts)
    set_testing(True, attempts=attempts)
    try:
        yield
    finally:
        set_testing(previous[0], attempts=previous[1])


def effective_policy(policy: RetryPolicy) -> RetryPolicy:
    """``policy`` with the test-mode attempt cap applied."""
    if _test_mode.enabled and policy.max_attempts > _test_mode.attempts:
        return replace(policy, max_attempts=_test_mode.attempts)
    return policy
