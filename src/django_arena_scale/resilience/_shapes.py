"""The four call shapes (function, coroutine, generator, async generator) and their drivers.

A driver makes the attempts of one call along the fallback chain: the first attempt on a
target bare (the happy path builds no retryer), the retries inside the attempt blocks of a
tenacity ``Retrying`` (sync) or ``AsyncRetrying`` (async), which decides, waits and sleeps.
Everything the drivers decide comes from ``_core.Run``; only calling, awaiting, sleeping and
iterating are written once per sync/async shape here.  A stream is retried only until its
first chunk: opening it and taking that chunk is the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, Retrying

from django_arena_scale.resilience import _events
from django_arena_scale.resilience._context import Target
from django_arena_scale.resilience._core import Attempt, Chunks, Run
from django_arena_scale.resilience._errors import (
    AttemptTimeout,
    FirstChunkTimeout,
    IdleTimeout,
    LLMTimeout,
)
from django_arena_scale.resilience._events import BreakerEvent, emit
from django_arena_scale.resilience._policy import RetryPolicy, effective_policy

if TYPE_CHECKING:
    from django_arena_scale.resilience._guard import LLMGuard

__all__ = ["run_async", "run_sync", "stream_async", "stream_sync"]

T = TypeVar("T")
_MISSING = object()


# --- drivers: make the attempts, retries through tenacity, fallbacks through Run -------------


def _drive_sync(
    run: Run, make: Callable[[Attempt, tuple[Any, ...]], T], args: tuple[Any, ...]
) -> T:
    """Make the call's attempts until one succeeds or an error ends the call."""
    attempt = run.first_attempt(run.guard.primary)
    while True:
        try:
            return _on_target_sync(run, attempt, make, args)
        except BaseException as exc:
            if not run.moves_on(exc):
                raise
            # Handed on outside the except block: the call's final error gets no __context__.
            failure = exc
        attempt = run.next_target(failure)


def _on_target_sync(
    run: Run, first: Attempt, make: Callable[[Attempt, tuple[Any, ...]], T], args: tuple[Any, ...]
) -> T:
    """Every attempt on ``first``'s target; raises the error that ends the target or the call."""
    try:
        return make(first, args)
    except BaseException as exc:
        if not run.retryable(exc):
            raise
        failure = exc
    for managed in Retrying(sleep=run.guard._sleep_between, **run.retrying(first.breaker)):
        ending: BaseException | None = None
        with managed:
            number = managed.retry_state.attempt_number
            if number == 1:
                raise failure  # the first attempt, made before this retryer existed
            try:
                return make(first.again(number), args)
            except BaseException as exc:
                if run.target_failed(exc):
                    raise  # a provider failure: tenacity retries it, or stops and re-raises it
                ending = exc
        # Anything else never enters tenacity (a StopIteration would come out of its
        # generator as RuntimeError): an open breaker or an error that ends the call.
        if ending is not None:
            raise ending
    raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover


async def _drive_async(
    run: Run, make: Callable[[Attempt, tuple[Any, ...]], Awaitable[T]], args: tuple[Any, ...]
) -> T:
    """``_drive_sync``, awaiting the attempts and the sleeps."""
    attempt = run.first_attempt(run.guard.primary)
    while True:
        try:
            return await _on_target_async(run, attempt, make, args)
        except BaseException as exc:
            if not run.moves_on(exc):
                raise
            failure = exc
        attempt = run.next_target(failure)


async def _on_target_async(
    run: Run,
    first: Attempt,
    make: Callable[[Attempt, tuple[Any, ...]], Awaitable[T]],
    args: tuple[Any, ...],
) -> T:
    """``_on_target_sync`` with ``AsyncRetrying``."""
    try:
        return await make(first, args)
    except BaseException as exc:
        if not run.retryable(exc):
            raise
        failure = exc
    retrying = AsyncRetrying(sleep=run.guard._async_sleep_between, **run.retrying(first.breaker))
    async for managed in retrying:
        ending: BaseException | None = None
        with managed:
            number = managed.retry_state.attempt_number
            if number == 1:
                raise failure
            try:
                return await make(first.again(number), args)
            except BaseException as exc:
                if run.target_failed(exc):
                    raise
                ending = exc  # not for tenacity (a StopAsyncIteration would end its loop)
        if ending is not None:
            raise ending
    raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover


# --- functions -------------------------------------------------------------------------------


def run_sync(
    guard: LLMGuard, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    run = Run(guard, effective_policy(guard.policy), func, kwargs)
    return _drive_sync(run, _call_sync, args)


def _call_sync(attempt: Attempt, args: tuple[Any, ...]) -> Any:
    with attempt:
        return attempt.fn(*args, **attempt.call_kwargs)


async def run_async(
    guard: LLMGuard, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    run = Run(guard, effective_policy(guard.policy), func, kwargs)
    return await _drive_async(run, _call_async, args)


async def _call_async(attempt: Attempt, args: tuple[Any, ...]) -> Any:
    with attempt:
        call = attempt.fn(*args, **attempt.call_kwargs)
        return await _with_timeout(call, attempt.timeout, AttemptTimeout, attempt.target)


# --- streams ---------------------------------------------------------------------------------


def _open_sync(attempt: Attempt, args: tuple[Any, ...]) -> tuple[Iterator[Any], Any, Attempt]:
    with attempt:
        clock = attempt.run.guard.clock
        started = clock()
        gen = iter(attempt.fn(*args, **attempt.call_kwargs))
        try:
            first = next(gen, _MISSING)
            limit = _first_chunk_limit(attempt.run.policy, attempt.timeout)
            # A sync generator cannot be interrupted; a late first chunk is still a timeout.
            elapsed = clock() - started
            if first is not _MISSING and elapsed > limit:
                raise FirstChunkTimeout(attempt.target.name, limit)
        except BaseException:
            _close_quietly(gen)
            raise
        attempt.open_stream = first is not _MISSING
        if attempt.open_stream and _events.observing:
            emit(BreakerEvent("first_chunk", attempt.breaker.name, value=elapsed))
    return gen, first, attempt


def stream_sync(
    guard: LLMGuard, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Iterator[Any]:
    run = Run(guard, effective_policy(guard.policy), func, kwargs)
    gen, first, attempt = _drive_sync(run, _open_sync, args)
    if first is _MISSING:
        return
    chunks = Chunks(attempt, StopIteration)
    idle = run.policy.idle_timeout
    clock = guard.clock
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
            chunks.sent += 1
            yield chunk
    finally:
        chunks.record()
        _close_quietly(gen)


async def _open_async(
    attempt: Attempt, args: tuple[Any, ...]
) -> tuple[AsyncIterator[Any], Any, Attempt]:
    with attempt:
        clock = attempt.run.guard.clock
        started = clock()
        gen = attempt.fn(*args, **attempt.call_kwargs).__aiter__()
        limit = _first_chunk_limit(attempt.run.policy, attempt.timeout)
        try:
            first = await _with_timeout(gen.__anext__(), limit, FirstChunkTimeout, attempt.target)
        except StopAsyncIteration:
            first = _MISSING
        except BaseException:
            await _aclose_quietly(gen)
            raise
        attempt.open_stream = first is not _MISSING
        if attempt.open_stream and _events.observing:
            emit(BreakerEvent("first_chunk", attempt.breaker.name, value=clock() - started))
    return gen, first, attempt


async def stream_async(
    guard: LLMGuard, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    run = Run(guard, effective_policy(guard.policy), func, kwargs)
    gen, first, attempt = await _drive_async(run, _open_async, args)
    if first is _MISSING:
        return
    chunks = Chunks(attempt, StopAsyncIteration)
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
            chunks.sent += 1
            yield chunk
    finally:
        chunks.record()
        await _aclose_quietly(gen)


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


# --- the async per-attempt timeout -----------------------------------------------------------


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
