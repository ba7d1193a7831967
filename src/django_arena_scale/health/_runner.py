"""Evaluate checks concurrently under a deadline, with a per-process single-flight cache.

Pure Python (no Django import); the clocks are injected so tests need no sleeps.

* Each check runs in its own daemon thread (a hung check never blocks interpreter exit) and
  gets ``min(check.timeout or default_timeout, deadline)`` seconds; a late check is ``timeout``.
* Checks fail closed: only ``None``, ``True`` and :data:`Status.PASS` pass (``Status.WARN``
  warns); ``False``, ``Status.FAIL`` and every other value (a string, a number, a dict, an
  un-awaited coroutine) fail.
* An async check (``async def``, or any callable returning an awaitable) is awaited in its
  helper thread on a private event loop (``asyncio.run``), bounded by the same budget: the
  coroutine is cancelled when the budget runs out, so the thread ends with it.
* A check still running from an earlier evaluation is not started again: it is reported as
  ``timeout`` at once, so a dependency that hangs cannot pile up threads.
* :meth:`Runner.get` reuses a report for ``ttl`` seconds, and concurrent callers share one
  evaluation (single flight).  :meth:`Runner.aget` does the same without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django_arena_scale.health._model import (
    Check,
    CheckResult,
    Reason,
    Report,
    Status,
    Unavailable,
)

logger = logging.getLogger("django_arena_scale.health")

Clock = Callable[[], float]
ChecksFactory = Callable[[], Sequence[Check]]
Spawn = Callable[[Callable[[], None]], None]
Outcome = Future[tuple[Status, Reason | None, float]]

#: Called with every fresh report (not with cached ones): the metrics read results from here.
ReportObserver = Callable[[Report], None]
_observers: tuple[ReportObserver, ...] = ()


def add_report_observer(observer: ReportObserver) -> None:
    """Call ``observer(report)`` after each evaluation, in the thread that ran it (once each)."""
    global _observers
    if observer not in _observers:
        _observers = (*_observers, observer)


def remove_report_observer(observer: ReportObserver) -> None:
    global _observers
    _observers = tuple(item for item in _observers if item != observer)


def _observe(report: Report) -> None:
    for observer in _observers:
        try:
            observer(report)
        except Exception:
            # Metrics must never break a probe.
            logger.exception("Report observer %r failed.", observer)


# A waiter gives up this long after the deadline; the leader is itself bounded by the deadline,
# so this only guards against a bug, and then answers "timeout" rather than hanging a worker.
_WAITER_SLACK = 1.0


def spawn_daemon(target: Callable[[], None]) -> None:
    """Run ``target`` in a new daemon thread."""
    threading.Thread(target=target, name="arena-scale-check", daemon=True).start()


def classify(value: Any) -> tuple[Status, Reason | None]:
    """Map a check's (already awaited) return value to a status; anything unknown fails.

    ``None``, ``True`` and ``Status.PASS`` pass; ``Status.WARN`` warns; ``False`` and
    ``Status.FAIL`` fail as ``unavailable``; any other value fails as ``error`` (a check that
    returns ``"ok"``, ``1`` or a dict did not say "pass").  An awaitable that reaches this
    function was never awaited: it fails, and a coroutine is closed so that it does not warn
    "coroutine ... was never awaited" when it is collected.
    """
    if value is None or value is True or value is Status.PASS:
        return Status.PASS, None
    if value is Status.WARN:
        return Status.WARN, None
    if value is False or value is Status.FAIL:
        return Status.FAIL, Reason.UNAVAILABLE
    discard(value)
    return Status.FAIL, Reason.ERROR


def discard(value: Any) -> None:
    """Close ``value`` if it is an un-awaited coroutine (or generator), without running it."""
    if inspect.iscoroutine(value) or inspect.isgenerator(value):
        value.close()


_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncio.TimeoutError,  # a distinct class on Python 3.10
    FutureTimeout,  # likewise
)


def classify_exception(exc: BaseException) -> Reason:
    if isinstance(exc, Unavailable):
        return Reason.UNAVAILABLE
    if isinstance(exc, _TIMEOUTS):
        return Reason.TIMEOUT
    return Reason.ERROR


async def _bounded(awaitable: Awaitable[Any], budget: float) -> Any:
    return await asyncio.wait_for(awaitable, budget)


def call_check(check: Check, budget: float) -> Any:
    """Call ``check.func`` and, if it returns an awaitable, await it for at most ``budget`` s.

    Runs in the check's helper thread, where no event loop runs, so the awaitable gets a
    private loop of its own (``asyncio.run``); a coroutine still running at the budget is
    cancelled (reported ``timeout``).  Async checks must not block that loop: use async
    clients in them, or write the check as a plain function.
    """
    value = check.func()
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # only when a test runs a check inline inside an event loop
        discard(value)
        msg = f"Async check {check.name!r} cannot be awaited inside a running event loop."
        raise RuntimeError(msg)
    return asyncio.run(_bounded(value, budget))


class Runner:
    """Runs checks; one instance per process (see ``health._service.get_runner``)."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        spawn: Spawn = spawn_daemon,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._spawn = spawn
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._cached: Report | None = None
        self._cached_at = 0.0
        self._inflight: Future[Report] | None = None
        self._running: dict[str, Outcome] = {}
        self._warned: set[tuple[str, type[Any]]] = set()
        self._last: dict[str, tuple[Status, Reason | None]] = {}
        self.evaluations = 0
        self.joined = 0  # callers that waited for another caller's evaluation

    def __repr__(self) -> str:
        return f"<Runner evaluations={self.evaluations} cached={self._cached!r}>"

    def clear(self) -> None:
        """Forget the cached report and the in-flight bookkeeping (tests, forked children)."""
        self._reset_state()

    # --- cache + single flight -------------------------------------------------------------
    def peek(self, ttl: float) -> Report | None:
        """The cached report if it is younger than ``ttl`` seconds, without evaluating."""
        cached = self._cached
        if cached is not None and self._clock() - self._cached_at < ttl:
            return cached
        return None

    def _join(self, ttl: float) -> tuple[Future[Report], bool] | Report:
        with self._lock:
            cached = self.peek(ttl)
            if cached is not None:
                return cached
            if self._inflight is not None:
                self.joined += 1
                return self._inflight, False
            flight: Future[Report] = Future()
            # A running future cannot be cancelled, so one waiter giving up cannot break others.
            flight.set_running_or_notify_cancel()
            self._inflight = flight
            self.evaluations += 1
            return flight, True

    def _lead(
        self,
        flight: Future[Report],
        factory: ChecksFactory,
        deadline: float,
        default_timeout: float,
    ) -> None:
        try:
            report = self.evaluate(factory(), deadline=deadline, default_timeout=default_timeout)
        except BaseException:
            logger.exception("Building or running the health checks failed.")
            report = self._error_report("checks")
        if _observers:
            _observe(report)
        with self._lock:
            self._cached = report
            self._cached_at = self._clock()
            self._inflight = None
        flight.set_result(report)

    def _flight(
        self,
        factory: ChecksFactory,
        deadline: float,
        default_timeout: float,
        ttl: float,
        run_lead: Spawn,
    ) -> Report | Future[Report]:
        """The fresh cached report, or the evaluation to wait for.

        The one caller that starts an evaluation hands it to ``run_lead``: inline for a thread
        that may block, a helper thread for an event loop that must not.
        """
        joined = self._join(ttl)
        if isinstance(joined, Report):
            return joined
        flight, leader = joined
        if leader:
            run_lead(lambda: self._lead(flight, factory, deadline, default_timeout))
        return flight

    def get(
        self, factory: ChecksFactory, *, deadline: float, default_timeout: float, ttl: float
    ) -> Report:
        """A report at most ``ttl`` seconds old; concurrent callers share one evaluation."""
        flight = self._flight(factory, deadline, default_timeout, ttl, _run_inline)
        if isinstance(flight, Report):
            return flight
        try:
            return flight.result(timeout=deadline + _WAITER_SLACK)
        except FutureTimeout:
            return self._error_report("checks", Reason.TIMEOUT)

    async def aget(
        self, factory: ChecksFactory, *, deadline: float, default_timeout: float, ttl: float
    ) -> Report:
        """Like :meth:`get`, for async callers: the evaluation runs off the event loop."""
        flight = self._flight(factory, deadline, default_timeout, ttl, self._spawn)
        if isinstance(flight, Report):
            return flight
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Report] = loop.create_future()

        def _done(fut: Future[Report]) -> None:
            loop.call_soon_threadsafe(_settle, waiter, fut)

        flight.add_done_callback(_done)
        try:
            return await asyncio.wait_for(waiter, deadline + _WAITER_SLACK)
        except asyncio.TimeoutError:
            return self._error_report("checks", Reason.TIMEOUT)

    # --- one evaluation --------------------------------------------------------------------
    def evaluate(
        self, checks: Sequence[Check], *, deadline: float, default_timeout: float
    ) -> Report:
        """Run ``checks`` concurrently now (no cache) and wait at most ``deadline`` seconds."""
        started = self._clock()
        observed_at = self._wall_clock()
        pending: list[tuple[Check, float, Outcome | None]] = []
        for check in checks:
            budget = min(check.timeout or default_timeout, deadline)
            with self._lock:
                previous = self._running.get(check.name)
                if previous is not None and not previous.done():
                    pending.append((check, budget, None))
                    continue
                started_one: Outcome = Future()
                started_one.set_running_or_notify_cancel()
                self._running[check.name] = started_one
            self._spawn(_bind(self._run_one, check, budget, started_one))
            pending.append((check, budget, started_one))

        results: list[CheckResult] = []
        for check, budget, outcome in pending:
            status: Status = Status.FAIL
            reason: Reason | None = Reason.TIMEOUT
            duration = budget
            if outcome is not None:
                remaining = max(0.0, budget - (self._clock() - started))
                with contextlib.suppress(FutureTimeout):
                    status, reason, duration = outcome.result(timeout=remaining)
            if status is Status.FAIL and not check.critical:
                status = Status.WARN
            results.append(
                CheckResult(
                    name=check.name,
                    status=status,
                    reason=reason,
                    duration=duration,
                    critical=check.critical,
                    tags=check.tags,
                    target=check.target,
                    component_type=check.component_type,
                    scope=check.scope,
                )
            )
        self._log_transitions(results)
        return Report(
            results=tuple(results),
            observed_at=observed_at,
            duration=self._clock() - started,
        )

    def _run_one(self, check: Check, budget: float, outcome: Outcome) -> None:
        t0 = self._clock()
        try:
            value = call_check(check, budget)
            status, reason = classify(value)
            if (
                status is Status.FAIL
                and reason is Reason.ERROR
                and self._first_warning(check, value)
            ):
                logger.warning(
                    "Health check %r returned %s; a check passes only by returning None, "
                    "True or Status.PASS (or by returning normally). Reported as error.",
                    check.name,
                    type(value).__name__,
                )
        except BaseException as exc:
            reason = classify_exception(exc)
            status = Status.FAIL
            if reason is Reason.ERROR:
                # Full detail goes to the server log only; responses carry the enum value.
                logger.warning("Health check %r raised.", check.name, exc_info=True)
        outcome.set_result((status, reason, self._clock() - t0))

    def _log_transitions(self, results: Sequence[CheckResult]) -> None:
        """Log each check's change of status or reason once, at WARNING (first run: non-pass).

        A failing shared-scope check does not fail ``/ready/`` by default, so this log line
        (and ``/status/``) is where its outage shows.
        """
        changed: list[tuple[CheckResult, tuple[Status, Reason | None]]] = []
        with self._lock:
            for result in results:
                now = (result.status, result.reason)
                before = self._last.get(result.name, (Status.PASS, None))
                self._last[result.name] = now
                if now != before:
                    changed.append((result, before))
        for result, before in changed:
            was = before[0].value + (f" ({before[1].value})" if before[1] else "")
            is_ = result.status.value + (f" ({result.reason.value})" if result.reason else "")
            logger.warning(
                "Health check %r (scope %s) is now %s; was %s.",
                result.name,
                result.scope.value,
                is_,
                was,
            )

    def _first_warning(self, check: Check, value: Any) -> bool:
        """Whether this check returning this type has not been logged yet (once per process)."""
        key = (check.name, type(value))
        with self._lock:
            if key in self._warned:
                return False
            self._warned.add(key)
            return True

    def _error_report(self, name: str, reason: Reason = Reason.ERROR) -> Report:
        result = CheckResult(
            name=name, status=Status.FAIL, reason=reason, duration=0.0, critical=True
        )
        return Report(results=(result,), observed_at=self._wall_clock(), duration=0.0)


def _bind(
    func: Callable[[Check, float, Outcome], None],
    check: Check,
    budget: float,
    outcome: Outcome,
) -> Callable[[], None]:
    return lambda: func(check, budget, outcome)


def _run_inline(target: Callable[[], None]) -> None:
    target()


def _settle(waiter: asyncio.Future[Report], flight: Future[Report]) -> None:
    if not waiter.done():
        waiter.set_result(flight.result())
