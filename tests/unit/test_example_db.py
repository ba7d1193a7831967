"""The suites' PostgreSQL fixture fails, never skips, when PostgreSQL is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from django_arena_scale.stack import StackError
from tests import example_db


def _no_initdb(name: str, bin_dir: object = None) -> str:
    if name == "initdb":
        msg = f"The PostgreSQL program {name!r} was not found on PATH."
        raise StackError(msg)
    return f"/usr/bin/{name}"


def test_missing_initdb_fails_naming_it_and_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example_db, "pg_binary", _no_initdb)
    monkeypatch.delenv(example_db.SQLITE_OPT_IN, raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        example_db.stack_database_args()
    message = str(failed.value)
    assert "'initdb' was not found" in message
    assert "ARENA_TEST_SQLITE=1" in message


def test_missing_pgbouncer_is_named_when_the_stack_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_pgbouncer() -> str:
        raise StackError("The pgbouncer binary was not found on PATH or in /usr/sbin.")

    monkeypatch.setattr(example_db, "pgbouncer_binary", no_pgbouncer)
    monkeypatch.delenv(example_db.SQLITE_OPT_IN, raising=False)
    assert example_db.stack_database_args(pgbouncer=False) == ["--postgres"]
    with pytest.raises(pytest.fail.Exception, match="pgbouncer binary was not found"):
        example_db.stack_database_args(pgbouncer=True)


def test_sqlite_opt_in_needs_no_postgres(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setattr(example_db, "pg_binary", _no_initdb)
    monkeypatch.setenv(example_db.SQLITE_OPT_IN, "1")
    assert example_db.stack_database_args() == []
    with example_db.example_databases(tmp_path_factory) as databases:
        assert databases.server is None
        db = example_db.ExampleDatabase(sqlite_path=Path("/x/db.sqlite3"))
        assert db.env() == {"SQLITE_PATH": "/x/db.sqlite3"}
