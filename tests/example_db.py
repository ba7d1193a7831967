"""The example project's database in the integration and e2e suites: real PostgreSQL.

One throwaway cluster for the whole session (:class:`tests.pg.PostgresServer`: ``initdb``, a
free 127.0.0.1 port, its data removed at the end), one template database migrated once, and a
fresh copy of it for each module or test that asks (``CREATE DATABASE ... TEMPLATE``: a file
copy, no migrations to run again), dropped after it.  The e2e stacks run
``run_lb_stack --postgres`` (:func:`stack_database_args`).

PostgreSQL missing fails those tests with a message naming what is missing (never a skip);
``ARENA_TEST_SQLITE=1`` opts into a SQLite file per database instead, for a developer without
PostgreSQL (the example's own default when ``DATABASE_URL`` is unset).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.pg import USER, PostgresServer, connect, pg_binary, pgbouncer_binary

#: Set to 1 to run the example on SQLite files when PostgreSQL is not installed.
SQLITE_OPT_IN = "ARENA_TEST_SQLITE"
TEMPLATE = "arena_example_template"


def use_sqlite() -> bool:
    return os.environ.get(SQLITE_OPT_IN, "") == "1"


def missing_postgres(*, pgbouncer: bool = False) -> list[str]:
    """What the PostgreSQL suites need and this machine lacks (each a sentence)."""
    from django_arena_scale.stack import StackError

    problems = []
    for name in ("initdb", "postgres"):
        try:
            pg_binary(name)
        except StackError as exc:
            problems.append(str(exc))
    if pgbouncer:
        try:
            pgbouncer_binary()
        except StackError as exc:
            problems.append(str(exc))
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problems.append("psycopg is not installed (pip install 'psycopg[binary]').")
    return problems


def require_postgres(*, pgbouncer: bool = False) -> None:
    """Fail the test (not skip it), naming what is missing and the opt-out."""
    problems = missing_postgres(pgbouncer=pgbouncer)
    if problems:
        pytest.fail(
            "The integration and e2e suites run the example on PostgreSQL, which is missing:\n"
            + "\n".join(f"- {p}" for p in problems)
            + f"\nInstall it (.ci/run does), or set {SQLITE_OPT_IN}=1 to run them on SQLite.",
            pytrace=False,
        )


def stack_database_args(*, pgbouncer: bool = True) -> list[str]:
    """``run_lb_stack`` options for the e2e stacks: ``--postgres [--pgbouncer]``, or none
    (the stack's SQLite file) with ``ARENA_TEST_SQLITE=1``."""
    if use_sqlite():
        return []
    require_postgres(pgbouncer=pgbouncer)
    return ["--postgres", "--pgbouncer"] if pgbouncer else ["--postgres"]


@dataclass(frozen=True)
class ExampleDatabase:
    """One migrated database of the example: ``DATABASE_URL`` or, opted in, a SQLite file."""

    url: str | None = None
    sqlite_path: Path | None = None

    def env(self) -> dict[str, str]:
        if self.url is not None:
            return {"DATABASE_URL": self.url}
        return {"SQLITE_PATH": str(self.sqlite_path)}


class ExampleDatabases:
    """Fresh migrated databases on the session's cluster (or SQLite files, opted in)."""

    def __init__(self, server: PostgresServer | None, tmp: pytest.TempPathFactory) -> None:
        self.server = server
        self.tmp = tmp
        self._numbers = itertools.count(1)
        self._template_ready = False

    def url(self, dbname: str) -> str:
        assert self.server is not None
        password = quote(self.server.password, safe="")
        return f"postgres://{USER}:{password}@127.0.0.1:{self.server.port}/{dbname}"

    def _migrate(self, env_db: ExampleDatabase) -> None:
        from tests.example_app import example_env, migrate

        migrate(example_env(env_db))

    def _template(self) -> None:
        if self._template_ready:
            return
        assert self.server is not None
        with connect(self.server.port, dbname="postgres") as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        self._migrate(ExampleDatabase(url=self.url(TEMPLATE)))
        self._template_ready = True

    @contextlib.contextmanager
    def database(self, label: str = "db") -> Iterator[ExampleDatabase]:
        """A migrated database of its own (the demo user included), dropped afterwards."""
        if self.server is None:
            path = self.tmp.mktemp(f"sqlite-{label}") / "db.sqlite3"
            db = ExampleDatabase(sqlite_path=path)
            self._migrate(db)
            yield db
            return
        self._template()
        name = f"arena_{label.replace('-', '_')}_{next(self._numbers)}"
        with connect(self.server.port, dbname="postgres") as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        try:
            yield ExampleDatabase(url=self.url(name))
        finally:
            with connect(self.server.port, dbname="postgres") as conn:
                # A server a failed test left running may still hold connections.
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def example_databases(tmp: pytest.TempPathFactory) -> Iterator[ExampleDatabases]:
    """The session's cluster (``max_connections`` 100: several example servers at once)."""
    if use_sqlite():
        yield ExampleDatabases(None, tmp)
        return
    require_postgres()
    with PostgresServer(max_connections=100) as server:
        yield ExampleDatabases(server, tmp)
