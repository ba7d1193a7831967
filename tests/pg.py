"""Real PostgreSQL 15 clusters, streaming replicas and PgBouncer for the tests.

No fakes: the recipe is the package's own (:mod:`django_arena_scale.stack._postgres`, which
``manage.py run_lb_stack --postgres`` uses too): ``initdb``, ``postgres``, ``pg_basebackup``
and ``pgbouncer`` from the Debian packages, each on a free 127.0.0.1 port, in a temporary
directory removed afterwards, as the ``postgres`` user when the tests run as root.  Here the
password is fixed (``PASSWORD``) and whatever a failed test left running is killed when the
interpreter exits.
"""

from __future__ import annotations

import atexit
from typing import Any

from django_arena_scale.stack import _postgres as _pg
from django_arena_scale.stack._postgres import DBNAME, USER, pg_binary, pgbouncer_binary

__all__ = [
    "DBNAME",
    "PASSWORD",
    "USER",
    "PgBouncer",
    "PostgresServer",
    "connect",
    "pg_binary",
    "pgbouncer_binary",
]

PASSWORD = "arena-test-password"

atexit.register(_pg.kill_all)


def connect(port: int, *, dbname: str = DBNAME, timeout: int = 2, **kwargs: Any) -> Any:
    """A psycopg connection (autocommit) to the server or PgBouncer on ``port``."""
    kwargs.setdefault("password", PASSWORD)
    return _pg.connect(port, dbname=dbname, timeout=timeout, **kwargs)


class PostgresServer(_pg.PostgresServer):
    """:class:`django_arena_scale.stack._postgres.PostgresServer` with the tests' password."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("primary") is None:
            kwargs.setdefault("password", PASSWORD)
        super().__init__(**kwargs)


PgBouncer = _pg.PgBouncer
