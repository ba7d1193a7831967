"""Shutdown hooks: ``@on_shutdown`` callables that run once, each with a time limit.

A hook closes what the process holds (pools, clients, background tasks).  A slow hook is
abandoned after ``ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT`` seconds and a failing one is logged, so
one bad hook can never hold the replica past its graceful timeout or hide the others.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

logger = logging.getLogger("django_arena_scale.lifecycle")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class HookResult:
    """What happened to one hook: ``ok``, ``error`` or ``timeout``, and how long it took."""

    name: str
    outcome: str
    seconds: float
    error: str | None = None


@dataclass
class _Hook:
    func: Callable[..., Any]
    timeout: float | None
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name:
            module = getattr(self.func, "__module__", "?")
            qualname = getattr(self.func, "__qualname__", repr(self.func))
            self.name = f"{module}.{qualname}"


class ShutdownHooks:
    """A registry of shutdown hooks that runs them at most once.

    Use the process-wide instance through :func:`on_shutdown` and :func:`run_shutdown_hooks`;
    tests create their own.
    """

    def __init__(self) -> None:
        self._hooks: list[_Hook] = []
        self._lock = threading.Lock()
        self._ran = False

    def __repr__(self) -> str:
        return f"<ShutdownHooks hooks={len(self._hooks)} ran={self._ran}>"

    @property
    def ran(self) -> bool:
        return self._ran

    def register(
        self, func: Callable[..., Any], *, timeout: float | None = None, name: str = ""
    ) -> Callable[..., Any]:
        if not callable(func):
            msg = f"on_shutdown() needs a callable, got {func!r}."
            raise TypeError(msg)
        if timeout is not None and not timeout > 0:
            msg = f"on_shutdown(timeout=...) must be a positive number of seconds, got {timeout!r}."
            raise ValueError(msg)
        with self._lock:
            self._hooks.append(_Hook(func, timeout, name))
        return func

    def unregister(self, func: Callable[..., Any]) -> None:
        with self._lock:
            self._hooks = [h for h in self._hooks if h.func is not func]

    def reset(self) -> None:
        """Allow another run (a forked worker inherits a registry that may have run)."""
        with self._lock:
            self._ran = False

    def run(
        self,
        *,
        sender: str = "shutdown",
        default_timeout: float | None = None,
        signal_receivers: bool = True,
    ) -> list[HookResult]:
        """Run every hook once (later calls return ``[]``), in registration order.

        ``shutdown_started`` receivers run after the decorated hooks, under the same rules.
        """
        with self._lock:
            if self._ran:
                return []
            self._ran = True
            hooks = list(self._hooks)
        metrics = sys.modules.get("django_arena_scale.metrics._prom")
        if metrics is not None:  # counted once metrics are on in this process
            metrics.drain_event("shutdown_started")
        if default_timeout is None:
            default_timeout = _setting_timeout()
        if signal_receivers:
            hooks.extend(_signal_hooks(sender))
        results = []
        for hook in hooks:
            limit = hook.timeout if hook.timeout is not None else default_timeout
            results.append(_run_one(hook, limit, sender))
        return results


def _setting_timeout() -> float:
    try:
        from django_arena_scale._conf import conf

        return conf.SHUTDOWN_HOOK_TIMEOUT
    except Exception:  # settings not configured (a bare script): keep a sane default
        return 5.0


def _signal_hooks(sender: str) -> list[_Hook]:
    from django_arena_scale.lifecycle._signals import shutdown_started

    try:
        sync_receivers, async_receivers = shutdown_started._live_receivers(sender)
    except Exception:  # the private receiver API changed: send as one time-limited step
        return [
            _Hook(lambda: shutdown_started.send_robust(sender=sender), None, "shutdown_started")
        ]
    hooks = []
    for receiver in [*sync_receivers, *async_receivers]:
        hooks.append(_Hook(_bind_receiver(receiver, sender), None, _receiver_name(receiver)))
    return hooks


def _bind_receiver(receiver: Callable[..., Any], sender: str) -> Callable[[], Any]:
    from django_arena_scale.lifecycle._signals import shutdown_started

    def call() -> Any:
        return receiver(signal=shutdown_started, sender=sender)

    return call


def _receiver_name(receiver: Callable[..., Any]) -> str:
    module = getattr(receiver, "__module__", "?")
    return f"{module}.{getattr(receiver, '__qualname__', repr(receiver))}"


def _run_one(hook: _Hook, limit: float, sender: str) -> HookResult:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            result = _call(hook.func, sender)
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
            outcome["ok"] = True
        except BaseException as exc:  # a hook must never take the shutdown down with it
            outcome["error"] = exc

    started = time.monotonic()
    # A thread per hook is the only way to bound a blocking callable; one that overruns is
    # abandoned (daemon thread) and the shutdown goes on.
    thread = threading.Thread(target=target, name=f"arena-hook:{hook.name}", daemon=True)
    thread.start()
    thread.join(limit)
    seconds = time.monotonic() - started
    if thread.is_alive():
        logger.error("Shutdown hook %s did not finish within %.1fs; abandoned.", hook.name, limit)
        return HookResult(hook.name, "timeout", seconds)
    if "error" in outcome:
        exc = outcome["error"]
        logger.error("Shutdown hook %s failed.", hook.name, exc_info=exc)
        return HookResult(hook.name, "error", seconds, type(exc).__name__)
    return HookResult(hook.name, "ok", seconds)


def _call(func: Callable[..., Any], sender: str) -> Any:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func()
    if "sender" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func(sender=sender)
    return func()


async def _await(awaitable: Any) -> Any:
    return await awaitable


_registry = ShutdownHooks()


def get_hooks() -> ShutdownHooks:
    """The process-wide hook registry."""
    return _registry


@overload
def on_shutdown(func: F, /) -> F: ...


@overload
def on_shutdown(*, timeout: float | None = None) -> Callable[[F], F]: ...


def on_shutdown(func: F | None = None, /, *, timeout: float | None = None) -> F | Callable[[F], F]:
    """Register a function (sync or async) to run once when this process shuts down.

    ``@on_shutdown`` or ``@on_shutdown(timeout=2.0)``; the default limit is
    ``ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT``.  A hook may accept a ``sender`` keyword naming
    what triggered the shutdown.
    """
    if func is not None:
        _registry.register(func, timeout=timeout)
        return func

    def decorator(f: F) -> F:
        _registry.register(f, timeout=timeout)
        return f

    return decorator


def run_shutdown_hooks(*, sender: str = "shutdown") -> list[HookResult]:
    """Run the process-wide hooks and ``shutdown_started`` receivers (once per process)."""
    return _registry.run(sender=sender)
