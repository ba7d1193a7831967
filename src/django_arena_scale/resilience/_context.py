"""What a guarded function can see: the fallback chain's targets and the running attempt.

The guard sets a contextvar around every attempt (and around every ``next()`` of a stream);
:func:`current_attempt`, :func:`current_attempt_timeout` and :func:`current_target` read it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django_arena_scale.resilience._errors import GuardConfigError

__all__ = [
    "AttemptContext",
    "Target",
    "attempt_var",
    "current_attempt",
    "current_attempt_timeout",
    "current_target",
]


@dataclass(frozen=True)
class Target:
    """One entry of a fallback chain: a provider (and key), optionally another callable/kwargs.

    ``"azure"`` or ``"openai:backup"`` parse to ``Target("azure")`` and
    ``Target("openai", key="backup")``; the wrapped function reads :func:`current_target` to
    pick the client.  ``call`` replaces the wrapped function; ``kwargs`` are merged into the
    call's keyword arguments.
    """

    provider: str
    key: str | None = None
    call: Callable[..., Any] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.provider if self.key is None else f"{self.provider}:{self.key}"

    def __repr__(self) -> str:
        return f"<Target {self.name!r}>"

    @classmethod
    def parse(cls, value: Target | str) -> Target:
        if isinstance(value, Target):
            target = value
        elif isinstance(value, str):
            provider, sep, key = value.partition(":")
            target = cls(provider, key if sep else None)
        else:
            msg = f"A fallback should be a Target or a 'provider[:key]' string, got {value!r}."
            raise GuardConfigError(msg)
        _check_name("provider", target.provider)
        if target.key is not None:
            _check_name("key", target.key)
        if target.call is not None and not callable(target.call):
            msg = f"Target {target.name!r} call should be callable, got {target.call!r}."
            raise GuardConfigError(msg)
        if not isinstance(target.kwargs, Mapping):
            msg = f"Target {target.name!r} kwargs should be a mapping, got {target.kwargs!r}."
            raise GuardConfigError(msg)
        return target


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not value or ":" in value or value != value.strip():
        msg = f"The {what} should be a non-empty string without ':' or spaces, got {value!r}."
        raise GuardConfigError(msg)


class AttemptContext:
    """What the wrapped function may want to know about the attempt it runs in."""

    __slots__ = ("attempt", "deadline_at", "request_id", "target", "timeout")

    def __init__(
        self,
        target: Target,
        attempt: int,
        timeout: float,
        deadline_at: float,
        request_id: str | None = None,
    ) -> None:
        self.target = target
        self.attempt = attempt
        self.timeout = timeout
        self.deadline_at = deadline_at
        #: The id of the request that made the call (``X-Request-ID``), or None.
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"<AttemptContext {self.target.name!r} attempt={self.attempt} "
            f"timeout={self.timeout:.3g}>"
        )


attempt_var: contextvars.ContextVar[AttemptContext | None] = contextvars.ContextVar(
    "arena_scale_llm_attempt", default=None
)


def current_attempt() -> AttemptContext | None:
    """The running attempt's context, or None outside a guarded call."""
    return attempt_var.get()


def current_attempt_timeout() -> float | None:
    """Seconds this attempt may take (shrinks with the deadline); None outside a guard."""
    ctx = attempt_var.get()
    return None if ctx is None else ctx.timeout


def current_target() -> Target | None:
    """The fallback-chain target this attempt calls; None outside a guard."""
    ctx = attempt_var.get()
    return None if ctx is None else ctx.target
