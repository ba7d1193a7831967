"""gunicorn server hooks.  Import them from ``gunicorn.conf.py``::

    from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401
        on_starting, post_worker_init, worker_int, worker_abort, worker_exit,
    )

* ``post_worker_init``: the worker's main loop now beats a heartbeat that ``/live/`` reads
  (a wedged worker stops beating), SIGTERM also begins the drain (so open SSE streams end
  with a reconnect event instead of being cut at ``graceful_timeout``), and the worker is
  warm-ups start (the worker turns READY once they ran).
* ``worker_int`` (SIGINT/SIGQUIT, fast stop) and ``worker_exit`` (after a graceful stop):
  begin the drain and run the ``@on_shutdown`` hooks once.
* ``worker_abort`` (SIGABRT after a worker timeout): logs every thread's stack, since a
  timed-out worker is otherwise a mystery.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any

from django_arena_scale.lifecycle.hooks import get_hooks, run_shutdown_hooks
from django_arena_scale.lifecycle.state import get_lifecycle

logger = logging.getLogger("django_arena_scale.lifecycle")

__all__ = ["on_starting", "post_worker_init", "worker_abort", "worker_exit", "worker_int"]


def on_starting(server: Any) -> None:
    """Log the graceful-shutdown timeouts the master runs with (one line, for operators)."""
    cfg = getattr(server, "cfg", None)
    if cfg is None:
        return
    logger.info(
        "django-arena-scale: graceful_timeout=%ss timeout=%ss worker_class=%s",
        getattr(cfg, "graceful_timeout", "?"),
        getattr(cfg, "timeout", "?"),
        getattr(cfg, "worker_class_str", "?"),
    )


def post_worker_init(worker: Any) -> None:
    """Start the heartbeat, make SIGTERM drain, and start the warm-ups (then READY)."""
    get_hooks().reset()
    _beat_on_notify(worker)
    _drain_on_sigterm(worker)
    _start_warmups()


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT: the worker exits right after this; drain and run the hooks first."""
    get_lifecycle().begin_drain()
    run_shutdown_hooks(sender="gunicorn.worker_int")


def worker_abort(worker: Any) -> None:
    """SIGABRT (worker timeout): log where every thread was stuck."""
    get_lifecycle().begin_drain()
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.append(f"Thread {thread.name!r}:\n" + "".join(traceback.format_stack(frame)))
    logger.error(
        "Worker %s aborted (timeout); heartbeat age %s s.\n%s",
        getattr(worker, "pid", "?"),
        get_lifecycle().heartbeat_age(),
        "\n".join(lines),
    )


def worker_exit(server: Any, worker: Any) -> None:
    """After the worker left its loop (in-flight requests done): run the shutdown hooks."""
    get_lifecycle().begin_drain()
    run_shutdown_hooks(sender="gunicorn.worker_exit")


def _beat_on_notify(worker: Any) -> None:
    # gunicorn's worker loop calls notify() on every iteration (and the uvicorn worker from
    # its server tick), so a heartbeat there stops exactly when the worker is wedged.
    lifecycle = get_lifecycle()
    original = worker.notify
    if getattr(original, "_arena_heartbeat", False):
        return

    def notify() -> None:
        lifecycle.heartbeat()
        original()

    notify._arena_heartbeat = True  # type: ignore[attr-defined]
    worker.notify = notify
    lifecycle.heartbeat()


def _drain_on_sigterm(worker: Any) -> None:
    # Only in the main thread, and only where the worker installed its own SIGTERM handler
    # (the uvicorn worker leaves SIG_DFL and drains through its server subclass instead).
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or getattr(previous, "_arena_drain", False):
        return

    def handle_term(sig: int, frame: FrameType | None) -> None:
        get_lifecycle().begin_drain()
        previous(sig, frame)

    handle_term._arena_drain = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handle_term)
    signal.siginterrupt(signal.SIGTERM, False)


def _start_warmups() -> None:
    """Start ``ARENA_SCALE_WARMUPS`` (the replica turns READY when they ran, or at once)."""
    try:
        from django_arena_scale.lifecycle.warmup import start_warmups
    except ImportError:  # an install without the probes module: nothing to wait for
        get_lifecycle().mark_ready()
        return
    start_warmups(background=True)
