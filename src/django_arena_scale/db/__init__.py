"""Databases: ``DATABASES`` from URLs, read replicas with read-your-writes, PgBouncer.

``database_settings()`` is pure (no Django, no I/O): ``settings.py`` imports it.  The router,
the middleware and ``use_primary`` are loaded on first use, so importing this package never
touches ``django.conf.settings``::

    from django_arena_scale.db import database_settings
    globals().update(database_settings(os.environ.get("DATABASE_URL"),
                                       os.environ.get("DATABASE_REPLICA_URLS"),
                                       default={...SQLite...}))
    MIDDLEWARE += ["django_arena_scale.db.ReadYourWritesMiddleware"]  # after SessionMiddleware
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_arena_scale.db._urls import (
    PRIMARY,
    REPLICA_ENGINE,
    ROUTER,
    database_settings,
    parse_database_url,
)

if TYPE_CHECKING:
    from django_arena_scale.db._router import (
        ReadYourWritesMiddleware,
        ReplicaRouter,
        replica_health,
        use_primary,
    )

_LAZY = ("ReadYourWritesMiddleware", "ReplicaRouter", "replica_health", "use_primary")
MIDDLEWARE = "django_arena_scale.db.ReadYourWritesMiddleware"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from django_arena_scale.db import _router as router

        return getattr(router, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MIDDLEWARE",
    "PRIMARY",
    "REPLICA_ENGINE",
    "ROUTER",
    "ReadYourWritesMiddleware",
    "ReplicaRouter",
    "database_settings",
    "parse_database_url",
    "replica_health",
    "use_primary",
]
