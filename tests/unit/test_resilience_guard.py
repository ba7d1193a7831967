"""The llm_call guard on plain and async functions: retries, deadline, fallbacks, test mode."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import override_settings

from django_arena_scale.resilience import (
    AttemptTimeout,
    BreakerEvent,
    DeadlineExceeded,
    GuardConfigError,
    Outcome,
    ProviderUnavailable,
    RetriesExhausted,
    Target,
    add_listener,
    current_attempt_timeout,
    current_target,
    llm_call,
    llm_test_mode,
    remove_listener,
)
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import FakeClock, isolated_registry

URL = "https://provider.invalid/v1/chat/completions"


class Status(Exception):
    """A provider error duck-typed like the SDKs' (status_code + response headers)."""

    def __init__(self, code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"status {code}")
        self.status_code = code
        self.response = httpx.Response(code, headers=headers or {})


class Script:
    """Raise the scripted errors in order, then return ``result``."""

    def __init__(self, *errors: BaseException, result: Any = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0
        self.timeouts: list[float | None] = []
        self.targets: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.timeouts.append(current_attempt_timeout())
        target = current_target()
        self.targets.append(target.name if target else "")
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with isolated_registry(fake):
        yield fake


def guard(clock: FakeClock, provider: str = "p", **options: Any) -> Any:
    return llm_call(provider, clock=clock, sleep=clock.sleep, random=lambda: 0.5, **options)


def test_guard_retries_until_success(clock: FakeClock) -> None:
    """Retryable errors are retried; the result of the first success is returned."""
    script = Script(Status(503), Status(500))
    assert guard(clock, max_attempts=3)(script)() == "ok"
    assert script.calls == 3


def test_guard_waits_full_jitter_backoff(clock: FakeClock) -> None:
    """Waits follow full-jitter exponential backoff (random fixed at 0.5)."""
    script = Script(Status(503), Status(503))
    guard(clock, max_attempts=3, backoff_initial=1, backoff_max=10)(script)()
    assert clock.sleeps == [0.5, 1.0]


def test_guard_wait_honours_retry_after(clock: FakeClock) -> None:
    """The wait is max(server hint, backoff): a longer Retry-After wins."""
    script = Script(Status(429, {"retry-after": "4"}))
    guard(clock, max_attempts=2, backoff_initial=1)(script)()
    assert clock.sleeps == [4.0]


def test_guard_wait_backoff_beats_short_hint(clock: FakeClock) -> None:
    """A hint shorter than the backoff does not shorten the wait."""
    script = Script(Status(429, {"retry-after-ms": "100"}))
    guard(clock, max_attempts=2, backoff_initial=4)(script)()
    assert clock.sleeps == [2.0]


def test_guard_retry_after_capped(clock: FakeClock) -> None:
    """A huge Retry-After is capped at max_retry_after."""
    script = Script(Status(429, {"retry-after": "3600"}))
    guard(clock, max_attempts=2, max_retry_after=5, deadline=60)(script)()
    assert clock.sleeps == [5.0]


def test_guard_retry_after_http_date(clock: FakeClock) -> None:
    """Retry-After as an HTTP date is honoured."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    script = Script(Status(503, {"retry-after": header}))
    guard(clock, max_attempts=2, deadline=60)(script)()
    assert 18 <= clock.sleeps[0] <= 20


def test_guard_no_sleep_past_deadline(clock: FakeClock) -> None:
    """When the next wait plus min_attempt_time exceeds the time left, the guard stops."""
    script = Script(Status(429, {"retry-after": "8"}), result="late")
    with pytest.raises(DeadlineExceeded) as info:
        guard(clock, max_attempts=5, deadline=10, min_attempt_time=3)(script)()
    assert (script.calls, clock.sleeps) == (1, [])
    assert isinstance(info.value.__cause__, Status)


def test_guard_deadline_never_exceeded(clock: FakeClock) -> None:
    """Attempts that each burn time stop before the deadline is passed."""

    def slow_failure() -> None:
        clock.advance(2)
        raise Status(503)

    with pytest.raises(DeadlineExceeded):
        guard(clock, max_attempts=50, deadline=10, backoff_initial=1, min_attempt_time=1)(
            slow_failure
        )()
    assert clock.now - 1000 <= 10


def test_guard_attempt_timeout_shrinks(clock: FakeClock) -> None:
    """The per-attempt timeout is attempt_timeout, shrunk to the time left."""

    calls: list[float | None] = []

    def fn() -> str:
        calls.append(current_attempt_timeout())
        clock.advance(4)
        if len(calls) < 3:
            raise Status(503)
        return "ok"

    guard(clock, max_attempts=3, deadline=10, attempt_timeout=5, backoff_initial=0)(fn)()
    assert calls == [5, 5, 2]


def test_guard_timeout_kwarg_injected(clock: FakeClock) -> None:
    """timeout_kwarg hands the per-attempt timeout as a keyword argument."""

    def fn(prompt: str, *, timeout: float) -> float:
        return timeout

    assert guard(clock, deadline=7, timeout_kwarg="timeout")(fn)("hi") == 7


def test_guard_timeout_kwarg_unknown_parameter(clock: FakeClock) -> None:
    """timeout_kwarg naming a parameter the function lacks fails at decoration time."""

    def fn(prompt: str) -> str:
        return prompt

    with pytest.raises(GuardConfigError, match="takes no 'timeout'"):
        guard(clock, timeout_kwarg="timeout")(fn)


def test_guard_current_attempt_timeout_outside() -> None:
    """Outside a guarded call there is no attempt timeout."""
    assert current_attempt_timeout() is None


def test_guard_rejected_not_retried(clock: FakeClock) -> None:
    """A 400 propagates unchanged after one attempt."""
    script = Script(Status(400))
    with pytest.raises(Status):
        guard(clock, max_attempts=3)(script)()
    assert script.calls == 1


def test_guard_unknown_error_not_retried(clock: FakeClock) -> None:
    """An unknown exception propagates unchanged, is not retried, does not count."""
    script = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        guard(clock, max_attempts=3)(script)()
    assert (script.calls, get_breaker("p").counters.failures) == (1, 0)


def test_guard_retries_exhausted(clock: FakeClock) -> None:
    """All attempts failing raises RetriesExhausted with the last error as cause."""
    script = Script(Status(503), Status(502), Status(500))
    with pytest.raises(RetriesExhausted) as info:
        guard(clock, max_attempts=3, deadline=100)(script)()
    assert (info.value.attempts, info.value.__cause__.status_code) == (3, 500)  # type: ignore[union-attr]


def test_guard_open_breaker_short_circuits(clock: FakeClock) -> None:
    """An open breaker raises ProviderUnavailable at once, without calling."""
    get_breaker("p").trip(30)
    script = Script()
    with pytest.raises(ProviderUnavailable) as info:
        guard(clock)(script)()
    assert (script.calls, info.value.retry_after) == (0, 30)


def test_guard_fallback_when_open(clock: FakeClock) -> None:
    """An open breaker moves the call to the next target."""
    get_breaker("p").trip(30)
    script = Script()
    assert guard(clock, fallbacks=["p:backup"])(script)() == "ok"
    assert script.targets == ["p:backup"]


def test_guard_fallback_after_retries(clock: FakeClock) -> None:
    """Exhausted retries on the primary move to the fallback, counted on the primary."""
    script = Script(Status(503), Status(503))
    assert guard(clock, max_attempts=2, deadline=100, fallbacks=["q"])(script)() == "ok"
    assert script.targets == ["p", "p", "q"]
    assert get_breaker("p").counters.fallbacks == 1


def test_guard_fallback_target_callable_and_kwargs(clock: FakeClock) -> None:
    """A Target may replace the callable and add keyword arguments."""
    get_breaker("p").trip(30)

    def backup(prompt: str, model: str) -> str:
        return f"{prompt}@{model}"

    fallback = Target("azure", call=backup, kwargs={"model": "gpt-eu"})
    assert guard(clock, fallbacks=[fallback])(Script())("hi", model="gpt") == "hi@gpt-eu"


def test_guard_no_fallback_on_rejected(clock: FakeClock) -> None:
    """A rejected request is not sent to the fallback (it would be rejected there too)."""
    script = Script(Status(422))
    with pytest.raises(Status):
        guard(clock, fallbacks=["q"])(script)()
    assert script.targets == ["p"]


def test_guard_all_open_raises_earliest_retry(clock: FakeClock) -> None:
    """When every target is open, ProviderUnavailable carries the earliest retry time."""
    get_breaker("p").trip(30)
    get_breaker("q").trip(5)
    with pytest.raises(ProviderUnavailable) as info:
        guard(clock, fallbacks=["q"])(Script())()
    assert info.value.retry_after == 5


def test_guard_trips_breaker_then_short_circuits(clock: FakeClock) -> None:
    """Failures through the guard open the breaker; later calls are not made."""
    script = Script(*[Status(503)] * 10)
    g = guard(clock, max_attempts=1, failure_threshold=2)(script)
    for _ in range(2):
        with pytest.raises(RetriesExhausted):
            g()
    with pytest.raises(ProviderUnavailable):
        g()
    assert script.calls == 2


def test_guard_events_for_retry_and_fallback(clock: FakeClock) -> None:
    """Retries and fallbacks are reported to listeners with reason tokens only."""
    events: list[BreakerEvent] = []
    add_listener(events.append)
    try:
        guard(clock, max_attempts=2, deadline=100, fallbacks=["q"])(
            Script(Status(503), Status(429))
        )()
    finally:
        remove_listener(events.append)
    kinds = [(e.kind, e.reason or e.target) for e in events if e.kind in ("retry", "fallback")]
    assert kinds == [("retry", "http_503"), ("fallback", "q")]


def test_guard_test_mode_no_sleep_capped(clock: FakeClock) -> None:
    """Test mode: no sleeps and at most `attempts` attempts."""
    script = Script(*[Status(503)] * 5)
    with llm_test_mode(attempts=2), pytest.raises(RetriesExhausted):
        guard(clock, max_attempts=5, deadline=100)(script)()
    assert (script.calls, clock.sleeps) == (2, [])


def test_guard_test_mode_restored(clock: FakeClock) -> None:
    """Leaving the llm_test_mode() block restores normal sleeps."""
    with llm_test_mode():
        pass
    guard(clock, max_attempts=2)(Script(Status(503)))()
    assert clock.sleeps != []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"deadline": -1}, "'deadline' should be finite and > 0"),
        ({"max_attempts": 0}, "'max_attempts' should be an integer >= 1"),
        ({"max_attempts": True}, "'max_attempts' should be an integer >= 1"),
        ({"colour": "red"}, "unknown option"),
        ({"backoff_initial": 5, "backoff_max": 1}, "'backoff_max'"),
        ({"failure_threshold": 0}, "'failure_threshold'"),
        ({"fallbacks": "q"}, "list of targets"),
        ({"fallbacks": ["p"]}, "appear once"),
    ],
)
def test_guard_bad_arguments_at_decoration(
    clock: FakeClock, options: dict[str, Any], match: str
) -> None:
    """Invalid guard arguments raise GuardConfigError before any call."""
    with pytest.raises(GuardConfigError, match=match):
        llm_call("p", **options)


def test_guard_accepts_timedelta(clock: FakeClock) -> None:
    """Durations accept timedelta."""
    assert llm_call("p", deadline=dt.timedelta(seconds=3)).policy.deadline == 3


@override_settings(ARENA_SCALE_LLM_PROVIDERS={"p": {"max_attempts": 2, "colour": "red"}})
def test_guard_unknown_provider_setting(clock: FakeClock) -> None:
    """An unknown key in ARENA_SCALE_LLM_PROVIDERS fails at decoration time."""
    with pytest.raises(GuardConfigError, match=r"LLM_PROVIDERS\['p'\].*'colour'"):
        llm_call("p")


@override_settings(ARENA_SCALE_LLM_PROVIDERS={"p": {"max_attempts": 2}})
def test_guard_provider_settings_applied(clock: FakeClock) -> None:
    """Provider settings are the defaults; decorator options override them."""
    assert llm_call("p").policy.max_attempts == 2
    assert llm_call("p", max_attempts=4).policy.max_attempts == 4


def test_guard_call_method(clock: FakeClock) -> None:
    """guard.call() runs a plain callable through the guard."""
    assert guard(clock).call(Script(Status(503))) == "ok"


def test_guard_repr(clock: FakeClock) -> None:
    """The guard's repr shows the chain, deadline and attempts."""
    assert repr(llm_call("p", fallbacks=["q"], deadline=9, max_attempts=2)) == (
        "<LLMGuard p -> q deadline=9s attempts=2>"
    )


def test_guard_concurrent_sync_calls_not_serialised() -> None:
    """20 slow calls through one closed breaker overlap (no lock held across the call)."""
    barrier = threading.Barrier(20, timeout=10)

    @llm_call("concurrent")
    def slow() -> str:
        barrier.wait()  # only returns once all 20 calls are inside at the same time
        time.sleep(0.2)
        return "ok"

    with isolated_registry():
        results: list[str] = []
        threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(20)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    assert results == ["ok"] * 20
    assert elapsed < 2.0  # serialised, it would take 4 s


async def test_guard_async_retries() -> None:
    """Async functions are retried like sync ones (injected async sleep)."""
    clock = FakeClock()
    with isolated_registry(clock):
        script = Script(Status(503))

        @llm_call("a", clock=clock, async_sleep=clock.async_sleep, random=lambda: 0.5)
        async def fn() -> str:
            return str(script())

        assert await fn() == "ok"
    assert (script.calls, clock.sleeps) == (2, [0.25])


async def test_guard_async_attempt_timeout() -> None:
    """The guard cuts an async attempt at its timeout and retries it."""
    calls = 0

    @llm_call("a", attempt_timeout=0.05, max_attempts=2, backoff_initial=0, min_attempt_time=0)
    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(5)
        return "ok"

    with isolated_registry():
        assert await fn() == "ok"
    assert calls == 2


async def test_guard_async_deadline_bound() -> None:
    """A hanging provider cannot hold a call much past its deadline."""

    @llm_call("a", deadline=0.3, max_attempts=10, backoff_initial=0.01, min_attempt_time=0)
    async def hang() -> None:
        await asyncio.sleep(10)

    with isolated_registry():
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await hang()
        elapsed = time.monotonic() - started
    assert isinstance(info.value.__cause__, AttemptTimeout)
    assert elapsed < 0.3 + 0.4  # generous: the machine may be loaded


async def test_guard_cancellation_neutral() -> None:
    """Cancelling the task propagates CancelledError and counts neither way."""
    started = asyncio.Event()

    @llm_call("a", failure_threshold=1)
    async def fn() -> None:
        started.set()
        await asyncio.sleep(10)

    with isolated_registry():
        task = asyncio.ensure_future(fn())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        breaker = get_breaker("a")
        assert (breaker.state, breaker.counters.failures, breaker.counters.neutral) == (
            "closed",
            0,
            1,
        )


async def test_guard_concurrent_async_calls_not_serialised() -> None:
    """20 slow async calls through one closed breaker finish in about one call's time."""

    @llm_call("a")
    async def slow() -> str:
        await asyncio.sleep(0.2)
        return "ok"

    with isolated_registry():
        started = time.monotonic()
        results = await asyncio.gather(*(slow() for _ in range(20)))
        elapsed = time.monotonic() - started
    assert results == ["ok"] * 20
    assert elapsed < 1.0


def test_guard_outcome_from_rule(clock: FakeClock) -> None:
    """A user rule on the guard's classifier turns an unknown error into a retry."""
    from django_arena_scale.resilience import Classifier

    rules = Classifier()
    rules.add_rule(KeyError, Outcome.RETRY)
    script = Script(KeyError("flaky"))
    assert guard(clock, classifier=rules)(script)() == "ok"


def test_guard_fallback_exhausted_by_attempts_not_deadline(clock: FakeClock) -> None:
    """A deadline stop on the primary does not label the fallback's exhaustion a timeout."""
    script = Script(Status(429, {"retry-after": "50"}), Status(503), Status(503))
    with pytest.raises(RetriesExhausted) as info:
        guard(
            clock,
            max_attempts=2,
            deadline=60,
            min_attempt_time=15,
            max_retry_after=50,
            fallbacks=["q"],
        )(script)()
    assert not isinstance(info.value, DeadlineExceeded)
    assert script.targets == ["p", "q", "q"]
