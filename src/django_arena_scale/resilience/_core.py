"""The guard's decisions, written once for every call shape and without I/O.

Per call, :class:`Run` holds the deadline, the position in the fallback chain, the last
error and its verdict, and decides: whether an error moves the call on (retry or next target)
or ends it, which target comes next, and which error ends the call when nothing is left.

Retries on one target are tenacity's, through its public API: a fresh ``Retrying`` (sync) or
``AsyncRetrying`` (async) per target, built from :meth:`Run.retrying`:

- ``retry=retry_if_exception(...)``: retry what the classifier called retryable;
- ``stop=stop_after_attempt(max_attempts) | DeadlineStop``: the second stops, like
  tenacity's ``stop_before_delay``, when the upcoming wait plus ``min_attempt_time`` no longer
  fits before the call's deadline (on the guard's clock, shared by the fallback chain);
- ``wait=HintOrBackoff``: max(server hint, full-jitter backoff); the hint comes from the
  classifier's verdict on the failure, as stamina's backoff hook feeds its wait;
- ``before_sleep``: counts the retry and emits the ``retry`` event;
- ``sleep``: the guard's (injectable) sleep, given by the driver; ``reraise=True``.

The first attempt on a target runs before any retryer exists, so the happy path builds none
(a tenacity loop costs several times the guard's whole overhead); when it fails with a
retryable error, the retryer is built and its first attempt block re-raises that failure.

:class:`Attempt` (per attempt) and :class:`Chunks` (per stream chunk) keep the breaker and
contextvar bookkeeping.  The drivers in ``_shapes`` call, await and iterate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from django_arena_scale.requestid import request_id_var
from django_arena_scale.resilience import _events
from django_arena_scale.resilience._breaker import CircuitBreaker
from django_arena_scale.resilience._classify import Outcome, Verdict
from django_arena_scale.resilience._context import AttemptContext, Target, attempt_var
from django_arena_scale.resilience._errors import (
    DeadlineExceeded,
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
)
from django_arena_scale.resilience._events import BreakerEvent, emit
from django_arena_scale.resilience._policy import RetryPolicy, is_testing

if TYPE_CHECKING:
    from django_arena_scale.resilience._guard import LLMGuard

__all__ = ["REQUEST_ID_HEADER", "Attempt", "Chunks", "DeadlineStop", "HintOrBackoff", "Run"]

#: The header the guard adds to the ``headers_kwarg`` mapping of each attempt.
REQUEST_ID_HEADER = "X-Request-ID"


class Attempt:
    """One attempt to make and, as a context manager, its bookkeeping.

    Entering admits it (or raises ProviderUnavailable) and sets the attempt contextvar;
    leaving resets that and records the outcome on the breaker: the error's verdict, or
    success (left to the stream's end when ``open_stream`` is set inside the block).
    """

    __slots__ = (
        "breaker",
        "call_kwargs",
        "fn",
        "kwargs",
        "number",
        "open_stream",
        "run",
        "target",
        "ticket",
        "timeout",
        "token",
    )

    def __init__(
        self,
        run: Run,
        target: Target,
        breaker: CircuitBreaker,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        number: int = 1,
    ) -> None:
        self.run = run
        self.target = target
        self.breaker = breaker
        self.fn = fn
        self.kwargs = kwargs
        self.number = number
        self.open_stream = False

    def again(self, number: int) -> Attempt:
        """Attempt ``number`` on the same target."""
        return Attempt(self.run, self.target, self.breaker, self.fn, self.kwargs, number)

    def __enter__(self) -> Attempt:
        run = self.run
        self.ticket = self.breaker.admit()
        run.attempts += 1
        self.timeout = timeout = run.policy.attempt_timeout_for(run.deadline_at - run.guard.clock())
        guard = run.guard
        name = guard.timeout_kwarg
        self.call_kwargs = self.kwargs if name is None else {**self.kwargs, name: timeout}
        request_id = request_id_var.get()
        headers = guard.headers_kwarg
        if headers is not None and request_id is not None:
            given = self.call_kwargs.get(headers) or {}
            self.call_kwargs = {
                **self.call_kwargs,
                headers: {**given, REQUEST_ID_HEADER: request_id},
            }
        ctx = AttemptContext(self.target, self.number, timeout, run.deadline_at, request_id)
        self.token = attempt_var.set(ctx)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        ticket = self.ticket
        if exc is not None:
            try:
                verdict = self.run.guard.classifier.classify(exc)
                self.run.note(exc, verdict)
                ticket.breaker.record(ticket, verdict.outcome, verdict.reason)
            finally:
                attempt_var.reset(self.token)
            return
        attempt_var.reset(self.token)
        if not self.open_stream:
            ticket.breaker.record(ticket, Outcome.SUCCESS)


class DeadlineStop(stop_base):
    """Stop when the upcoming wait plus ``min_attempt_time`` does not fit in the time left.

    tenacity's ``stop_before_delay``, measured on the guard's clock against the deadline of
    the whole call (which the fallback chain shares) instead of from the retryer's start.
    """

    def __init__(self, run: Run) -> None:
        self.run = run

    def __call__(self, retry_state: RetryCallState) -> bool:
        run = self.run
        if run.time_left() < retry_state.upcoming_sleep + run.policy.min_attempt_time:
            run.deadline_hit = True
            return True
        return False


class HintOrBackoff(wait_base):
    """Wait ``max(server hint capped at max_retry_after, full-jitter backoff)``; 0 in test mode.

    The hint is the ``retry_after`` of the classifier's verdict on the failed attempt.
    """

    def __init__(self, run: Run) -> None:
        self.run = run

    def __call__(self, retry_state: RetryCallState) -> float:
        if is_testing():
            return 0.0
        run = self.run
        verdict = run.last_verdict
        hint = verdict.retry_after if verdict is not None else None
        return run.policy.wait(retry_state.attempt_number, hint, run.guard.random())


class Run:
    """Per-call state and decisions: deadline, fallback chain, last error, the retryer's setup.

    Shared by the four call shapes; no I/O here (the drivers in ``_shapes`` call and await).
    """

    __slots__ = (
        "attempts",
        "deadline_at",
        "deadline_hit",
        "func",
        "guard",
        "index",
        "kwargs",
        "last_exc",
        "last_verdict",
        "policy",
        "unavailable",
    )

    def __init__(
        self,
        guard: LLMGuard,
        policy: RetryPolicy,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.guard = guard
        self.policy = policy
        self.func = func
        self.kwargs = kwargs
        self.deadline_at = guard.clock() + policy.deadline
        self.attempts = 0
        self.index = 0  # position of the current target in guard.targets
        self.deadline_hit = False
        self.last_exc: BaseException | None = None
        self.last_verdict: Verdict | None = None
        self.unavailable: ProviderUnavailable | None = None

    def time_left(self) -> float:
        return self.deadline_at - self.guard.clock()

    def first_attempt(self, target: Target) -> Attempt:
        """Move on to ``target`` (per-target decisions start afresh): its first attempt."""
        self.deadline_hit = False
        kwargs = {**self.kwargs, **target.kwargs} if target.kwargs else self.kwargs
        breaker = self.guard.breaker(target)
        return Attempt(self, target, breaker, target.call or self.func, kwargs)

    def note(self, exc: BaseException, verdict: Verdict) -> None:
        self.last_exc = exc
        self.last_verdict = verdict

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` (an attempt's error) is worth another attempt on the same target."""
        verdict = self.last_verdict
        return exc is self.last_exc and verdict is not None and verdict.outcome is Outcome.RETRY

    def target_failed(self, exc: BaseException) -> bool:
        """Whether ``exc`` (an attempt's error) counts against the target: a provider failure."""
        verdict = self.last_verdict
        return exc is self.last_exc and verdict is not None and verdict.outcome.is_failure

    def moves_on(self, exc: BaseException) -> bool:
        """Whether the call goes on after ``exc`` (next target) instead of raising it."""
        return isinstance(exc, ProviderUnavailable) or self.target_failed(exc)

    def retrying(self, breaker: CircuitBreaker) -> dict[str, Any]:
        """Keyword arguments of a fresh tenacity retryer for one target, less ``sleep``."""

        def before_sleep(state: RetryCallState) -> None:
            breaker.counters.add("retries")
            verdict = self.last_verdict
            emit(
                BreakerEvent(
                    "retry",
                    breaker.name,
                    attempt=state.attempt_number,
                    wait=state.upcoming_sleep,
                    reason=verdict.reason if verdict else None,
                )
            )

        return {
            "retry": retry_if_exception(self.retryable),
            "stop": stop_after_attempt(self.policy.max_attempts) | DeadlineStop(self),
            "wait": HintOrBackoff(self),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def next_target(self, failure: BaseException) -> Attempt:
        """The next target's first attempt after the current one gave up with ``failure``.

        Counts the fallback on the target left behind.  Raises the call's final error when
        the chain is used up or too little time is left for another attempt.
        """
        if isinstance(failure, ProviderUnavailable):
            current = self.unavailable
            if current is None or failure.retry_after < current.retry_after:
                self.unavailable = failure
        targets = self.guard.targets
        self.index += 1
        if self.index < len(targets):
            if self.time_left() >= self.policy.min_attempt_time:
                previous, target = targets[self.index - 1], targets[self.index]
                self.guard.breaker(previous).counters.add("fallbacks")
                emit(BreakerEvent("fallback", previous.name, target=target.name))
                return self.first_attempt(target)
            self.deadline_hit = True
        raise self.final_error() from self.last_exc

    def final_error(self) -> Exception:
        provider = self.guard.primary.name
        if self.attempts == 0 and self.unavailable is not None:
            return self.unavailable
        if self.deadline_hit or self.time_left() <= 0:
            return DeadlineExceeded(provider, self.attempts, self.last_exc, self.policy.deadline)
        return RetriesExhausted(provider, self.attempts, self.last_exc)


class Chunks:
    """A stream's bookkeeping after its first chunk, shared by sync and async streams.

    Used as ``with chunks:`` around the fetch of each further chunk: sets the attempt
    contextvar, notes that the stream ran out (``ended``) and turns a mid-stream error into
    StreamInterrupted (a neutral one passes through).  ``record()``, once the stream is done,
    counts it against the breaker: success if it ran out, the error's verdict if one cut it,
    neutral if the consumer stopped early.
    """

    __slots__ = (
        "classifier",
        "count",
        "ctx",
        "end",
        "ended",
        "outcome",
        "reason",
        "sent",
        "ticket",
        "token",
    )

    def __init__(self, attempt: Attempt, end: type[Exception]) -> None:
        run = attempt.run
        idle = run.policy.idle_timeout
        timeout = idle if idle is not None else run.policy.deadline
        self.ctx = AttemptContext(
            attempt.target, attempt.number, timeout, run.deadline_at, request_id_var.get()
        )
        self.classifier = run.guard.classifier
        self.ticket = attempt.ticket
        self.end = end
        self.count = 0  # chunks passed on to the consumer
        self.sent = 1  # chunks yielded to the consumer (the first one already was)
        self.ended = False
        self.outcome = Outcome.NEUTRAL
        self.reason = ""

    def __enter__(self) -> AttemptContext:
        self.count += 1  # entered once the previous chunk was taken
        self.token = attempt_var.set(self.ctx)
        return self.ctx

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        attempt_var.reset(self.token)
        if exc is None:
            return False
        if isinstance(exc, self.end):
            self.ended = True
            self.outcome = Outcome.SUCCESS
            return True
        verdict = self.classifier.classify(exc)
        self.outcome, self.reason = verdict.outcome, verdict.reason
        if verdict.outcome is Outcome.NEUTRAL:
            return False
        raise StreamInterrupted(self.ctx.target.name, self.count, exc) from exc

    def record(self) -> None:
        self.ticket.breaker.record(self.ticket, self.outcome, self.reason)
        if _events.observing:
            name = self.ticket.breaker.name
            emit(BreakerEvent("stream_end", name, value=float(self.sent)))
