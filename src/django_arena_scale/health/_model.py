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
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

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


class Scope(str, enum.Enum):
    """What a failing check says about this replica.

    ``replica``: this process cannot serve (its own state, a local resource); fails ``/ready/``.
    ``shared``: a dependency every replica shares (the database, a Redis, the channel layer)
    is failing; taking this replica out of rotation would not help, since every other replica
    sees the same failure and would be taken out too.  Reported in ``/status/`` and logged,
    but left out of ``/ready/`` unless ``ARENA_SCALE_READY_INCLUDE_SHARED`` opts it in.
    """

    REPLICA = "replica"
    SHARED = "shared"


#: ``ARENA_SCALE_READY_INCLUDE_SHARED``: True/False for every shared check, or the names and
#: tags of the shared checks that still decide readiness.
IncludeShared: TypeAlias = bool | Collection[str]


class Unavailable(Exception):
    """Raised by a check whose dependency answered but is not usable (reported as unavailable)."""


@dataclass(frozen=True)
class Check:
    """One named health check.

    ``critical`` checks of ``scope="replica"`` (the default) decide ``/ready/``; critical
    ``scope="shared"`` checks (the built-in database, Redis and channel-layer checks) show as
    ``fail`` in ``/status/`` and decide ``/ready/`` only when ``ARENA_SCALE_READY_INCLUDE_SHARED``
    says so; non-critical checks only show in ``/status/`` (as warn).
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
    scope: Scope = Scope.REPLICA

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
        object.__setattr__(self, "scope", as_scope(self.scope, self.name))


def as_scope(value: Any, name: str) -> Scope:
    """``value`` as a :class:`Scope`; a clear error naming the check otherwise."""
    try:
        return Scope(value)
    except ValueError:
        msg = (
            f"Check {name!r} scope should be 'replica' (this replica cannot serve) or "
            f"'shared' (a dependency every replica shares), got {value!r}."
        )
        raise ValueError(msg) from None


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
    scope: Scope = Scope.REPLICA

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

    def affects_readiness(self, include_shared: IncludeShared = False) -> bool:
        """Whether this result decides ``/ready/`` under ``include_shared``."""
        if not self.critical:
            return False
        if self.scope is Scope.REPLICA:
            return True
        if isinstance(include_shared, bool):
            return include_shared
        return self.name in include_shared or any(tag in include_shared for tag in self.tags)


@dataclass(frozen=True)
class Report:
    """All check results of one evaluation; ``observed_at`` is wall-clock time (epoch s)."""

    results: tuple[CheckResult, ...]
    observed_at: float
    duration: float

    @property
    def critical_failures(self) -> dict[str, str]:
        """Failing critical checks of either scope (``/ready/`` uses :meth:`ready_failures`)."""
        return self.ready_failures(include_shared=True)

    def ready_failures(self, include_shared: IncludeShared = False) -> dict[str, str]:
        """``{name: reason}`` of the failing checks that decide ``/ready/``."""
        return {
            r.name: (r.reason or Reason.ERROR).value
            for r in self.results
            if r.status is Status.FAIL and r.affects_readiness(include_shared)
        }

    def overall(self, include_shared: IncludeShared = False) -> Status:
        """fail if a check deciding readiness fails; warn if any other check is not pass."""
        if self.ready_failures(include_shared):
            return Status.FAIL
        if any(r.status is not Status.PASS for r in self.results):
            return Status.WARN
        return Status.PASS

    @property
    def status(self) -> Status:
        """:meth:`overall` with every critical check deciding, whatever its scope."""
        return self.overall(include_shared=True)

    def __repr__(self) -> str:
        return f"<Report status={self.status.value} checks={len(self.results)}>"
