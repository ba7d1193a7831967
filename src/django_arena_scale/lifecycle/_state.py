"""The replica's lifecycle: STARTING -> READY -> DRAINING, plus liveness bookkeeping.

Pure Python (no Django import): the clock and the drain-file path are injected, so the unit
tests need no sleeps.  One :class:`Lifecycle` per process, returned by :func:`get_lifecycle`.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django_arena_scale.lifecycle import _drain as drain

Clock = Callable[[], float]
Warmup = Callable[[], Any]
W = TypeVar("W", bound=Callable[[], Any])

logger = logging.getLogger("django_arena_scale.lifecycle")


class State(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class Lifecycle:
    """Thread-safe lifecycle state of one process.

    ``state`` is DRAINING when :meth:`begin_drain` was called or the drain file exists
    (checked with one ``stat`` per call, no caching, so ``rm`` takes effect at once).
    """

    def __init__(
        self,
        *,
        drain_file: str | None = None,
        drain_file_provider: Callable[[], str | None] | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._drain_file = drain_file
        self._drain_file_provider = drain_file_provider
        self._ready = False
        self._draining = False
        self._broken: str | None = None
        self._last_heartbeat: float | None = None
        self.started_at = wall_clock()
        self._started_mono = clock()
        self._warmup_pid: int | None = None
        self._warmups_done = False
        self.warmup_failures: list[str] = []

    def __repr__(self) -> str:
        return f"<Lifecycle state={self.state.value}>"

    # --- readiness ----------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self._draining or self.drain_file_present():
            return State.DRAINING
        return State.READY if self._ready else State.STARTING

    @property
    def drain_file(self) -> str | None:
        """The explicit drain-file path, else the provider's (``ARENA_SCALE_DRAIN_FILE``)."""
        if self._drain_file is not None or self._drain_file_provider is None:
            return self._drain_file
        return self._drain_file_provider()

    @drain_file.setter
    def drain_file(self, path: str | None) -> None:
        self._drain_file = path

    def drain_file_present(self) -> bool:
        return drain.present(self.drain_file)

    def mark_ready(self) -> None:
        with self._lock:
            self._ready = True

    def begin_drain(self) -> None:
        with self._lock:
            self._draining = True

    def end_drain(self) -> None:
        """Leave DRAINING set by :meth:`begin_drain` (a present drain file still wins)."""
        with self._lock:
            self._draining = False

    @property
    def draining_requested(self) -> bool:
        return self._draining

    # --- warm-ups ------------------------------------------------------------------------
    def claim_warmups(self) -> bool:
        """True exactly once per process: the caller must then run the warm-ups.

        Keyed by pid, so a worker forked while its parent was still warming up claims again
        (the parent's warm-up thread does not exist in the child).
        """
        with self._lock:
            if self._ready or self._warmup_pid == os.getpid():
                return False
            self._warmup_pid = os.getpid()
            return True

    @property
    def warmups_claimed(self) -> bool:
        return self._ready or self._warmup_pid == os.getpid()

    @property
    def warmups_done(self) -> bool:
        return self._warmups_done

    def run_warmups(self, warmups: Iterable[Warmup]) -> None:
        """Run ``warmups`` in order, then become READY.

        A failing warm-up is logged and named in :attr:`warmup_failures` but does not block
        readiness: the readiness checks, not the warm-ups, decide whether dependencies work.
        """
        failures: list[str] = []
        for warmup in warmups:
            try:
                warmup()
            except Exception:
                name = _callable_name(warmup)
                logger.exception("Warm-up %s failed; continuing.", name)
                failures.append(name)
        with self._lock:
            self.warmup_failures = failures
            self._warmups_done = True
            self._ready = True

    # --- liveness -----------------------------------------------------------------------
    def mark_broken(self, reason: str) -> None:
        """Declare the process unrecoverable: /live/ answers 503 until it is restarted."""
        with self._lock:
            self._broken = reason

    @property
    def broken(self) -> str | None:
        return self._broken

    def heartbeat(self) -> None:
        self._last_heartbeat = self._clock()

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat, or None if no heartbeat was ever recorded."""
        last = self._last_heartbeat
        return None if last is None else self._clock() - last

    def is_live(self, heartbeat_timeout: float) -> bool:
        if self._broken is not None:
            return False
        age = self.heartbeat_age()
        return age is None or age <= heartbeat_timeout

    def uptime(self) -> float:
        return self._clock() - self._started_mono


def _callable_name(func: Any) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}" if module else str(qualname)


_warmups: list[Warmup] = []
_warmups_lock = threading.Lock()


def register_warmup(func: W) -> W:
    """Register a callable run (once per process) before the replica becomes READY.

    Usable as a decorator.  Registering the same callable twice runs it once.
    """
    with _warmups_lock:
        if func not in _warmups:
            _warmups.append(func)
    return func


def unregister_warmup(func: Warmup) -> None:
    with _warmups_lock:
        if func in _warmups:
            _warmups.remove(func)


def registered_warmups() -> Sequence[Warmup]:
    with _warmups_lock:
        return list(_warmups)


_lifecycle: Lifecycle | None = None
_lifecycle_lock = threading.Lock()


def get_lifecycle() -> Lifecycle:
    """The process-wide lifecycle (created on first use)."""
    global _lifecycle
    if _lifecycle is None:
        with _lifecycle_lock:
            if _lifecycle is None:
                _lifecycle = Lifecycle(drain_file_provider=drain.settings_path)
    return _lifecycle


def reset_lifecycle(lifecycle: Lifecycle | None = None) -> Lifecycle:
    """Replace the process-wide lifecycle (tests, and a forked worker starting afresh)."""
    global _lifecycle
    with _lifecycle_lock:
        _lifecycle = lifecycle or Lifecycle(drain_file_provider=drain.settings_path)
        return _lifecycle
