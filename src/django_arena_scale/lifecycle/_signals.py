"""Shutdown signals: the Django ``shutdown_started`` signal and opt-in OS signal handlers.

OS handlers are installed only on request: by a server entry point calling
:func:`install_signal_handlers`, or by :func:`install_signal_handlers_from_settings` when
``ARENA_SCALE_INSTALL_SIGNAL_HANDLERS`` is true.  Never from ``AppConfig.ready()``: a library
that grabs SIGTERM behind the server's back breaks the server's own graceful shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_arena_scale.lifecycle")

#: Sent once when the process starts shutting down (after it entered DRAINING).  Each
#: receiver runs like an ``@on_shutdown`` hook: once, with the per-hook time limit, and an
#: exception is logged, never raised.  ``sender`` is the string naming the trigger
#: (``"SIGTERM"``, ``"gunicorn.worker_exit"``, ...).
shutdown_started = Signal()

Handler = Callable[[int, FrameType | None], Any] | int | None

_installed: dict[int, Handler] = {}
_install_lock = threading.Lock()


def install_signal_handlers(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    *,
    run_hooks: bool = True,
) -> list[int]:
    """Make the given OS signals begin the drain (and run the shutdown hooks) first.

    The previous handler is chained afterwards, so the server still shuts down the way it
    would have.  Returns the signals handled.  Only the main thread can install handlers;
    calling this elsewhere raises ``ValueError`` like :func:`signal.signal` does.
    """
    handled: list[int] = []
    with _install_lock:
        for signum in signals:
            if signum in _installed:
                handled.append(signum)
                continue
            previous = signal.getsignal(signum)
            signal.signal(signum, _make_handler(signum, previous, run_hooks=run_hooks))
            _installed[signum] = previous
            handled.append(signum)
    return handled


def install_signal_handlers_from_settings() -> list[int]:
    """Install the handlers if ``ARENA_SCALE_INSTALL_SIGNAL_HANDLERS`` is true (else none)."""
    from django_arena_scale._conf import conf

    if not conf.INSTALL_SIGNAL_HANDLERS:
        return []
    return install_signal_handlers()


def uninstall_signal_handlers() -> None:
    """Restore the handlers replaced by :func:`install_signal_handlers` (tests, embedding)."""
    with _install_lock:
        for signum, previous in list(_installed.items()):
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            del _installed[signum]


def _make_handler(
    signum: int, previous: Handler, *, run_hooks: bool
) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        from django_arena_scale.lifecycle._hooks import run_shutdown_hooks
        from django_arena_scale.lifecycle._state import get_lifecycle

        get_lifecycle().begin_drain()
        terminate = previous == signal.SIG_DFL and sig != signal.SIGINT
        if run_hooks and terminate:
            # Nobody else will shut the process down gracefully: run the hooks (each is
            # time-limited) before the default action ends the process.
            run_shutdown_hooks(sender=signal.Signals(sig).name)
        elif run_hooks:
            # The server's own handler drives the shutdown; it must not wait for the hooks,
            # so they run on a thread while the previous handler goes on at once.
            threading.Thread(
                target=run_shutdown_hooks,
                kwargs={"sender": signal.Signals(sig).name},
                name="arena-shutdown-hooks",
                daemon=True,
            ).start()
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL and sig == signal.SIGINT:
            raise KeyboardInterrupt
        elif terminate:
            # Re-deliver with the default action now that the hooks have run.
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    handler.__name__ = f"arena_drain_{signal.Signals(signum).name}"
    return handler
