"""Circuit breaker on pybreaker's state machine: thresholds, half-open probes, late outcomes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from django_arena_scale import ArenaScaleError
from django_arena_scale.resilience import (
    BreakerEvent,
    Outcome,
    ProviderUnavailable,
    add_listener,
    breaker_status,
    remove_listener,
)
from django_arena_scale.resilience._breaker import CircuitBreaker
from django_arena_scale.resilience._policy import BreakerOptions
from tests.llm_server import FakeClock, isolated_registry


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with isolated_registry():
        yield


def _breaker(clock: FakeClock, **options: float) -> CircuitBreaker:
    defaults: dict[str, float] = {"failure_threshold": 3, "reset_timeout": 10}
    defaults.update(options)
    return CircuitBreaker("p", BreakerOptions(**defaults), clock=clock)  # type: ignore[arg-type]


def _fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), Outcome.RETRY, "http_503")


def test_breaker_trips_at_threshold() -> None:
    """failure_threshold consecutive failures open the breaker."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 2)
    assert breaker.state == "closed"
    _fail(breaker)
    assert breaker.state == "open"


def test_breaker_success_resets_consecutive_failures() -> None:
    """A success in between restarts the failure count."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 2)
    breaker.record(breaker.admit(), Outcome.SUCCESS)
    _fail(breaker, 2)
    assert breaker.state == "closed"


def test_breaker_rejected_counts_as_success() -> None:
    """A rejected request (400...) proves the provider is up: failures restart."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 2)
    breaker.record(breaker.admit(), Outcome.REJECTED)
    assert breaker.fail_counter == 0


def test_breaker_neutral_changes_nothing() -> None:
    """A neutral outcome (cancellation) neither counts nor resets failures."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 2)
    breaker.record(breaker.admit(), Outcome.NEUTRAL)
    assert breaker.fail_counter == 2


def test_breaker_open_raises_provider_unavailable() -> None:
    """An open breaker refuses at once with retry_after = time left open."""
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(4)
    with pytest.raises(ProviderUnavailable) as info:
        breaker.admit()
    assert info.value.retry_after == pytest.approx(6)


def test_provider_unavailable_is_package_error() -> None:
    """ProviderUnavailable derives from the package base error and carries retry_at."""
    exc = ProviderUnavailable("p", 5.0)
    assert isinstance(exc, ArenaScaleError)
    assert exc.retry_at.tzinfo is not None


def test_breaker_half_open_after_reset_timeout() -> None:
    """After reset_timeout the next call is admitted as a probe."""
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(10)
    ticket = breaker.admit()
    assert ticket.probe is not None


def test_breaker_half_open_one_probe_at_a_time() -> None:
    """While a probe runs, other calls are short-circuited."""
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(10)
    breaker.admit()
    with pytest.raises(ProviderUnavailable, match="half-open"):
        breaker.admit()


def test_breaker_probe_success_closes() -> None:
    """A successful probe closes the breaker (success_threshold=1)."""
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(10)
    breaker.record(breaker.admit(), Outcome.SUCCESS)
    assert breaker.state == "closed"


def test_breaker_success_threshold() -> None:
    """With success_threshold=2 the breaker closes after the second successful probe."""
    clock = FakeClock()
    breaker = _breaker(clock, success_threshold=2)
    _fail(breaker, 3)
    clock.advance(10)
    breaker.record(breaker.admit(), Outcome.SUCCESS)
    assert breaker.state == "half-open"
    breaker.record(breaker.admit(), Outcome.SUCCESS)
    assert breaker.state == "closed"


def test_breaker_probe_failure_reopens() -> None:
    """A failed probe opens the breaker for another reset_timeout."""
    clock = FakeClock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.advance(10)
    _fail(breaker)
    assert (breaker.state, breaker.retry_after) == ("open", 10)


def test_breaker_stale_probe_lease_expires() -> None:
    """A probe that never reports back stops blocking others after probe_lease."""
    clock = FakeClock()
    breaker = _breaker(clock, probe_lease=5)
    _fail(breaker, 3)
    clock.advance(10)
    breaker.admit()
    clock.advance(5)
    assert breaker.admit().probe is not None


def test_breaker_late_outcome_ignored() -> None:
    """An outcome of a call admitted before a transition does not count in the new state."""
    clock = FakeClock()
    breaker = _breaker(clock)
    slow = breaker.admit()
    _fail(breaker, 3)
    clock.advance(10)
    probe = breaker.admit()
    breaker.record(slow, Outcome.SUCCESS)
    assert breaker.state == "half-open"
    breaker.record(probe, Outcome.SUCCESS)
    assert breaker.state == "closed"


def test_breaker_counters() -> None:
    """calls, failures and short_circuits are counted per breaker."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 3)
    with pytest.raises(ProviderUnavailable):
        breaker.admit()
    counters = breaker.counters.as_dict()
    assert (counters["calls"], counters["failures"], counters["short_circuits"]) == (3, 3, 1)


def test_breaker_transition_event_and_log(caplog: pytest.LogCaptureFixture) -> None:
    """A transition is logged (name and states only) and sent to listeners."""
    events: list[BreakerEvent] = []
    add_listener(events.append)
    try:
        breaker = _breaker(FakeClock())
        with caplog.at_level(logging.WARNING, logger="django_arena_scale.resilience"):
            _fail(breaker, 3)
    finally:
        remove_listener(events.append)
    changes = [e for e in events if e.kind == "state_change"]
    assert [(e.old_state, e.new_state) for e in changes] == [("closed", "open")]
    assert caplog.messages == ["circuit breaker 'p': closed -> open"]


def test_breaker_listener_error_does_not_break_calls() -> None:
    """A failing listener is logged, never raised into the call."""

    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("metrics down")

    add_listener(broken)
    try:
        breaker = _breaker(FakeClock())
        _fail(breaker, 3)
    finally:
        remove_listener(broken)
    assert breaker.state == "open"


def test_breaker_repr() -> None:
    """The repr names the breaker, its state and failure count."""
    breaker = _breaker(FakeClock())
    _fail(breaker)
    assert repr(breaker) == "<CircuitBreaker 'p' state=closed failures=1>"


def test_breaker_reset_closes() -> None:
    """reset() closes the breaker and zeroes the counters."""
    breaker = _breaker(FakeClock())
    _fail(breaker, 3)
    breaker.reset()
    assert (breaker.state, breaker.counters.calls) == ("closed", 0)


def test_breaker_status_warn_when_open() -> None:
    """breaker_status() reports an open breaker as warn with its counters."""
    from django_arena_scale.resilience._registry import get_breaker

    breaker = get_breaker("openai", BreakerOptions(failure_threshold=1))
    _fail(breaker)
    status = breaker_status()["openai"]
    assert (status["status"], status["state"], status["failures"]) == ("warn", "open", 1)


def test_breaker_status_pass_when_closed() -> None:
    """A closed breaker is pass, with every counter the /status/ contract names."""
    from django_arena_scale.resilience._registry import get_breaker

    get_breaker("openai")
    status = breaker_status()["openai"]
    assert status["status"] == "pass"
    assert {"calls", "failures", "retries", "short_circuits", "fallbacks"} <= set(status)


def test_breaker_status_lists_guarded_providers_before_first_call() -> None:
    """Decorating creates the breakers, so /status/ shows them before any call."""
    from django_arena_scale.resilience import llm_call

    llm_call("openai", fallbacks=["azure"])
    assert sorted(breaker_status()) == ["azure", "openai"]


def test_breaker_one_probe_among_racing_threads() -> None:
    """16 threads racing into a half-open breaker: exactly one is admitted as the probe."""
    import threading

    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1)
    _fail(breaker)
    clock.advance(1)
    admitted = []
    barrier = threading.Barrier(16, timeout=10)

    def worker() -> None:
        barrier.wait()
        with contextlib.suppress(ProviderUnavailable):
            admitted.append(breaker.admit())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 1
    assert breaker.counters.short_circuits == 15
