"""Lifecycle state (STARTING -> READY -> DRAINING), drain control and shutdown hooks."""

from __future__ import annotations

from django_arena_scale.lifecycle.state import (
    Lifecycle,
    State,
    get_lifecycle,
    register_warmup,
    reset_lifecycle,
    unregister_warmup,
)

__all__ = [
    "Lifecycle",
    "State",
    "begin_drain",
    "get_lifecycle",
    "heartbeat",
    "mark_broken",
    "register_warmup",
    "reset_lifecycle",
    "start_warmups",
    "unregister_warmup",
]


def begin_drain() -> None:
    """Put this process in DRAINING: /ready/ and /health/ answer 503 from now on."""
    get_lifecycle().begin_drain()


def mark_broken(reason: str) -> None:
    """Declare this process unrecoverable: /live/ answers 503 so it gets restarted."""
    get_lifecycle().mark_broken(reason)


def heartbeat() -> None:
    """Record that the worker's main loop is alive (a stale heartbeat fails /live/)."""
    get_lifecycle().heartbeat()


def start_warmups(*, background: bool = True) -> bool:
    """Run the registered warm-ups once per process, then become READY (see ``warmup.py``)."""
    from django_arena_scale.lifecycle.warmup import start_warmups as _start

    return _start(background=background)


# --- graceful shutdown ----------------------------------------------------------------------
from django_arena_scale.lifecycle.hooks import on_shutdown, run_shutdown_hooks  # noqa: E402
from django_arena_scale.lifecycle.signals import (  # noqa: E402
    install_signal_handlers,
    shutdown_started,
)

__all__ += [
    "install_signal_handlers",
    "on_shutdown",
    "run_shutdown_hooks",
    "shutdown_started",
]
