"""The pure check runner: classification, deadline, timeouts, cache and single flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from django_arena_scale.health.model import Check, Reason, Status, Unavailable
from django_arena_scale.health.runner import Runner

SECRET = "password=hunter2 at postgres://admin:s3cr3t@db.internal:5432/prod"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _evaluate(*checks: Check, deadline: float = 2.0, default_timeout: float = 1.0):
    return Runner().evaluate(checks, deadline=deadline, default_timeout=default_timeout)


def test_runner_passing_check_is_pass() -> None:
    """A check returning None passes."""
    report = _evaluate(Check("ok", lambda: None))
    assert report.results[0].status is Status.PASS


def test_runner_false_return_is_unavailable() -> None:
    """A check returning False fails as unavailable."""
    report = _evaluate(Check("down", lambda: False))
    assert report.critical_failures == {"down": "unavailable"}


def test_runner_unavailable_exception_is_unavailable() -> None:
    """Raising Unavailable is reported as unavailable, not error."""

    def check() -> None:
        raise Unavailable("db refused")

    assert _evaluate(Check("db", check)).critical_failures == {"db": "unavailable"}


def test_runner_any_exception_is_error() -> None:
    """Any other exception is reported as error."""

    def check() -> None:
        raise RuntimeError(SECRET)

    assert _evaluate(Check("boom", check)).critical_failures == {"boom": "error"}


def test_runner_error_result_carries_no_exception_text() -> None:
    """Nothing from the exception message ends up in the result."""

    def check() -> None:
        raise RuntimeError(SECRET)

    result = _evaluate(Check("boom", check)).results[0]
    assert [w for w in ("hunter2", "s3cr3t") if w in repr(result)] == []


def test_runner_base_exception_is_error() -> None:
    """Even SystemExit in a check is contained and reported as error."""

    def check() -> None:
        raise SystemExit(3)

    assert _evaluate(Check("exit", check)).critical_failures == {"exit": "error"}


def test_runner_builtin_timeout_error_is_timeout() -> None:
    """A check raising TimeoutError (e.g. a socket timeout) is reported as timeout."""

    def check() -> None:
        raise TimeoutError

    assert _evaluate(Check("slow", check)).critical_failures == {"slow": "timeout"}


def test_runner_slow_check_is_timeout_not_error() -> None:
    """A check that outlives its timeout is reported as timeout."""
    release = threading.Event()
    try:
        report = _evaluate(Check("hang", lambda: release.wait(5), timeout=0.05))
    finally:
        release.set()
    assert report.critical_failures == {"hang": "timeout"}


def test_runner_overall_deadline_caps_check_timeout() -> None:
    """A check with a long timeout still ends at the overall deadline."""
    release = threading.Event()
    try:
        report = _evaluate(Check("hang", lambda: release.wait(5), timeout=5.0), deadline=0.05)
    finally:
        release.set()
    assert report.results[0].reason is Reason.TIMEOUT


def test_runner_runs_checks_concurrently() -> None:
    """Two checks that each wait for the other can only pass if they run at the same time."""
    barrier = threading.Barrier(2, timeout=2)
    report = _evaluate(Check("a", barrier.wait), Check("b", barrier.wait), deadline=3.0)
    assert report.status is Status.PASS


def test_runner_non_critical_failure_is_warn() -> None:
    """A failing non-critical check is warn and does not fail readiness."""
    report = _evaluate(Check("optional", lambda: False, critical=False))
    assert (report.results[0].status, report.critical_failures) == (Status.WARN, {})


def test_runner_warn_return_is_warn() -> None:
    """A check may return Status.WARN."""
    report = _evaluate(Check("meh", lambda: Status.WARN))
    assert report.status is Status.WARN


def test_runner_hung_check_is_not_started_twice() -> None:
    """A check still running from the previous evaluation is reported timeout, not re-run."""
    release = threading.Event()
    calls = []

    def hang() -> None:
        calls.append(1)
        release.wait(5)

    runner = Runner()
    check = Check("hang", hang, timeout=0.02)
    try:
        runner.evaluate([check], deadline=1, default_timeout=1)
        report = runner.evaluate([check], deadline=1, default_timeout=1)
    finally:
        release.set()
    assert (len(calls), report.critical_failures) == (1, {"hang": "timeout"})


def test_runner_duration_uses_injected_clock() -> None:
    """Durations are measured with the injected clock."""
    clock = FakeClock()

    def check() -> None:
        clock.now += 0.25

    runner = Runner(clock=clock)
    report = runner.evaluate([Check("c", check)], deadline=1, default_timeout=1)
    assert report.results[0].duration == pytest.approx(0.25)


def test_runner_cache_reused_within_ttl() -> None:
    """A second call within the TTL does not evaluate again."""
    clock = FakeClock()
    runner = Runner(clock=clock)
    kwargs = {"deadline": 1.0, "default_timeout": 1.0, "ttl": 1.0}
    runner.get(lambda: [Check("c", lambda: None)], **kwargs)
    clock.now += 0.9
    runner.get(lambda: [Check("c", lambda: None)], **kwargs)
    assert runner.evaluations == 1


def test_runner_cache_expires_after_ttl() -> None:
    """After the TTL the checks run again."""
    clock = FakeClock()
    runner = Runner(clock=clock)
    kwargs = {"deadline": 1.0, "default_timeout": 1.0, "ttl": 1.0}
    runner.get(lambda: [Check("c", lambda: None)], **kwargs)
    clock.now += 1.0
    runner.get(lambda: [Check("c", lambda: None)], **kwargs)
    assert runner.evaluations == 2


def test_runner_factory_not_called_on_cache_hit() -> None:
    """Building the check list is skipped when the cache answers."""
    clock = FakeClock()
    runner = Runner(clock=clock)
    built = []

    def factory() -> list[Check]:
        built.append(1)
        return []

    kwargs = {"deadline": 1.0, "default_timeout": 1.0, "ttl": 5.0}
    runner.get(factory, **kwargs)
    runner.get(factory, **kwargs)
    assert len(built) == 1


def test_runner_factory_error_is_reported_as_error() -> None:
    """If the check list cannot be built, readiness fails with error instead of raising."""

    def factory() -> list[Check]:
        raise RuntimeError(SECRET)

    report = Runner().get(factory, deadline=1.0, default_timeout=1.0, ttl=1.0)
    assert report.critical_failures == {"checks": "error"}


def test_runner_single_flight_100_threads_one_evaluation() -> None:
    """100 concurrent callers while an evaluation runs share it: one evaluation, one call."""
    release = threading.Event()
    calls = []

    def check() -> None:
        calls.append(1)
        release.wait(10)

    runner = Runner()
    results = []

    def call() -> None:
        report = runner.get(
            lambda: [Check("slow", check, timeout=10)], deadline=10, default_timeout=10, ttl=1
        )
        results.append(report)

    threads = [threading.Thread(target=call) for _ in range(100)]
    for thread in threads:
        thread.start()
    try:
        _wait_until(lambda: runner.joined == 99)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert (runner.evaluations, len(calls), len(results)) == (1, 1, 100)


async def test_runner_async_single_flight_100_tasks_one_evaluation() -> None:
    """100 concurrent async callers share one evaluation."""
    release = threading.Event()
    calls = []

    def check() -> None:
        calls.append(1)
        release.wait(10)

    runner = Runner()

    async def call():
        return await runner.aget(
            lambda: [Check("slow", check, timeout=10)], deadline=10, default_timeout=10, ttl=1
        )

    tasks = [asyncio.ensure_future(call()) for _ in range(100)]
    while runner.joined < 99:
        await asyncio.sleep(0.005)
    release.set()
    reports = await asyncio.gather(*tasks)
    assert (runner.evaluations, len(calls), len(reports)) == (1, 1, 100)


async def test_runner_async_does_not_block_event_loop() -> None:
    """While a check blocks, the event loop keeps running other tasks."""
    release = threading.Event()
    runner = Runner()
    task = asyncio.ensure_future(
        runner.aget(
            lambda: [Check("slow", lambda: release.wait(5), timeout=5)],
            deadline=5,
            default_timeout=5,
            ttl=1,
        )
    )
    ticks = 0
    while ticks < 3:
        await asyncio.sleep(0)
        ticks += 1
    loop_ran_while_blocked = not task.done()
    release.set()
    await task
    assert loop_ran_while_blocked


async def test_runner_async_cancelled_waiter_does_not_break_others() -> None:
    """One async caller giving up does not cancel the shared evaluation for the rest."""
    release = threading.Event()
    runner = Runner()

    def factory() -> list[Check]:
        return [Check("slow", lambda: release.wait(5), timeout=5)]

    first = asyncio.ensure_future(runner.aget(factory, deadline=5, default_timeout=5, ttl=1))
    second = asyncio.ensure_future(runner.aget(factory, deadline=5, default_timeout=5, ttl=1))
    while runner.joined < 1:
        await asyncio.sleep(0.005)
    first.cancel()
    release.set()
    report = await second
    assert report.status is Status.PASS


def test_runner_clear_forgets_cache() -> None:
    """clear() drops the cached report."""
    runner = Runner()
    kwargs = {"deadline": 1.0, "default_timeout": 1.0, "ttl": 60.0}
    runner.get(lambda: [], **kwargs)
    runner.clear()
    assert runner.peek(60.0) is None


def test_runner_repr_names_counts() -> None:
    """repr shows the evaluation count."""
    assert "evaluations=0" in repr(Runner())
