"""Outcome classification of provider errors, by duck typing (no provider SDK is imported).

A :class:`Verdict` says what an exception means for the call and for the breaker:

========  =====================================================  =========  ==============
outcome   typical causes                                         retried?   breaker
========  =====================================================  =========  ==============
RETRY     timeouts, connection errors, 408, 409, 429, 5xx,       yes        failure
          in-stream overload / rate-limit errors
FAILURE   provider-side errors not worth retrying (user rules)   no         failure
REJECTED  400, 401, 403, 404, 422, content / policy errors       no         success (the
                                                                            provider answered)
NEUTRAL   cancellation, client disconnect, unknown exceptions    no         nothing
========  =====================================================  =========  ==============

Unknown exceptions are NEUTRAL on purpose: a bug in the caller's code must neither be retried
silently nor open the breaker of a healthy provider.
"""

from __future__ import annotations

import email.utils
import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from django_arena_scale.resilience._errors import LLMCallError, LLMTimeout

__all__ = ["Classifier", "Outcome", "Rule", "Verdict", "default_classifier", "parse_retry_after"]


class Outcome(enum.Enum):
    """What an attempt's result means (see the module docstring)."""

    SUCCESS = "success"
    RETRY = "retry"
    FAILURE = "failure"
    REJECTED = "rejected"
    NEUTRAL = "neutral"

    @property
    def is_failure(self) -> bool:
        return self is Outcome.RETRY or self is Outcome.FAILURE


@dataclass(frozen=True)
class Verdict:
    """An outcome, a short stable reason token (safe to log) and the server's wait hint."""

    outcome: Outcome
    reason: str
    retry_after: float | None = None


RuleResult = Union[Outcome, Verdict, None]  # noqa: UP007 - runtime alias on Python 3.10
Rule = Callable[[BaseException], RuleResult]

# Error "type"/"code" values found in provider bodies (OpenAI, Anthropic, OpenAI-compatible
# servers), including errors sent inside an SSE stream whose HTTP status was 200.
_RETRY_BODY_TYPES = frozenset(
    {
        "overloaded_error",
        "rate_limit_error",
        "rate_limit_exceeded",
        "api_error",
        "server_error",
        "internal_server_error",
        "service_unavailable",
        "timeout_error",
        "overloaded",
    }
)
_REJECTED_BODY_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "billing_error",
        "content_filter",
        "content_policy_violation",
        "context_length_exceeded",
        "insufficient_quota",
    }
)
_RETRY_STATUSES = frozenset({408, 409, 429})
_TIMEOUT_NAMES = frozenset({"TimeoutException", "APITimeoutError", "TimeoutError", "Timeout"})
_CONNECTION_NAMES = frozenset(
    {
        "NetworkError",
        "RemoteProtocolError",
        "APIConnectionError",
        "ConnectionError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "RetryableError",
    }
)
_CONTENT_NAMES = frozenset({"ContentFilterFinishReasonError", "LengthFinishReasonError"})


def parse_retry_after(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date).

    ``headers`` is anything with ``get`` (httpx ``Headers``, a dict...).  Returns ``None`` when
    there is no usable hint; never a negative or non-finite number.
    """
    if headers is None or not hasattr(headers, "get"):
        return None
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _header(headers: Any, name: str) -> str | None:
    for candidate in (name, name.title(), name.upper()):
        try:
            value = headers.get(candidate)
        except Exception:  # a foreign headers object; a bad hint must not break the call
            return None
        if value is not None:
            return str(value)
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == name:
                return str(value)
    return None


def _status_code(exc: BaseException) -> int | None:
    for owner in (exc, getattr(exc, "response", None)):
        if owner is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _body_types(exc: BaseException) -> set[str]:
    found: set[str] = set()
    body = getattr(exc, "body", None)
    for candidate in (body, body.get("error") if isinstance(body, Mapping) else None):
        if isinstance(candidate, Mapping):
            for key in ("type", "code"):
                value = candidate.get(key)
                if isinstance(value, str):
                    found.add(value.lower())
    for attr in ("type", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            found.add(value.lower())
    return found


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _builtin_verdict(exc: BaseException) -> Verdict:
    if not isinstance(exc, Exception):
        # CancelledError, GeneratorExit (the consumer closed the stream), KeyboardInterrupt.
        return Verdict(Outcome.NEUTRAL, "cancelled")
    if isinstance(exc, LLMTimeout):
        return Verdict(Outcome.RETRY, "timeout")
    if isinstance(exc, LLMCallError):
        return Verdict(Outcome.NEUTRAL, "guard")
    body_types = _body_types(exc)
    status = _status_code(exc)
    hint = None
    if status is not None:
        response = getattr(exc, "response", None)
        hint = parse_retry_after(
            getattr(response, "headers", None) or getattr(exc, "headers", None)
        )
    if body_types & _RETRY_BODY_TYPES:
        return Verdict(Outcome.RETRY, "provider_overloaded", hint)
    if body_types & _REJECTED_BODY_TYPES:
        return Verdict(Outcome.REJECTED, "provider_rejected")
    if status is not None:
        reason = f"http_{status}"
        if status in _RETRY_STATUSES or status >= 500:
            return Verdict(Outcome.RETRY, reason, hint)
        if status >= 400:
            return Verdict(Outcome.REJECTED, reason)
        # An error raised while the HTTP status was 2xx: an in-stream error of unknown type.
        return Verdict(Outcome.FAILURE, "stream_error")
    names = _mro_names(exc)
    if names & _TIMEOUT_NAMES:
        return Verdict(Outcome.RETRY, "timeout")
    if names & _CONNECTION_NAMES:
        return Verdict(Outcome.RETRY, "connection")
    if names & _CONTENT_NAMES:
        return Verdict(Outcome.REJECTED, "content")
    return Verdict(Outcome.NEUTRAL, "unknown")


class Classifier:
    """Built-in duck-typed rules, preceded by user rules (first match wins).

    ``add_rule(SomeError, Outcome.RETRY)`` or ``add_rule(predicate)`` where ``predicate(exc)``
    returns an :class:`Outcome`, a :class:`Verdict` or ``None`` (no opinion).
    """

    def __init__(self, rules: tuple[Rule, ...] = ()) -> None:
        self._rules: list[Rule] = list(rules)

    def __repr__(self) -> str:
        return f"<Classifier rules={len(self._rules)}>"

    def add_rule(
        self,
        match: type[BaseException] | tuple[type[BaseException], ...] | Rule,
        outcome: Outcome | None = None,
    ) -> None:
        """Add a rule evaluated before the built-in ones (and after earlier user rules)."""
        if isinstance(match, (type, tuple)):
            types = match if isinstance(match, tuple) else (match,)
            if not types or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                msg = f"add_rule() match should be exception classes, got {match!r}."
                raise TypeError(msg)
            if not isinstance(outcome, Outcome):
                msg = f"add_rule() with exception classes needs an Outcome, got {outcome!r}."
                raise TypeError(msg)
            fixed = outcome

            def rule(exc: BaseException) -> RuleResult:
                return fixed if isinstance(exc, types) else None

            self._rules.append(rule)
            return
        if not callable(match):
            msg = f"add_rule() match should be an exception class or a callable, got {match!r}."
            raise TypeError(msg)
        if outcome is not None:
            msg = "add_rule() takes an outcome only with exception classes; a callable returns it."
            raise TypeError(msg)
        self._rules.append(match)

    def classify(self, exc: BaseException) -> Verdict:
        """The verdict for ``exc``; user rules first, then the built-in rules."""
        for rule in self._rules:
            result = rule(exc)
            if result is None:
                continue
            if isinstance(result, Outcome):
                builtin = _builtin_verdict(exc)
                return Verdict(result, "rule", builtin.retry_after)
            if isinstance(result, Verdict):
                return result
            msg = (
                f"Classifier rule {rule!r} returned {result!r}; expected Outcome, Verdict or None."
            )
            raise TypeError(msg)
        return _builtin_verdict(exc)


default_classifier = Classifier()
"""The process-wide classifier used by guards that don't pass their own; add rules to it."""
