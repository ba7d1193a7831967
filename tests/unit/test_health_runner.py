"""The pure check runner: classification, deadline, timeouts, cache and single flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from django_arena_scale.health._model import Check, Reason, Status, Unavailable
from django_arena_scale.health._runner import Runner

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

    def meet() -> None:
        barrier.wait()  # returns the thread's index, which is not a pass value

    report = _evaluate(Check("a", meet), Check("b", meet), deadline=3.0)
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


# --- fail closed: every shape a check can take --------------------------------------------------
def _outcome(check: Check, deadline: float = 2.0) -> tuple[str, str | None]:
    result = _evaluate(check, deadline=deadline).results[0]
    return result.status.value, result.reason.value if result.reason else None


def test_shape_sync_pass() -> None:
    """A plain function that returns normally passes."""

    def check() -> None:
        return None

    assert _outcome(Check("sync", check)) == ("pass", None)


@pytest.mark.parametrize("value", [True, Status.PASS])
def test_shape_explicit_pass_values(value: object) -> None:
    """True and Status.PASS are the other explicit passes."""
    assert _outcome(Check("sync", lambda: value)) == ("pass", None)


def test_shape_async_pass() -> None:
    """An async def check is awaited and passes."""
    ran = []

    async def check() -> None:
        await asyncio.sleep(0)
        ran.append(1)

    assert (_outcome(Check("async", check)), ran) == (("pass", None), [1])


def test_shape_async_returning_false_fails() -> None:
    """The awaited value is classified like a sync return: False fails as unavailable."""

    async def check() -> bool:
        return False

    assert _outcome(Check("async", check)) == ("fail", "unavailable")


@pytest.mark.parametrize("value", [False, Status.FAIL])
def test_shape_returns_false(value: object) -> None:
    """False and Status.FAIL fail as unavailable."""
    assert _outcome(Check("down", lambda: value)) == ("fail", "unavailable")


@pytest.mark.parametrize(
    "value",
    ["ok", "pass", 1, 0, 1.0, {"status": "pass"}, [], object(), Status],
    ids=["str-ok", "str-pass", "int-1", "int-0", "float", "dict", "list", "object", "class"],
)
def test_shape_wrong_type_fails_as_error(value: object) -> None:
    """Any value that is not an explicit pass fails closed as error (it used to pass)."""
    assert _outcome(Check("odd", lambda: value)) == ("fail", "error")


def test_shape_wrong_type_logged_once_per_check_and_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wrong return type is logged (with the type, not the value) once per process."""
    runner = Runner()
    check = Check("odd", lambda: "secret-value")
    with caplog.at_level("WARNING", logger="django_arena_scale.health"):
        for _ in range(3):
            runner.evaluate([check], deadline=2, default_timeout=2)
    messages = [r.getMessage() for r in caplog.records if "returned" in r.getMessage()]
    assert (len(messages), "str" in messages[0], "secret-value" in messages[0]) == (1, True, False)


def test_shape_raises_is_error() -> None:
    """A sync check that raises fails as error."""

    def check() -> None:
        raise ValueError(SECRET)

    assert _outcome(Check("boom", check)) == ("fail", "error")


def test_shape_async_raises_is_error() -> None:
    """An async check that raises fails as error (it used to read as a pass)."""

    async def check() -> None:
        raise ValueError(SECRET)

    assert _outcome(Check("boom", check)) == ("fail", "error")


def test_shape_async_raises_unavailable() -> None:
    """Unavailable raised from an async check keeps its reason."""

    async def check() -> None:
        raise Unavailable("down")

    assert _outcome(Check("down", check)) == ("fail", "unavailable")


def test_shape_sync_hang_is_timeout() -> None:
    """A sync check that hangs is reported timeout."""
    release = threading.Event()
    try:
        outcome = _outcome(Check("hang", lambda: release.wait(5), timeout=0.05))
    finally:
        release.set()
    assert outcome == ("fail", "timeout")


def test_shape_async_hang_is_timeout_and_cancelled() -> None:
    """An async check that hangs is reported timeout, and its coroutine is cancelled."""
    cancelled = threading.Event()

    async def check() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = _outcome(Check("hang", check, timeout=0.05))
    assert (outcome, cancelled.wait(5)) == (("fail", "timeout"), True)


def test_shape_async_hang_capped_by_overall_deadline() -> None:
    """The overall deadline caps an async check's own timeout too."""
    cancelled = threading.Event()

    async def check() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = _outcome(Check("hang", check, timeout=30), deadline=0.05)
    assert (outcome, cancelled.wait(5)) == (("fail", "timeout"), True)


def test_shape_sync_callable_returning_coroutine_is_awaited() -> None:
    """A plain callable returning a coroutine has it awaited (here: it raises -> error)."""

    async def probe() -> None:
        raise Unavailable("down")

    assert _outcome(Check("wrapped", lambda: probe())) == ("fail", "unavailable")


def test_shape_sync_callable_returning_passing_coroutine_passes() -> None:
    """... and a passing coroutine returned by a plain callable passes."""

    async def probe() -> None:
        return None

    assert _outcome(Check("wrapped", lambda: probe())) == ("pass", None)


def test_shape_awaitable_object_is_awaited() -> None:
    """Any awaitable (not only coroutines) is awaited."""

    class Ready:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield from asyncio.sleep(0).__await__()
            return Status.WARN

    assert _outcome(Check("aw", Ready)) == ("warn", None)


def test_shape_coroutine_returning_coroutine_fails_and_is_closed() -> None:
    """An awaited value that is itself an un-awaited coroutine fails, and is closed."""
    inner_ran = []

    async def inner() -> None:
        inner_ran.append(1)

    holder: list[object] = []

    async def check() -> object:
        coro = inner()
        holder.append(coro)
        return coro

    outcome = _outcome(Check("nested", check))
    coro = holder[0]
    assert (outcome, inner_ran, coro.cr_frame) == (("fail", "error"), [], None)  # type: ignore[attr-defined]


def test_classify_unawaited_coroutine_fails_and_is_closed() -> None:
    """classify() given a coroutine fails it as error and closes it (no 'never awaited')."""
    from django_arena_scale.health._runner import classify

    async def check() -> None:
        return None

    coro = check()
    result = classify(coro)
    assert (result, coro.cr_frame) == ((Status.FAIL, Reason.ERROR), None)


def test_no_never_awaited_warning_from_the_runner(recwarn: pytest.WarningsRecorder) -> None:
    """Running async checks of every shape leaves no RuntimeWarning behind."""
    import gc

    async def ok() -> None:
        return None

    async def boom() -> None:
        raise ValueError

    async def hang() -> None:
        await asyncio.sleep(30)

    async def nested() -> object:
        return ok()

    _evaluate(
        Check("ok", ok),
        Check("boom", boom),
        Check("hang", hang, timeout=0.05),
        Check("nested", nested),
        Check("wrapped", lambda: ok()),
    )
    gc.collect()
    assert [str(w.message) for w in recwarn if issubclass(w.category, RuntimeWarning)] == []


def test_generator_function_refused_at_registration() -> None:
    """A generator function cannot be a check: refused with a clear error naming it."""

    def gen():  # type: ignore[no-untyped-def]
        yield None

    async def agen():  # type: ignore[no-untyped-def]
        yield None

    errors = []
    for func in (gen, agen):
        with pytest.raises(TypeError) as info:
            Check("g", func)
        errors.append(str(info.value))
    assert all("'g'" in e and "generator function" in e for e in errors)
