"""The LLM call guard: deadline, fallback chain, retries, breaker gate and stream handling.

How the wrapped function learns its per-attempt timeout: read
:func:`current_attempt_timeout` (a contextvar set around every attempt, and around every
``next()`` of a stream) and hand it to the SDK, e.g. ``client.chat.completions.create(...,
timeout=current_attempt_timeout())``; or pass ``timeout_kwarg="timeout"`` to have the guard
inject it as a keyword argument.  The value is ``attempt_timeout`` shrunk to the time left
before the deadline.  Async attempts are also cut by the guard itself at that timeout.

The first attempt runs without building a tenacity object (the happy path stays cheap); if it
fails with a retryable error, a fresh ``tenacity.Retrying`` is built for this call only and
the failure is replayed as its first attempt, so tenacity decides stop and wait from there.

Layout: the decisions (what a failure means, retry or not, which target next, which error
ends the call) are written once, without I/O: ``_Run`` and the plan generator
``LLMGuard._plan``, which yields the next ``_Attempt`` to make.  The drivers ``_drive_sync``
and ``_drive_async`` make those attempts and sleep between them; ``_Attempt`` (per attempt)
and ``_Chunks`` (per stream chunk) keep the breaker and contextvar bookkeeping, so only
calling, awaiting, sleeping and iterating are written once per sync/async shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import random as _random
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from tenacity import RetryCallState, Retrying, retry_if_exception

from django_arena_scale.resilience._breaker import CircuitBreaker, Ticket
from django_arena_scale.resilience._classify import Classifier, Outcome, Verdict, default_classifier
from django_arena_scale.resilience._errors import (
    AttemptTimeout,
    DeadlineExceeded,
    FirstChunkTimeout,
    GuardConfigError,
    IdleTimeout,
    LLMTimeout,
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
)
from django_arena_scale.resilience._events import BreakerEvent, emit
from django_arena_scale.resilience._policy import (
    PROVIDER_OPTIONS,
    BreakerOptions,
    RetryPolicy,
    effective_policy,
    is_testing,
    split_options,
)
from django_arena_scale.resilience._registry import registry

__all__ = [
    "AttemptContext",
    "LLMGuard",
    "Target",
    "current_attempt",
    "current_attempt_timeout",
    "current_target",
    "llm_call",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_MISSING = object()


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

    __slots__ = ("attempt", "deadline_at", "target", "timeout")

    def __init__(self, target: Target, attempt: int, timeout: float, deadline_at: float) -> None:
        self.target = target
        self.attempt = attempt
        self.timeout = timeout
        self.deadline_at = deadline_at

    def __repr__(self) -> str:
        return (
            f"<AttemptContext {self.target.name!r} attempt={self.attempt} "
            f"timeout={self.timeout:.3g}>"
        )


_attempt_var: contextvars.ContextVar[AttemptContext | None] = contextvars.ContextVar(
    "arena_scale_llm_attempt", default=None
)


def current_attempt() -> AttemptContext | None:
    """The running attempt's context, or None outside a guarded call."""
    return _attempt_var.get()


def current_attempt_timeout() -> float | None:
    """Seconds this attempt may take (shrinks with the deadline); None outside a guard."""
    ctx = _attempt_var.get()
    return None if ctx is None else ctx.timeout


def current_target() -> Target | None:
    """The fallback-chain target this attempt calls; None outside a guard."""
    ctx = _attempt_var.get()
    return None if ctx is None else ctx.target


class _TargetFailed(Exception):
    """Internal: the target used up its attempts on provider failures; try the next one."""


class _Attempt:
    """One attempt to make (what the plan yields) and, as a context manager, its bookkeeping.

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
        "wait",
    )

    def __init__(
        self,
        run: _Run,
        target: Target,
        breaker: CircuitBreaker,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        number: int = 1,
        wait: float = 0.0,
    ) -> None:
        self.run = run
        self.target = target
        self.breaker = breaker
        self.fn = fn
        self.kwargs = kwargs
        self.number = number
        self.wait = wait
        self.open_stream = False

    def again(self, number: int, wait: float) -> _Attempt:
        return _Attempt(self.run, self.target, self.breaker, self.fn, self.kwargs, number, wait)

    def __enter__(self) -> _Attempt:
        run = self.run
        self.ticket = self.breaker.admit()
        run.attempts += 1
        run.target_attempts = self.number
        self.timeout = timeout = run.policy.attempt_timeout_for(run.deadline_at - run.guard.clock())
        name = run.guard.timeout_kwarg
        self.call_kwargs = self.kwargs if name is None else {**self.kwargs, name: timeout}
        ctx = AttemptContext(self.target, self.number, timeout, run.deadline_at)
        self.token = _attempt_var.set(ctx)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        ticket = self.ticket
        if exc is not None:
            try:
                verdict = self.run.guard.classifier.classify(exc)
                self.run.note(exc, verdict)
                ticket.breaker.record(ticket, verdict.outcome, verdict.reason)
            finally:
                _attempt_var.reset(self.token)
            return
        _attempt_var.reset(self.token)
        if not self.open_stream:
            ticket.breaker.record(ticket, Outcome.SUCCESS)


class _Run:
    """Per-call state and decisions: deadline, attempt counts, last error, tenacity hooks.

    Shared by the four call shapes; no I/O here (the drivers in LLMGuard call, await, sleep).
    """

    __slots__ = (
        "attempts",
        "deadline_at",
        "deadline_hit",
        "func",
        "guard",
        "kwargs",
        "last_exc",
        "last_verdict",
        "plan",
        "policy",
        "target_attempts",
        "waits",
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
        self.target_attempts = 0
        self.deadline_hit = False
        self.last_exc: BaseException | None = None
        self.last_verdict: Verdict | None = None
        self.waits: dict[int, float] = {}
        self.plan: Generator[_Attempt, BaseException, None] | None = None

    def time_left(self) -> float:
        return self.deadline_at - self.guard.clock()

    def first_attempt(self, target: Target) -> _Attempt:
        """Move on to ``target`` (per-target counts start afresh): its first attempt."""
        self.target_attempts = 0
        self.deadline_hit = False
        self.waits = {}
        kwargs = {**self.kwargs, **target.kwargs} if target.kwargs else self.kwargs
        breaker = self.guard.breaker(target)
        return _Attempt(self, target, breaker, target.call or self.func, kwargs)

    def note(self, exc: BaseException, verdict: Verdict) -> None:
        self.last_exc = exc
        self.last_verdict = verdict

    def retryable(self, exc: BaseException) -> bool:
        verdict = self.last_verdict
        return exc is self.last_exc and verdict is not None and verdict.outcome is Outcome.RETRY

    def target_failed(self, exc: BaseException) -> bool:
        """Whether ``exc`` (an attempt's error) counts against the target: a provider failure."""
        verdict = self.last_verdict
        return exc is self.last_exc and verdict is not None and verdict.outcome.is_failure

    def moves_on(self, exc: BaseException) -> bool:
        """Whether the call goes on after ``exc`` (retry or next target) instead of raising it."""
        return isinstance(exc, ProviderUnavailable) or self.target_failed(exc)

    def after(self, attempt: _Attempt, failure: BaseException) -> _Attempt:
        """The attempt to make after ``attempt`` failed with ``failure`` (one that moves the
        call on); raises the call's final error when no attempt is left."""
        if self.plan is None:
            # Built at the first failure: the happy path never pays for the plan.
            self.plan = self.guard._plan(self, attempt, failure)
            return next(self.plan)
        return self.plan.send(failure)

    def wait_for(self, attempt: int) -> float:
        if attempt not in self.waits:
            if is_testing():
                self.waits[attempt] = 0.0
            else:
                hint = self.last_verdict.retry_after if self.last_verdict else None
                self.waits[attempt] = self.policy.wait(attempt, hint, self.guard.random())
        return self.waits[attempt]

    def stop(self, state: RetryCallState) -> bool:
        attempt = state.attempt_number
        if attempt >= self.policy.max_attempts:
            return True
        if self.time_left() < self.wait_for(attempt) + self.policy.min_attempt_time:
            self.deadline_hit = True
            return True
        return False

    def wait(self, state: RetryCallState) -> float:
        return self.wait_for(state.attempt_number)

    def final_error(self, unavailable: ProviderUnavailable | None) -> Exception:
        provider = self.guard.primary.name
        if self.attempts == 0 and unavailable is not None:
            return unavailable
        if self.deadline_hit or self.time_left() <= 0:
            return DeadlineExceeded(provider, self.attempts, self.last_exc, self.policy.deadline)
        return RetriesExhausted(provider, self.attempts, self.last_exc)


class _Chunks:
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
        "ticket",
        "token",
    )

    def __init__(self, run: _Run, ticket: Ticket, end: type[Exception]) -> None:
        guard = run.guard
        idle = run.policy.idle_timeout
        timeout = idle if idle is not None else run.policy.deadline
        target = current_ticket_target(guard, ticket)
        self.ctx = AttemptContext(target, run.target_attempts, timeout, run.deadline_at)
        self.classifier = guard.classifier
        self.ticket = ticket
        self.end = end
        self.count = 0  # chunks passed on to the consumer
        self.ended = False
        self.outcome = Outcome.NEUTRAL
        self.reason = ""

    def __enter__(self) -> AttemptContext:
        self.count += 1  # entered once the previous chunk was taken
        self.token = _attempt_var.set(self.ctx)
        return self.ctx

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        _attempt_var.reset(self.token)
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


def _earliest(current: ProviderUnavailable | None, new: ProviderUnavailable) -> ProviderUnavailable:
    if current is None or new.retry_after < current.retry_after:
        return new
    return current


class LLMGuard:
    """A configured guard; decorate a function, generator, coroutine or async generator."""

    def __init__(
        self,
        provider: str,
        *,
        key: str | None = None,
        fallbacks: Sequence[Target | str] = (),
        classifier: Classifier | None = None,
        timeout_kwarg: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        async_sleep: Callable[[float], Awaitable[None]] | None = None,
        random: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        self.primary = Target.parse(Target(provider, key))
        if isinstance(fallbacks, (str, Target)) or not isinstance(fallbacks, Sequence):
            msg = f"fallbacks should be a list of targets, got {fallbacks!r}."
            raise GuardConfigError(msg)
        self.targets: tuple[Target, ...] = (
            self.primary,
            *(Target.parse(f) for f in fallbacks),
        )
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            msg = f"Each target may appear once in a fallback chain, got {names!r}."
            raise GuardConfigError(msg)
        unknown = sorted(set(options) - PROVIDER_OPTIONS)
        if unknown:
            msg = (
                f"llm_call({provider!r}) got unknown option(s) "
                f"{', '.join(repr(u) for u in unknown)}; expected some of "
                f"{', '.join(sorted(PROVIDER_OPTIONS))}."
            )
            raise GuardConfigError(msg)
        if classifier is not None and not isinstance(classifier, Classifier):
            msg = f"classifier should be a Classifier, got {classifier!r}."
            raise GuardConfigError(msg)
        if timeout_kwarg is not None and not (
            isinstance(timeout_kwarg, str) and timeout_kwarg.isidentifier()
        ):
            msg = f"timeout_kwarg should be a keyword name, got {timeout_kwarg!r}."
            raise GuardConfigError(msg)
        for name, value in (("clock", clock), ("sleep", sleep), ("async_sleep", async_sleep)):
            if value is not None and not callable(value):
                msg = f"{name} should be callable, got {value!r}."
                raise GuardConfigError(msg)
        self.classifier = classifier or default_classifier
        self.timeout_kwarg = timeout_kwarg
        self.clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._async_sleep = async_sleep or asyncio.sleep
        self.random = random or _random.random
        self.options = dict(options)
        # Validate now (decoration time): settings of every target, merged with our options.
        primary_options = {**registry.provider_options(self.primary.name), **options}
        self.policy, _ = split_options(primary_options, owner=f"llm_call({provider!r})")
        self._breakers: dict[str, CircuitBreaker] = {}
        self._generation = -1
        self._breaker_options: dict[str, BreakerOptions] = {}
        for target in self.targets:
            merged = {**registry.provider_options(target.name), **options}
            owner = f"LLM provider {target.name!r}"
            self._breaker_options[target.name] = split_options(merged, owner=owner)[1]
        # Create the breakers now so /status/ lists every guarded provider before its first call.
        for target in self.targets:
            self.breaker(target)

    def __repr__(self) -> str:
        chain = " -> ".join(t.name for t in self.targets)
        return (
            f"<LLMGuard {chain} deadline={self.policy.deadline:g}s "
            f"attempts={self.policy.max_attempts}>"
        )

    def breaker(self, target: Target) -> CircuitBreaker:
        """The breaker of ``target`` (cached until the registry is reset or reconfigured)."""
        if self._generation != registry.generation:
            self._breakers = {}
            self._generation = registry.generation
        found = self._breakers.get(target.name)
        if found is None:
            found = registry.breaker(target.name, self._breaker_options[target.name])
            self._breakers[target.name] = found
        return found

    # --- decoration --------------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        if not callable(func):
            msg = f"llm_call() decorates a callable, got {func!r}."
            raise GuardConfigError(msg)
        if self.timeout_kwarg is not None:
            self._check_accepts(func, self.timeout_kwarg)
        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(func):

            def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                return self._stream_async(func, args, kwargs)

        elif inspect.iscoroutinefunction(func):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self._run_async(func, args, kwargs)

        elif inspect.isgeneratorfunction(func):

            def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return self._stream_sync(func, args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self._run_sync(func, args, kwargs)

        functools.update_wrapper(wrapper, func)
        wrapper.llm_guard = self  # type: ignore[union-attr]
        return cast(F, wrapper)

    @staticmethod
    def _check_accepts(func: Callable[..., Any], name: str) -> None:
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # builtins without a signature: trust the caller
            return
        if name in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        msg = f"timeout_kwarg={name!r} but {func.__qualname__}() takes no {name!r} argument."
        raise GuardConfigError(msg)

    def call(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` (a plain function) through the guard."""
        return cast(T, self._run_sync(func, args, kwargs))

    async def acall(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args, **kwargs)`` (a coroutine function) through the guard."""
        return cast(T, await self._run_async(func, args, kwargs))

    # --- decisions (sans IO): what follows a failed attempt -----------------------------------

    def _plan(
        self, run: _Run, attempt: _Attempt, failure: BaseException
    ) -> Generator[_Attempt, BaseException, None]:
        """Retries, then fallbacks, after ``attempt`` failed with ``failure``; see ``_Run.after``.

        Yields the next attempt to make; the driver makes it and sends back its failure (a
        success or an error that does not move the call on ends the call in the driver).
        Raises the call's final error when the chain is used up or the deadline is near.
        """
        unavailable: ProviderUnavailable | None = None
        for index, target in enumerate(self.targets):
            if index:
                if not self._next_target(run, index):
                    break
                attempt = run.first_attempt(target)
                failure = yield attempt
            try:
                yield from self._retries(run, attempt, failure)
            except ProviderUnavailable as exc:
                unavailable = _earliest(unavailable, exc)
            except _TargetFailed:
                pass
        raise run.final_error(unavailable) from run.last_exc

    def _retries(
        self, run: _Run, failed: _Attempt, failure: BaseException
    ) -> Generator[_Attempt, BaseException, None]:
        """Retries on ``failed``'s target; raise _TargetFailed or ProviderUnavailable when done."""
        if isinstance(failure, ProviderUnavailable):
            raise failure
        if not run.retryable(failure):
            raise _TargetFailed from failure
        # tenacity "sleeps" by handing us the wait: the driver sleeps it before the next attempt.
        waits: list[float] = []
        retrying = Retrying(sleep=waits.append, **self._retrying_kwargs(run, failed.breaker))
        try:
            for managed in retrying:
                number = managed.retry_state.attempt_number
                if number > 1:
                    failure = yield failed.again(number, waits.pop())
                with managed:
                    # The failure (the first one replayed) tells tenacity to stop or wait.
                    raise failure
        except ProviderUnavailable:
            raise
        except BaseException as exc:
            self._target_outcome(run, exc)

    def _retrying_kwargs(self, run: _Run, breaker: CircuitBreaker) -> dict[str, Any]:
        def before_sleep(state: RetryCallState) -> None:
            breaker.counters.add("retries")
            verdict = run.last_verdict
            emit(
                BreakerEvent(
                    "retry",
                    breaker.name,
                    attempt=state.attempt_number,
                    wait=run.wait_for(state.attempt_number),
                    reason=verdict.reason if verdict else None,
                )
            )

        return {
            "stop": run.stop,
            "wait": run.wait,
            "retry": retry_if_exception(run.retryable),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def _next_target(self, run: _Run, index: int) -> bool:
        """Before target ``index`` > 0: count the fallback; False when no time is left."""
        if run.time_left() < run.policy.min_attempt_time:
            run.deadline_hit = True
            return False
        previous = self.targets[index - 1]
        self.breaker(previous).counters.add("fallbacks")
        emit(BreakerEvent("fallback", previous.name, target=self.targets[index].name))
        return True

    def _target_outcome(self, run: _Run, exc: BaseException) -> None:
        """Re-raise ``exc`` unless it means "this target failed": then raise _TargetFailed."""
        if run.target_failed(exc):
            raise _TargetFailed from exc
        raise exc

    # --- drivers: make the attempts the plan asks for, sleep between them ---------------------

    def _sync_sleep(self, seconds: float) -> None:
        if not is_testing() and seconds > 0:
            self._sleep(seconds)

    async def _async_sleep_fn(self, seconds: float) -> None:
        if not is_testing() and seconds > 0:
            await self._async_sleep(seconds)

    def _drive_sync(
        self, run: _Run, make: Callable[[_Attempt, tuple[Any, ...]], T], args: tuple[Any, ...]
    ) -> T:
        """Make the attempts the plan asks for until one succeeds or an error ends the call."""
        attempt = run.first_attempt(self.primary)
        while True:
            try:
                return make(attempt, args)
            except BaseException as exc:
                if not run.moves_on(exc):
                    raise
                # Handed on outside the except block: the plan's own errors get no __context__.
                failure = exc
            attempt = run.after(attempt, failure)
            self._sync_sleep(attempt.wait)

    async def _drive_async(
        self,
        run: _Run,
        make: Callable[[_Attempt, tuple[Any, ...]], Awaitable[T]],
        args: tuple[Any, ...],
    ) -> T:
        """``_drive_sync``, awaiting the attempts and the sleeps."""
        attempt = run.first_attempt(self.primary)
        while True:
            try:
                return await make(attempt, args)
            except BaseException as exc:
                if not run.moves_on(exc):
                    raise
                failure = exc
            attempt = run.after(attempt, failure)
            await self._async_sleep_fn(attempt.wait)

    # --- functions -------------------------------------------------------------------------

    def _run_sync(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        run = _Run(self, effective_policy(self.policy), func, kwargs)
        return self._drive_sync(run, self._attempt_sync, args)

    def _attempt_sync(self, attempt: _Attempt, args: tuple[Any, ...]) -> Any:
        with attempt:
            return attempt.fn(*args, **attempt.call_kwargs)

    async def _run_async(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        run = _Run(self, effective_policy(self.policy), func, kwargs)
        return await self._drive_async(run, self._attempt_async, args)

    async def _attempt_async(self, attempt: _Attempt, args: tuple[Any, ...]) -> Any:
        with attempt:
            call = attempt.fn(*args, **attempt.call_kwargs)
            return await _with_timeout(call, attempt.timeout, AttemptTimeout, attempt.target)

    # --- streams ---------------------------------------------------------------------------

    def _open_attempt_sync(
        self, attempt: _Attempt, args: tuple[Any, ...]
    ) -> tuple[Iterator[Any], Any, Ticket]:
        with attempt:
            started = self.clock()
            gen = iter(attempt.fn(*args, **attempt.call_kwargs))
            try:
                first = next(gen, _MISSING)
                limit = _first_chunk_limit(attempt.run.policy, attempt.timeout)
                # A sync generator cannot be interrupted; a late first chunk is still a timeout.
                if first is not _MISSING and self.clock() - started > limit:
                    raise FirstChunkTimeout(attempt.target.name, limit)
            except BaseException:
                _close_quietly(gen)
                raise
            attempt.open_stream = first is not _MISSING
        return gen, first, attempt.ticket

    def _stream_sync(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        run = _Run(self, effective_policy(self.policy), func, kwargs)
        gen, first, ticket = self._drive_sync(run, self._open_attempt_sync, args)
        if first is _MISSING:
            return
        chunks = _Chunks(run, ticket, StopIteration)
        idle = run.policy.idle_timeout
        clock = self.clock
        try:
            yield first
            while True:
                with chunks as ctx:
                    started = clock()
                    chunk = next(gen)
                    if idle is not None and clock() - started > idle:
                        # Sync iteration cannot be interrupted: a late chunk is detected on arrival.
                        raise IdleTimeout(ctx.target.name, idle)
                if chunks.ended:
                    break
                yield chunk
        finally:
            chunks.record()
            _close_quietly(gen)

    async def _open_attempt_async(
        self, attempt: _Attempt, args: tuple[Any, ...]
    ) -> tuple[AsyncIterator[Any], Any, Ticket]:
        with attempt:
            gen = attempt.fn(*args, **attempt.call_kwargs).__aiter__()
            limit = _first_chunk_limit(attempt.run.policy, attempt.timeout)
            try:
                first = await _with_timeout(
                    gen.__anext__(), limit, FirstChunkTimeout, attempt.target
                )
            except StopAsyncIteration:
                first = _MISSING
            except BaseException:
                await _aclose_quietly(gen)
                raise
            attempt.open_stream = first is not _MISSING
        return gen, first, attempt.ticket

    async def _stream_async(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        run = _Run(self, effective_policy(self.policy), func, kwargs)
        gen, first, ticket = await self._drive_async(run, self._open_attempt_async, args)
        if first is _MISSING:
            return
        chunks = _Chunks(run, ticket, StopAsyncIteration)
        idle = run.policy.idle_timeout
        try:
            yield first
            while True:
                with chunks as ctx:
                    if idle is None:
                        chunk = await gen.__anext__()
                    else:
                        chunk = await _with_timeout(gen.__anext__(), idle, IdleTimeout, ctx.target)
                if chunks.ended:
                    break
                yield chunk
        finally:
            chunks.record()
            await _aclose_quietly(gen)


def current_ticket_target(guard: LLMGuard, ticket: Ticket) -> Target:
    for target in guard.targets:
        if target.name == ticket.breaker.name:
            return target
    return guard.primary  # pragma: no cover - every ticket comes from one of our targets


def _first_chunk_limit(policy: RetryPolicy, timeout: float) -> float:
    if policy.first_chunk_timeout is None:
        return timeout
    return min(policy.first_chunk_timeout, timeout)


def _close_quietly(gen: Iterator[Any]) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        # The stream already ended or failed; closing it must not mask that.
        with contextlib.suppress(Exception):
            close()


async def _aclose_quietly(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class _Timer:
    """Cancels ``task`` when it fires; remembers that it did."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False

    def fire(self) -> None:
        self.expired = True
        self.task.cancel()


# Timer callbacks need no context; passing one avoids a copy_context() per call (the largest
# cost of asyncio.timeout / wait_for on this hot path).
_TIMER_CONTEXT = contextvars.Context()
_HAS_UNCANCEL = sys.version_info >= (3, 11)


async def _with_timeout(
    awaitable: Awaitable[T], seconds: float, error: type[LLMTimeout], target: Target
) -> T:
    """Await ``awaitable`` for at most ``seconds``; raise ``error`` if our timer cut it."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - awaited outside a task (exotic event loops)
        return await asyncio.wait_for(awaitable, seconds)
    loop = asyncio.get_running_loop()
    timer = _Timer(task)
    handle = loop.call_at(loop.time() + seconds, timer.fire, context=_TIMER_CONTEXT)
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        if not timer.expired:
            raise
        # Our own cancellation: undo it, unless someone else cancelled the task too.
        if _HAS_UNCANCEL and task.uncancel() > 0:  # type: ignore[attr-defined,unused-ignore]
            raise
        raise error(target.name, seconds) from exc
    finally:
        handle.cancel()


def llm_call(
    provider: str,
    *,
    key: str | None = None,
    fallbacks: Sequence[Target | str] = (),
    classifier: Classifier | None = None,
    timeout_kwarg: str | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    async_sleep: Callable[[float], Awaitable[None]] | None = None,
    random: Callable[[], float] | None = None,
    **options: Any,
) -> LLMGuard:
    """Guard calls to ``provider``: ``@llm_call("openai", deadline=30, fallbacks=["azure"])``.

    Works on functions, coroutine functions, generator and async generator functions
    (streams).  A plain function that returns an SDK stream object is guarded as a plain call
    (until it returns); iterate the stream inside a generator function to get stream semantics.
    ``options`` are provider options (see ``PROVIDER_OPTIONS``) overriding
    ``ARENA_SCALE_LLM_PROVIDERS[provider]``; invalid ones raise :class:`GuardConfigError` here.
    ``clock``/``sleep``/``async_sleep``/``random`` are injectable for tests.
    """
    return LLMGuard(
        provider,
        key=key,
        fallbacks=fallbacks,
        classifier=classifier,
        timeout_kwarg=timeout_kwarg,
        clock=clock,
        sleep=sleep,
        async_sleep=async_sleep,
        random=random,
        **options,
    )
