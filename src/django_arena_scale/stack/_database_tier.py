"""The local stack's database tier: a PostgreSQL primary, K streaming replicas, PgBouncer.

``manage.py run_lb_stack --postgres [--pgbouncer] [--read-replicas K]``; the servers
themselves are :mod:`django_arena_scale.stack._postgres`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._postgres import (
    PgBouncer,
    PostgresServer,
    _run_as,
    pg_binary,
    pgbouncer_binary,
)

__all__ = ["DatabaseTier"]


class DatabaseTier:
    """The local stack's database: a primary, optionally PgBouncer and K streaming replicas.

    Names: ``postgres`` (the primary), ``postgres-replica-1`` .. ``-K``, ``pgbouncer``.  The
    password is random per stack; :meth:`app_env` gives the app replicas ``DATABASE_URL``
    (PgBouncer's when it runs, else the primary's), ``DATABASE_REPLICA_URLS`` and
    ``DATABASE_PGBOUNCER``; :meth:`as_json` has every URL with the password redacted.
    """

    def __init__(
        self,
        *,
        read_replicas: int = 0,
        pgbouncer: bool = False,
        max_connections: int = 100,
        pool_size: int = 20,
        query_wait_timeout: int = 5,
        log_dir: Path | None = None,
        bin_dir: str | Path | None = None,
    ) -> None:
        if read_replicas < 0:
            msg = f"--read-replicas must be 0 or more, got {read_replicas}."
            raise StackError(msg)
        self.read_replicas = read_replicas
        self.use_pgbouncer = pgbouncer
        self.max_connections = max_connections
        self.pool_size = pool_size
        self.query_wait_timeout = query_wait_timeout
        self.log_dir = log_dir
        self.bin_dir = bin_dir
        self.primary: PostgresServer | None = None
        self.replicas: list[PostgresServer] = []
        self.pgbouncer: PgBouncer | None = None

    def preflight(self) -> None:
        """Every program the tier needs exists (raises StackError naming the missing one)."""
        for name in ("initdb", "postgres"):
            pg_binary(name, self.bin_dir)
        if self.read_replicas:
            pg_binary("pg_basebackup", self.bin_dir)
        if self.use_pgbouncer:
            pgbouncer_binary()
        _run_as()
        try:
            import psycopg  # noqa: F401
        except ImportError:
            msg = (
                "--postgres needs psycopg in the project's environment: "
                "pip install 'psycopg[binary]'."
            )
            raise StackError(msg) from None

    def _log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir is not None else None

    def start(self) -> None:
        self.primary = PostgresServer(
            max_connections=self.max_connections,
            log_path=self._log("postgres"),
            label="postgres",
            bin_dir=self.bin_dir,
        )
        self.primary.start()
        for i in range(1, self.read_replicas + 1):
            name = f"postgres-replica-{i}"
            replica = PostgresServer(
                primary=self.primary,
                max_connections=self.max_connections,
                log_path=self._log(name),
                label=name,
            )
            self.replicas.append(replica)
            replica.start()
        if self.use_pgbouncer:
            self.pgbouncer = PgBouncer(
                self.primary,
                pool_size=self.pool_size,
                query_wait_timeout=self.query_wait_timeout,
                log_path=self._log("pgbouncer"),
            )
            self.pgbouncer.start()

    def wait_replayed(self, timeout: float = 30.0) -> None:
        for replica in self.replicas:
            replica.wait_replayed(timeout)

    def app_env(self) -> dict[str, str]:
        assert self.primary is not None
        front = self.pgbouncer if self.pgbouncer is not None else self.primary
        return {
            "DATABASE_URL": front.url,
            "DATABASE_REPLICA_URLS": ",".join(r.url for r in self.replicas),
            "DATABASE_PGBOUNCER": "1" if self.pgbouncer is not None else "0",
        }

    def migrate_env(self) -> dict[str, str]:
        """``manage.py migrate`` talks to the primary directly (no pooler, no replicas)."""
        assert self.primary is not None
        return {"DATABASE_URL": self.primary.url, "DATABASE_PGBOUNCER": "0"}

    def server(self, name: str) -> PostgresServer | PgBouncer:
        servers: dict[str, PostgresServer | PgBouncer] = {}
        if self.primary is not None:
            servers[self.primary.label] = self.primary
        servers.update((r.label, r) for r in self.replicas)
        if self.pgbouncer is not None:
            servers["pgbouncer"] = self.pgbouncer
        try:
            return servers[name]
        except KeyError:
            msg = f"No database server named {name!r}; expected one of {', '.join(servers)}."
            raise StackError(msg) from None

    def kill(self, name: str) -> None:
        self.server(name).kill()

    def start_server(self, name: str) -> None:
        server = self.server(name)
        if not server.running:
            server.start()

    def as_json(self) -> dict[str, Any]:
        databases = [s.as_json() for s in (self.primary, *self.replicas) if s is not None]
        return {
            "databases": databases,
            "pgbouncer": self.pgbouncer.as_json() if self.pgbouncer is not None else None,
        }

    def close(self) -> None:
        """Stop PgBouncer, the replicas and the primary, and remove their data."""
        if self.pgbouncer is not None:
            self.pgbouncer.close()
        for replica in reversed(self.replicas):
            replica.close()
        if self.primary is not None:
            self.primary.close()
