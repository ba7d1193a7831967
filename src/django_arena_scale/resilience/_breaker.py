"""Circuit breakers on pybreaker's state machine, without pybreaker holding a lock over calls.

pybreaker's ``call()`` holds the breaker's lock for the whole wrapped call (so concurrent calls
serialise) and its async path needs Tornado.  Here a call is *admitted* by reading the state
(lock-free while closed), runs with no lock held, and its outcome is *replayed* afterwards
through ``pybreaker.CircuitBreaker.call`` on a function that returns or raises at once, so
pybreaker's counters, thresholds and transitions stay the single source of truth.  The
open -> half-open move is timed with an injectable monotonic clock (pybreaker's own check uses
the wall clock), and every transition bumps an epoch so that outcomes of calls admitted before
a transition (late results) do not count in the new state.

Only pybreaker's public API is used: the constructor (``fail_max``, ``reset_timeout``,
``success_threshold``, ``listeners``, ``state_storage``, ``throw_new_error_on_trip``), a
``CircuitMemoryStorage`` handed to it and kept here (its ``state`` and ``counter`` are read on
the hot path, ``reset_counter()`` on reset), ``current_state``, ``fail_counter``, ``call()``,
``open()``, ``half_open()``, ``close()`` and a ``CircuitBreakerListener`` for transitions.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pybreaker

from django_arena_scale.resilience import _events
from django_arena_scale.resilience._classify import Outcome
from django_arena_scale.resilience._errors import ProviderUnavailable
from django_arena_scale.resilience._events import BreakerEvent, emit
from django_arena_scale.resilience._policy import BreakerOptions

if TYPE_CHECKING:
    from django_arena_scale.resilience._coordination import RedisCoordinator

__all__ = ["STATES", "CircuitBreaker", "Counters", "Ticket"]

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
STATES = (CLOSED, OPEN, HALF_OPEN)

Clock = Callable[[], float]
_tokens = itertools.count(1)


class _ReplayedFailure(Exception):
    """Stands for a provider failure while pybreaker records it (the real error stays intact)."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _ReplayedFailure


class Counters:
    """Per-breaker counters (monotonic totals since the process started or ``reset``)."""

    __slots__ = (
        "_lock",
        "calls",
        "failures",
        "fallbacks",
        "neutral",
        "rejected",
        "retries",
        "short_circuits",
        "successes",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.rejected = 0
        self.neutral = 0
        self.retries = 0
        self.short_circuits = 0
        self.fallbacks = 0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {name: getattr(self, name) for name in self.__slots__ if name != "_lock"}

    def __repr__(self) -> str:
        return f"<Counters {self.as_dict()}>"


class Ticket:
    """Admission of one attempt: remembers the epoch (and probe token) to record against."""

    __slots__ = ("breaker", "epoch", "probe")

    def __init__(self, breaker: CircuitBreaker, epoch: int, probe: str | None) -> None:
        self.breaker = breaker
        self.epoch = epoch
        self.probe = probe

    def __repr__(self) -> str:
        return f"<Ticket {self.breaker.name!r} epoch={self.epoch} probe={self.probe is not None}>"


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: CircuitBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.owner._on_transition(old_state.name if old_state is not None else None, new_state.name)


class CircuitBreaker:
    """One provider's (or provider+key's) breaker: local state, optionally fleet-coordinated."""

    def __init__(
        self,
        name: str,
        options: BreakerOptions | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.options = options or BreakerOptions()
        self.counters = Counters()
        self.coordinator: RedisCoordinator | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch = 0
        self._open_until = 0.0
        self._remote_open_until = 0.0
        self._next_open_duration: float | None = None
        self._opened_remotely = False
        self._probe_since: float | None = None
        self._pending: list[Callable[[], None]] = []
        # Our own handle on pybreaker's storage: read on the hot path (one attribute read
        # instead of pybreaker's two properties) and reset by reset().
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=self.options.failure_threshold,
            reset_timeout=self.options.reset_timeout,
            success_threshold=self.options.success_threshold,
            listeners=[_Listener(self)],
            name=name,
            state_storage=self._storage,
            throw_new_error_on_trip=True,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} state={self.state} failures={self._cb.fail_counter}>"

    # --- state -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (open past its timeout reads half-open)."""
        state: str = self._cb.current_state
        if state == OPEN and self._clock() >= self._open_until:
            return HALF_OPEN
        if state == CLOSED and self._remote_open_until > self._clock():
            return OPEN
        return state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker admits a probe (0 when not open)."""
        until = max(self._open_until, self._remote_open_until)
        return max(0.0, until - self._clock())

    @property
    def fail_counter(self) -> int:
        return int(self._cb.fail_counter)

    # --- admission and recording -----------------------------------------------------------

    def admit(self) -> Ticket:
        """Admit one attempt or raise :class:`ProviderUnavailable` at once (no I/O when closed)."""
        coordinator = self.coordinator
        if coordinator is not None:
            coordinator.maybe_refresh()
        remote = self._remote_open_until
        if self._storage.state == CLOSED and (remote == 0.0 or remote <= self._clock()):
            counters = self.counters
            with counters._lock:
                counters.calls += 1
            return Ticket(self, self._epoch, None)
        return self._admit_slow()

    def _admit_slow(self) -> Ticket:
        short: tuple[float, str] | None = None
        probe: str | None = None
        with self._lock:
            now = self._clock()
            state = self._cb.current_state
            if state != OPEN and self._remote_open_until > now:
                self._open(self._remote_open_until - now, remote=True)
                state = OPEN
            if state == OPEN:
                if now < self._open_until:
                    short = (self._open_until - now, "open")
                else:
                    self._cb.half_open()
                    state = HALF_OPEN
            if state == HALF_OPEN and short is None:
                busy = self._probe_since is not None and (
                    now - self._probe_since < self.options.probe_lease
                )
                if busy:
                    short = (min(1.0, self.options.probe_lease), "half-open")
                else:
                    self._probe_since = now
                    probe = f"{os.getpid()}-{next(_tokens)}"
            epoch = self._epoch
        self._flush()
        if short is None and probe is not None and self.coordinator is not None:
            granted = self.coordinator.acquire_probe(self.name, probe, self.options.probe_lease)
            if granted is False:
                with self._lock:
                    self._probe_since = None
                short = (min(1.0, self.options.probe_lease), "half-open")
        if short is not None:
            self.counters.add("short_circuits")
            emit(BreakerEvent("short_circuit", self.name, reason=short[1]))
            raise ProviderUnavailable(self.name, short[0], reason=short[1])
        self.counters.add("calls")
        return Ticket(self, epoch, probe)

    def record(self, ticket: Ticket, outcome: Outcome, reason: str = "") -> None:
        """Record an attempt's outcome; late outcomes (admitted before a transition) are ignored."""
        if _events.observing:
            emit(BreakerEvent("outcome", self.name, reason=outcome.value))
        if outcome is Outcome.SUCCESS:
            counters = self.counters
            with counters._lock:
                counters.successes += 1
            # Hot path: a success on a healthy closed breaker changes nothing in pybreaker.
            storage = self._storage
            if (
                ticket.probe is None
                and ticket.epoch == self._epoch
                and storage.counter == 0
                and storage.state == CLOSED
            ):
                return
        elif outcome.is_failure:
            self.counters.add("failures")
            emit(BreakerEvent("failure", self.name, reason=reason))
        elif outcome is Outcome.REJECTED:
            self.counters.add("rejected")
        else:
            self.counters.add("neutral")
        if outcome is not Outcome.NEUTRAL:
            with self._lock:
                if ticket.epoch == self._epoch:
                    with contextlib.suppress(_ReplayedFailure, pybreaker.CircuitBreakerError):
                        self._cb.call(_fail if outcome.is_failure else _succeed)
        if ticket.probe is not None:
            with self._lock:
                self._probe_since = None
            if self.coordinator is not None:
                self.coordinator.release_probe(self.name, ticket.probe)
        self._flush()

    # --- transitions -----------------------------------------------------------------------

    def _open(self, seconds: float, *, remote: bool) -> None:
        """Trip now for ``seconds`` (caller holds ``self._lock``)."""
        self._next_open_duration = seconds
        self._opened_remotely = remote
        self._cb.open()

    def _on_transition(self, old: str | None, new: str) -> None:
        # Runs inside pybreaker's lock (and ours): only bookkeeping here, I/O goes to _pending.
        self._epoch += 1
        now = self._clock()
        coordinator = self.coordinator
        if new == OPEN:
            duration = self._next_open_duration
            if duration is None:
                duration = self.options.reset_timeout
                self._opened_remotely = False
            self._next_open_duration = None
            self._open_until = now + duration
            if coordinator is not None and not self._opened_remotely:
                self._pending.append(lambda: coordinator.publish_open(self.name, duration))
        elif new == CLOSED:
            self._open_until = 0.0
            self._remote_open_until = 0.0
            self._opened_remotely = False
            if coordinator is not None:
                self._pending.append(lambda: coordinator.publish_closed(self.name))
        event = BreakerEvent("state_change", self.name, old_state=old, new_state=new)
        self._pending.append(lambda: emit(event))

    def _flush(self) -> None:
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, []
        for action in pending:
            action()

    # --- coordination hooks (called by the coordinator) ------------------------------------

    def apply_remote(self, seconds_open: float | None) -> float | None:
        """Take the fleet's view: open for ``seconds_open`` more (None: no remote flag).

        Returns the seconds this breaker is still open after a local trip that the fleet has
        not heard of (so the coordinator republishes it after a Redis outage), else None.
        """
        now = self._clock()
        if seconds_open is not None and seconds_open > 0:
            self._remote_open_until = now + seconds_open
            # Trip now rather than at the next call, so that when the flag expires this replica
            # is half-open too and waits for the fleet's probe lease instead of calling freely.
            if self._cb.current_state == CLOSED:
                with self._lock:
                    if self._cb.current_state == CLOSED:
                        self._open(seconds_open, remote=True)
                self._flush()
            return None
        self._remote_open_until = 0.0
        if self._cb.current_state == OPEN and not self._opened_remotely and now < self._open_until:
            return self._open_until - now
        return None

    # --- manual control --------------------------------------------------------------------

    def reset(self) -> None:
        """Close the breaker and zero its counters (for tests and operators)."""
        with self._lock:
            if self._cb.current_state != CLOSED:
                self._cb.close()
            self._storage.reset_counter()
            self._remote_open_until = 0.0
            self._probe_since = None
            self.counters = Counters()
        self._flush()

    def trip(self, seconds: float | None = None) -> None:
        """Open the breaker now for ``seconds`` (default ``reset_timeout``), e.g. by an operator."""
        with self._lock:
            self._next_open_duration = seconds
            self._opened_remotely = False
            self._cb.open()
        self._flush()

    def snapshot(self) -> dict[str, Any]:
        """State, retry delay and counters; no I/O."""
        data: dict[str, Any] = {
            "state": self.state,
            "failure_count": self.fail_counter,
            "retry_after": round(self.retry_after, 3),
        }
        data.update(self.counters.as_dict())
        return data
