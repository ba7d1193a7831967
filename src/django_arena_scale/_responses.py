"""Ending a Django response without ``request_finished``.

``HttpResponseBase.close()`` runs the response's resource closers, marks it closed and sends
``request_finished``.  Two places in this package must do the first two without the third:
the stream fast path (``asgi.StreamRouter``, which sends neither request signal) and the idle
probes (``health._service.IdleProbeResponse``, when the signal would only run Django's own
no-op cleanup).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("django_arena_scale")


def close_without_signal(response: Any) -> None:
    """``response.close()`` minus ``request_finished``; a failing closer is logged, not raised."""
    closers = getattr(response, "_resource_closers", None)
    if closers is None:
        return
    for closer in closers:
        try:
            closer()
        except Exception:
            logger.exception("A resource closer of %r failed.", response)
    closers.clear()
    response.closed = True
