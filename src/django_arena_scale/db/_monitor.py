"""Pure: which read replicas may serve reads now (reachable, not lagging), per process.

A replica's health is one probe (connect, read the replication lag) run in a helper thread
under a time limit and reused for an interval; a probe that overruns its limit counts as
"unavailable: timeout" at once and goes on in the background (its result replaces that verdict
when it lands), so a request waits at most the limit, once per interval per replica, and never
on a replica that is already known to be down.  Only one probe per replica runs at a time
(single flight).  The clock and the probe are arguments: no Django, no sleeps in unit tests.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: A probe returns the replica's lag in seconds, or raises when it cannot be reached.
Probe = Callable[[str], float]


@dataclass(frozen=True)
class ReplicaHealth:
    """The last verdict on one replica: usable or not, why not, and the lag it reported."""

    usable: bool
    reason: str | None  # None, "unavailable", "timeout" or "lagging"
    lag: float | None
    checked_at: float


class _Entry:
    __slots__ = ("done", "health", "running")

    def __init__(self) -> None:
        self.health: ReplicaHealth | None = None
        self.running = False
        self.done = threading.Event()


class ReplicaMonitor:
    """Health of read replicas by alias, probed at most once per ``interval`` per process."""

    def __init__(self, probe: Probe, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def health(self, alias: str) -> ReplicaHealth | None:
        entry = self._entries.get(alias)
        return entry.health if entry is not None else None

    def report_down(self, alias: str) -> None:
        """A connection to ``alias`` failed: skip it until its next probe."""
        with self._lock:
            entry = self._entries.setdefault(alias, _Entry())
            entry.health = ReplicaHealth(False, "unavailable", None, self._clock())

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def usable(self, alias: str, *, max_lag: float, interval: float, timeout: float) -> bool:
        """Whether ``alias`` may serve a read now, probing it first when its verdict is stale."""
        with self._lock:
            entry = self._entries.setdefault(alias, _Entry())
            health = entry.health
            fresh = health is not None and self._clock() - health.checked_at < interval
            if fresh or entry.running:
                # A probe already running is not waited on twice: the last verdict stands.
                return health is not None and health.usable
            entry.running = True
            entry.done = threading.Event()
            done = entry.done
        thread = threading.Thread(
            target=self._run, args=(alias, entry, max_lag), daemon=True, name=f"replica-{alias}"
        )
        thread.start()
        if not done.wait(timeout):
            with self._lock:
                if entry.running:
                    entry.health = ReplicaHealth(False, "timeout", None, self._clock())
        current = entry.health
        return current is not None and current.usable

    def _run(self, alias: str, entry: _Entry, max_lag: float) -> None:
        try:
            lag = float(self._probe(alias))
        except Exception:
            health = ReplicaHealth(False, "unavailable", None, self._clock())
        else:
            if lag != lag or lag > max_lag:  # nan counts as lagging
                health = ReplicaHealth(False, "lagging", lag, self._clock())
            else:
                health = ReplicaHealth(True, None, lag, self._clock())
        with self._lock:
            entry.health = health
            entry.running = False
            entry.done.set()

    def pick(
        self,
        aliases: Sequence[str],
        *,
        max_lag: float,
        interval: float,
        timeout: float,
        choose: Callable[[Sequence[str]], str] = random.choice,
    ) -> str | None:
        """One usable replica among ``aliases`` (spread at random), or None: use the primary."""
        usable = [
            alias
            for alias in aliases
            if self.usable(alias, max_lag=max_lag, interval=interval, timeout=timeout)
        ]
        return choose(usable) if usable else None
