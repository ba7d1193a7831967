"""Which checks exist: built-ins from the settings, ``ARENA_SCALE_CHECKS`` and ``@register_check``.

:func:`duplicate_check_names` and :func:`invalid_check_paths` are what the system checks call
(E004, E005) to report configuration mistakes; at probe time a dotted path that cannot be
imported becomes a check that fails with ``error`` instead of raising.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from django_arena_scale.health._model import Check, CheckFunc, Scope, as_scope

logger = logging.getLogger("django_arena_scale.health")

F = TypeVar("F", bound=Callable[[], Any])

_registered: list[Check] = []
_registered_lock = threading.Lock()


@overload
def register_check(func: F, /) -> F: ...


@overload
def register_check(
    *,
    name: str | None = ...,
    tags: Iterable[str] = ...,
    critical: bool = ...,
    timeout: float | None = ...,
    scope: Scope | str = ...,
) -> Callable[[F], F]: ...


def register_check(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    critical: bool = True,
    timeout: float | None = None,
    scope: Scope | str = Scope.REPLICA,
) -> F | Callable[[F], F]:
    """Register a custom check; use as ``@register_check`` or ``@register_check(name=...)``.

    The function (plain or ``async def``) takes no argument; it returns normally when
    healthy, may raise :class:`~django_arena_scale.health.Unavailable`, and is given
    ``timeout`` seconds.  ``scope="replica"`` (the default) means a failure makes this replica
    unready; ``scope="shared"`` marks a dependency every replica shares (see :class:`Scope`).
    """

    def decorate(f: F) -> F:
        check_name = name or f"{f.__module__}.{f.__qualname__}"
        check = Check(
            name=check_name,
            func=f,
            tags=frozenset(tags),
            critical=critical,
            timeout=timeout,
            scope=as_scope(scope, check_name),
        )
        with _registered_lock:
            # Re-registering the same function (a module imported twice) is not a duplicate.
            _registered[:] = [c for c in _registered if c.func is not f]
            _registered.append(check)
        return f

    return decorate(func) if func is not None else decorate


def unregister_check(name: str) -> None:
    """Remove checks registered under ``name`` with :func:`register_check`."""
    with _registered_lock:
        _registered[:] = [c for c in _registered if c.name != name]


def registered_checks() -> list[Check]:
    with _registered_lock:
        return list(_registered)


def _failing(exc: Exception) -> CheckFunc:
    def fail() -> None:
        raise exc

    return fail


def _load_path(path: Any) -> list[Check]:
    """Checks named by one ``ARENA_SCALE_CHECKS`` entry; raises ``ImportError``/``TypeError``."""
    from django.utils.module_loading import import_string

    obj = import_string(path) if isinstance(path, str) else path
    if isinstance(obj, Check):
        return [obj]
    if isinstance(obj, (list, tuple)) and all(isinstance(c, Check) for c in obj):
        return list(obj)
    if callable(obj):
        return [Check(name=path if isinstance(path, str) else repr(obj), func=obj)]
    msg = (
        f"ARENA_SCALE_CHECKS entry {path!r} should name a Check, a list of Checks or a "
        f"callable, got {type(obj).__name__}."
    )
    raise TypeError(msg)


def invalid_check_paths() -> dict[str, str]:
    """``ARENA_SCALE_CHECKS`` entries that cannot be loaded, mapped to why (for E005)."""
    from django_arena_scale._conf import conf

    problems: dict[str, str] = {}
    for path in conf.CHECKS:
        try:
            _load_path(path)
        except Exception as exc:
            problems[str(path)] = f"{type(exc).__name__}: {exc}"
    return problems


def custom_checks() -> list[Check]:
    from django_arena_scale._conf import conf

    checks: list[Check] = []
    for index, path in enumerate(conf.CHECKS):
        try:
            checks.extend(_load_path(path))
        except Exception as exc:
            logger.warning("ARENA_SCALE_CHECKS entry %r cannot be loaded.", path, exc_info=True)
            # A blank entry still needs a non-empty name for its failing stand-in check.
            name = str(path).strip() or f"ARENA_SCALE_CHECKS[{index}]"
            checks.append(Check(name=name, func=_failing(exc)))
    return checks


def get_checks() -> list[Check]:
    """Every check of this process: built-ins, then settings, then decorated functions."""
    from django_arena_scale.health._builtin import builtin_checks

    return [*builtin_checks(), *custom_checks(), *registered_checks()]


def duplicate_check_names(checks: Iterable[Check] | None = None) -> list[str]:
    """Check names used more than once (sorted); the system check reports them as errors."""
    counts = Counter(c.name for c in (get_checks() if checks is None else checks))
    return sorted(name for name, n in counts.items() if n > 1)
