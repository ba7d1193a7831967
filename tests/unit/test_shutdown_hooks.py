"""Shutdown hooks: run once, each time-limited, errors logged and never raised."""

from __future__ import annotations

import logging
import threading

import pytest

from django_arena_scale.lifecycle import on_shutdown, shutdown_started
from django_arena_scale.lifecycle._hooks import ShutdownHooks, get_hooks


def test_hooks_run_in_registration_order() -> None:
    """Hooks run in the order they were registered."""
    hooks = ShutdownHooks()
    calls: list[str] = []
    hooks.register(lambda: calls.append("a"))
    hooks.register(lambda: calls.append("b"))
    hooks.run(default_timeout=1.0, signal_receivers=False)
    assert calls == ["a", "b"]


def test_hooks_run_only_once() -> None:
    """A second run is a no-op returning no results."""
    hooks = ShutdownHooks()
    calls: list[int] = []
    hooks.register(lambda: calls.append(1))
    hooks.run(default_timeout=1.0, signal_receivers=False)
    second = hooks.run(default_timeout=1.0, signal_receivers=False)
    assert (calls, second) == ([1], [])


def test_hooks_run_once_under_concurrent_calls() -> None:
    """Two threads triggering the shutdown at once still run each hook once."""
    hooks = ShutdownHooks()
    calls: list[int] = []
    hooks.register(lambda: calls.append(1))
    threads = [
        threading.Thread(
            target=hooks.run, kwargs={"default_timeout": 1.0, "signal_receivers": False}
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]


def test_hooks_exception_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A failing hook is logged and the next hook still runs."""
    hooks = ShutdownHooks()
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("pool already closed")

    hooks.register(boom)
    hooks.register(lambda: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger="django_arena_scale.lifecycle"):
        results = hooks.run(default_timeout=1.0, signal_receivers=False)
    assert [r.outcome for r in results] == ["error", "ok"]
    assert calls == ["after"]
    assert "boom" in caplog.text


def test_hooks_slow_hook_is_abandoned_after_its_limit() -> None:
    """A hook blocking past its time limit is reported as timeout and the shutdown goes on."""
    hooks = ShutdownHooks()
    release = threading.Event()
    hooks.register(lambda: release.wait(10), timeout=0.05)
    hooks.register(lambda: None)
    results = hooks.run(default_timeout=1.0, signal_receivers=False)
    release.set()
    assert [r.outcome for r in results] == ["timeout", "ok"]


def test_hooks_async_hook_is_awaited() -> None:
    """A coroutine function hook is run to completion."""
    hooks = ShutdownHooks()
    calls: list[str] = []

    async def close_pool() -> None:
        calls.append("closed")

    hooks.register(close_pool)
    results = hooks.run(default_timeout=1.0, signal_receivers=False)
    assert (calls, results[0].outcome) == (["closed"], "ok")


def test_hooks_sender_keyword_is_passed() -> None:
    """A hook accepting ``sender`` learns what triggered the shutdown."""
    hooks = ShutdownHooks()
    seen: list[str] = []
    hooks.register(lambda sender: seen.append(sender))
    hooks.run(sender="SIGTERM", default_timeout=1.0, signal_receivers=False)
    assert seen == ["SIGTERM"]


def test_hooks_register_rejects_non_callable() -> None:
    """Registering something that is not callable names the value."""
    with pytest.raises(TypeError, match="'nope'"):
        ShutdownHooks().register("nope")  # type: ignore[arg-type]


def test_hooks_register_rejects_non_positive_timeout() -> None:
    """A zero time limit is refused with the offending value."""
    with pytest.raises(ValueError, match="0"):
        ShutdownHooks().register(lambda: None, timeout=0)


def test_hooks_signal_receivers_run_as_hooks() -> None:
    """``shutdown_started`` receivers run once with the sender."""
    hooks = ShutdownHooks()
    seen: list[str] = []

    def receiver(sender: str, **kwargs: object) -> None:
        seen.append(sender)

    shutdown_started.connect(receiver)
    try:
        hooks.run(sender="gunicorn.worker_exit", default_timeout=1.0)
    finally:
        shutdown_started.disconnect(receiver)
    assert seen == ["gunicorn.worker_exit"]


def test_hooks_failing_signal_receiver_is_logged() -> None:
    """An exception in a receiver is reported as error, not raised."""
    hooks = ShutdownHooks()

    def receiver(**kwargs: object) -> None:
        raise OSError("socket gone")

    shutdown_started.connect(receiver)
    try:
        results = hooks.run(default_timeout=1.0)
    finally:
        shutdown_started.disconnect(receiver)
    assert [r.outcome for r in results] == ["error"]


def test_on_shutdown_decorator_registers_globally() -> None:
    """``@on_shutdown`` and ``@on_shutdown(timeout=...)`` add to the process registry."""

    @on_shutdown
    def plain() -> None: ...

    @on_shutdown(timeout=2.0)
    def limited() -> None: ...

    registry = get_hooks()
    names = [h.func for h in registry._hooks]
    registry.unregister(plain)
    registry.unregister(limited)
    assert plain in names
    assert limited in names


def test_hooks_default_timeout_comes_from_setting(settings: object) -> None:
    """Without an explicit limit the hook gets ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT."""
    settings.ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT = 0.05  # type: ignore[attr-defined]
    hooks = ShutdownHooks()
    release = threading.Event()
    hooks.register(lambda: release.wait(10))
    results = hooks.run(signal_receivers=False)
    release.set()
    assert results[0].outcome == "timeout"
