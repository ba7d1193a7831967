"""Lifecycle state (STARTING -> READY -> DRAINING), drain control, drain-aware streams and
shutdown hooks.

The names exported here are the public API; the modules inside are private, except the
server glue named by dotted path in server configs: :mod:`django_arena_scale.lifecycle.gunicorn`
(the gunicorn hooks) and :mod:`django_arena_scale.lifecycle.uvicorn` (``UvicornWorker``).
"""

from __future__ import annotations

from django_arena_scale.lifecycle._state import (
    Lifecycle,
    State,
    get_lifecycle,
    register_warmup,
    reset_lifecycle,
    unregister_warmup,
)
from django_arena_scale.lifecycle._streams import (
    DrainAwareConsumerMixin,
    drain_aware_sse,
    drain_aware_sse_sync,
    reconnect_event,
)

__all__ = [
    "DrainAwareConsumerMixin",
    "Lifecycle",
    "State",
    "begin_drain",
    "drain_aware_sse",
    "drain_aware_sse_sync",
    "get_lifecycle",
    "heartbeat",
    "mark_broken",
    "reconnect_event",
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
    """Run the registered warm-ups once per process, then become READY (see ``_warmup.py``)."""
    from django_arena_scale.lifecycle._warmup import start_warmups as _start

    return _start(background=background)


# --- graceful shutdown ----------------------------------------------------------------------
from django_arena_scale.lifecycle._hooks import on_shutdown, run_shutdown_hooks  # noqa: E402
from django_arena_scale.lifecycle._signals import (  # noqa: E402
    install_signal_handlers,
    install_signal_handlers_from_settings,
    shutdown_started,
)

__all__ += [
    "install_signal_handlers",
    "install_signal_handlers_from_settings",
    "on_shutdown",
    "run_shutdown_hooks",
    "shutdown_started",
]
