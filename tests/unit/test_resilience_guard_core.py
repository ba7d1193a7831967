"""The guard's shared decision core, seen from outside: paths the sync and async drivers share."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import tenacity

from django_arena_scale.resilience import (
    BreakerEvent,
    _shapes,
    add_listener,
    llm_call,
    remove_listener,
)
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import FakeClock, isolated_registry
from tests.unit.test_resilience_guard import Script, Status, clock, guard

__all__ = ["clock"]  # re-exported fixture (shared with the guard's own tests), not a redefinition


def test_guard_stop_iteration_passes_through(clock: FakeClock) -> None:
    """StopIteration raised by a guarded function reaches the caller as itself."""
    with pytest.raises(StopIteration):
        guard(clock, fallbacks=["q"])(Script(StopIteration("done")))()


def test_guard_rejected_on_retry_ends_call(clock: FakeClock) -> None:
    """A rejected error on a retry ends the call: no fallback, no event after it."""
    events: list[BreakerEvent] = []
    add_listener(events.append)
    try:
        script = Script(Status(503), Status(422))
        with pytest.raises(Status) as info:
            guard(clock, max_attempts=3, deadline=100, fallbacks=["q"])(script)()
        gc.collect()  # the retry plan left behind must not act when it is collected
    finally:
        remove_listener(events.append)
    assert info.value.status_code == 422
    assert script.targets == ["p", "p"]
    assert [e.kind for e in events if e.kind in ("retry", "fallback")] == ["retry"]


def test_guard_breaker_open_before_retry_falls_back(clock: FakeClock) -> None:
    """A breaker that opens on the first failure sends the retry to the fallback."""
    script = Script(Status(503))
    g = guard(clock, max_attempts=3, deadline=100, failure_threshold=1, fallbacks=["q"])
    assert g(script)() == "ok"
    assert script.targets == ["p", "q"]
    assert get_breaker("p").counters.fallbacks == 1


async def test_guard_async_breaker_open_before_retry_falls_back() -> None:
    """Async: a breaker that opens on the first failure sends the retry to the fallback."""
    clock = FakeClock()
    with isolated_registry(clock):
        script = Script(Status(503))

        @llm_call(
            "p",
            fallbacks=["q"],
            max_attempts=3,
            deadline=100,
            failure_threshold=1,
            clock=clock,
            async_sleep=clock.async_sleep,
            random=lambda: 0.5,
        )
        async def fn() -> str:
            return str(script())

        assert await fn() == "ok"
    assert script.targets == ["p", "q"]


async def test_guard_async_cancel_during_backoff_ends_call() -> None:
    """Cancelled while sleeping before a retry: the caller sees CancelledError, no fallback."""
    clock = FakeClock()
    with isolated_registry(clock):
        script = Script(Status(503))
        sleeping = asyncio.Event()

        async def sleep(seconds: float) -> None:
            sleeping.set()
            await asyncio.sleep(3600)

        @llm_call(
            "p", fallbacks=["q"], max_attempts=3, deadline=100, clock=clock, async_sleep=sleep
        )
        async def fn() -> str:
            return str(script())

        task = asyncio.ensure_future(fn())
        await sleeping.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert get_breaker("p").counters.fallbacks == 0
    assert script.targets == ["p"]


def test_guard_retryer_only_after_retryable_failure(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call whose first attempt succeeds builds no tenacity retryer; each retrying call one."""
    built: list[tenacity.Retrying] = []

    class Counting(tenacity.Retrying):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_shapes, "Retrying", Counting)
    script = Script(Status(503), Status(503))
    g = guard(clock, max_attempts=3, deadline=100)(script)
    assert g() == "ok"  # two retries, one retryer (it sleeps through the guard's sleep)
    assert (len(built), clock.sleeps) == (1, [0.25, 0.5])
    assert g() == "ok"
    assert len(built) == 1
    script.errors.append(Status(429))
    assert g() == "ok"
    assert len(built) == 2
    assert built[0] is not built[1]


async def test_guard_async_retryer_only_after_retryable_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Async calls retry through a fresh AsyncRetrying, built only after a failure."""
    built: list[tenacity.AsyncRetrying] = []

    class Counting(tenacity.AsyncRetrying):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_shapes, "AsyncRetrying", Counting)
    clock = FakeClock()
    with isolated_registry(clock):
        script = Script(Status(503))

        @llm_call("p", clock=clock, async_sleep=clock.async_sleep, random=lambda: 0.5)
        async def fn() -> str:
            return str(script())

        assert await fn() == "ok"
        assert await fn() == "ok"
    assert (len(built), clock.sleeps, script.calls) == (1, [0.25], 3)
