"""Django's PostgreSQL backend for a read replica, falling back to the primary.

``ReplicaRouter`` sends a read to a replica only while its last health check (at most
``ARENA_SCALE_REPLICA_CHECK_INTERVAL`` old) found it reachable and caught up.  A replica that
dies between two checks would still fail the reads routed to it in that window; this backend
closes the window:

- connecting to the replica fails (refused, timed out, shut down): the replica is reported
  down (the router skips it from now on) and this alias connects to the primary instead, for
  the rest of the request (the connection is closed when the request ends, so the replica is
  used again once it is back);
- a query fails because the replica's connection broke, outside a transaction and on an
  ordinary cursor: the same fallback, and the query runs again on the primary.  A read that
  was already answered is never repeated; a failure inside ``atomic()`` or on a server-side
  cursor is raised unchanged (the router never sends those to a replica anyway).

Any other error (a syntax error, a cancelled statement) is raised unchanged.  The primary's own
errors too: a read that reaches neither is an outage (503 with ``DependencyErrorMiddleware``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper


def _unreachable(alias: str) -> None:
    from django_arena_scale.db._router import replica_unreachable

    replica_unreachable(alias)


def _broken(wrapper: Any) -> bool:
    connection = wrapper.connection
    return connection is None or bool(getattr(connection, "closed", False))


class _FallbackExecute:
    """``_execute`` that re-runs a read on the primary when the replica's connection broke."""

    db: DatabaseWrapper
    cursor: Any

    def _execute(self, sql: Any, params: Any, *ignored: Any) -> Any:
        try:
            return super()._execute(sql, params, *ignored)  # type: ignore[misc]
        except OperationalError:
            db = self.db
            if (
                db.fell_back
                or db.in_atomic_block
                or getattr(self.cursor, "name", None)
                or not _broken(db)
            ):
                raise
            db.close()
            db.connect()  # the replica is down now: this connects to the primary
            if not db.fell_back:
                raise  # the replica answered the reconnect: not an outage, let the error be
            self.cursor = db.create_cursor()
            return super()._execute(sql, params, *ignored)


class ReplicaCursorWrapper(_FallbackExecute, CursorWrapper):
    pass


class ReplicaCursorDebugWrapper(_FallbackExecute, base.CursorDebugWrapper):
    pass


class DatabaseWrapper(base.DatabaseWrapper):
    """A read replica's connection: the primary's when the replica cannot be reached."""

    fell_back = False
    _to_primary = False

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self.fell_back = False
        if not self._to_primary:
            try:
                return super().get_new_connection(conn_params)
            except self.Database.OperationalError:
                if self.alias == DEFAULT_DB_ALIAS:
                    raise
                _unreachable(self.alias)
        connection = super().get_new_connection(
            connections[DEFAULT_DB_ALIAS].get_connection_params()
        )
        self.fell_back = True
        return connection

    def connect(self) -> None:
        # The replica may die between accepting the connection and Django's first statements
        # on it (time zone, role): start over on the primary then too.
        try:
            super().connect()
        except self.Database.OperationalError:
            if self.alias == DEFAULT_DB_ALIAS or self.fell_back:
                raise
            _unreachable(self.alias)
            if self.connection is not None:
                with contextlib.suppress(Exception):
                    self.connection.close()
                self.connection = None
            self._to_primary = True
            try:
                super().connect()
            finally:
                self._to_primary = False

    def close_if_unusable_or_obsolete(self) -> None:
        # A connection to the primary made in place of the replica lasts one request.
        if self.connection is not None and self.fell_back:
            self.close()
            return
        super().close_if_unusable_or_obsolete()

    def close(self) -> None:
        super().close()
        if self.connection is None:
            self.fell_back = False

    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return ReplicaCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> CursorDebugWrapper:
        return ReplicaCursorDebugWrapper(cursor, self)
