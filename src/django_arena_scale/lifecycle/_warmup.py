"""Who runs the warm-ups, and when (Django adapter of ``_state.py``).

:func:`start_warmups` is called by ``ProbeMiddleware.__init__`` (Django builds the middleware
chain once the apps are ready, when the WSGI/ASGI handler is created), and again by the first
``/health/``, ``/ready/`` or ``/status/`` request of a process that has not claimed them, which
covers workers forked by a preloading master.  Server hooks may call it earlier.  The replica
becomes READY when the callables in ``ARENA_SCALE_WARMUPS`` and those registered with
:func:`~django_arena_scale.lifecycle.register_warmup` have run; with none, at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django_arena_scale.lifecycle._state import get_lifecycle, registered_warmups

logger = logging.getLogger("django_arena_scale.lifecycle")


def _failing(path: str, exc: Exception) -> Any:
    def fail() -> None:
        msg = f"ARENA_SCALE_WARMUPS entry {path!r} cannot be imported."
        raise ImportError(msg) from exc

    fail.__qualname__ = path
    fail.__module__ = ""  # the dotted path alone names it in warmup_failures
    return fail


def configured_warmups() -> list[Any]:
    """Callables named by ``ARENA_SCALE_WARMUPS`` followed by the registered ones."""
    from django.utils.module_loading import import_string

    from django_arena_scale._conf import conf

    warmups: list[Any] = []
    for path in conf.WARMUPS:
        if callable(path):
            warmups.append(path)
            continue
        try:
            warmups.append(import_string(path))
        except Exception as exc:
            warmups.append(_failing(str(path), exc))
    for func in registered_warmups():
        if func not in warmups:
            warmups.append(func)
    return warmups


def start_warmups(*, background: bool = True) -> bool:
    """Run the warm-ups once per process; True if this call started them.

    With no warm-up configured the lifecycle becomes READY before this returns.  Otherwise
    they run in a daemon thread (``background=True``) or in the caller's thread.
    """
    from django.apps import apps

    if not apps.ready:
        msg = "start_warmups() was called before Django's app registry was ready."
        raise RuntimeError(msg)
    lifecycle = get_lifecycle()
    if not lifecycle.claim_warmups():
        return False
    warmups = configured_warmups()
    if not warmups or not background:
        lifecycle.run_warmups(warmups)
        return True
    threading.Thread(
        target=lifecycle.run_warmups, args=(warmups,), name="arena-scale-warmup", daemon=True
    ).start()
    return True


#: The probes' logger: a warm-up start that fails is reported where the probes report.
_probe_logger = logging.getLogger("django_arena_scale.health")


def start_warmups_or_log(*, background: bool = True) -> bool:
    """:func:`start_warmups` for callers that must never fail over warm-ups.

    ``ProbeMiddleware`` calls it when Django builds the middleware chain, and a probe calls it
    in a process that has not claimed them.  An exception is logged, not raised; the next
    probe of a process that has not claimed them tries again.
    """
    try:
        return start_warmups(background=background)
    except Exception:
        _probe_logger.exception("Starting the warm-ups failed.")
        return False
