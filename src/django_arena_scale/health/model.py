"""The health check model: :class:`Check`, its result, and the fixed status/reason enums.

Pure Python (no Django import).  A check is a callable (plain or ``async def``) that returns
normally (``None``, ``True`` or :data:`Status.PASS`) when the dependency is usable.  It may raise
:class:`Unavailable` to say "the dependency answered: not usable", or return
:data:`Status.WARN` / ``False`` / :data:`Status.FAIL`.  Checks fail closed: any other return
value is reported as ``error``, any other exception as ``error`` without its text, and a check
that does not finish within its timeout as ``timeout``.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

CheckFunc = Callable[[], Any]


class Status(str, enum.Enum):
    """IETF health+json statuses."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class Reason(str, enum.Enum):
    """Why a probe failed.  The only failure texts a probe ever returns."""

    TIMEOUT = "timeout"
    ERROR = "error"
    UNAVAILABLE = "unavailable"
    DRAINING = "draining"
    STARTING = "starting"


class Unavailable(Exception):
    """Raised by a check whose dependency answered but is not usable (reported as unavailable)."""


@dataclass(frozen=True)
class Check:
    """One named health check.

    ``critical`` checks decide ``/ready/``; the others only show in ``/status/`` (as warn).
    ``timeout`` (seconds) falls back to ``ARENA_SCALE_CHECK_TIMEOUT`` when ``None``.
    ``target`` is an optional description (e.g. a URL) shown redacted in ``/status/``.
    """

    name: str
    func: CheckFunc = field(repr=False)
    tags: frozenset[str] = frozenset()
    critical: bool = True
    timeout: float | None = None
    target: str | None = field(default=None, repr=False)
    component_type: str = "component"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            msg = f"Check name should be a non-empty string, got {self.name!r}."
            raise ValueError(msg)
        if not callable(self.func):
            msg = f"Check {self.name!r} needs a callable, got {self.func!r}."
            raise TypeError(msg)
        if inspect.isgeneratorfunction(self.func) or inspect.isasyncgenfunction(self.func):
            msg = (
                f"Check {self.name!r} is a generator function ({self.func!r}); a check is a "
                "plain function or an 'async def' coroutine function that returns (or raises) "
                "once."
            )
            raise TypeError(msg)
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            msg = f"Check {self.name!r} timeout should be a positive number, got {self.timeout!r}."
            raise ValueError(msg)
        if not isinstance(self.tags, frozenset):
            object.__setattr__(self, "tags", frozenset(_as_tags(self.tags)))


def _as_tags(tags: Iterable[str] | str) -> Iterable[str]:
    return (tags,) if isinstance(tags, str) else tags


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check in one evaluation (``duration`` in seconds)."""

    name: str
    status: Status
    reason: Reason | None
    duration: float
    critical: bool
    tags: frozenset[str] = frozenset()
    target: str | None = None
    component_type: str = "component"

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL


@dataclass(frozen=True)
class Report:
    """All check results of one evaluation; ``observed_at`` is wall-clock time (epoch s)."""

    results: tuple[CheckResult, ...]
    observed_at: float
    duration: float

    @property
    def critical_failures(self) -> dict[str, str]:
        return {
            r.name: (r.reason or Reason.ERROR).value
            for r in self.results
            if r.critical and r.status is Status.FAIL
        }

    @property
    def status(self) -> Status:
        if self.critical_failures:
            return Status.FAIL
        if any(r.status is not Status.PASS for r in self.results):
            return Status.WARN
        return Status.PASS

    def __repr__(self) -> str:
        return f"<Report status={self.status.value} checks={len(self.results)}>"
