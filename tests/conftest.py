from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as _hypothesis_settings

from tests.example_db import ExampleDatabase, ExampleDatabases
from tests.example_db import example_databases as _example_databases
from tests.pg import PgBouncer, PostgresServer
from tests.servers import RedisServer

# The example project runs with DEBUG off in the processes tests start (example servers,
# run_lb_stack and its replicas): it refuses to start without a SECRET_KEY, one for all replicas.
os.environ.setdefault("SECRET_KEY", "tests-only-example-secret-not-for-production-0123456789")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session (flushed by tests that need it empty)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A real redis-server of its own, for tests that stop, kill or restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_primary() -> Iterator[PostgresServer]:
    """A real PostgreSQL primary for the whole session (tests that kill one start their own)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_replica(pg_primary: PostgresServer) -> Iterator[PostgresServer]:
    """A streaming hot standby of ``pg_primary`` (``pg_basebackup -R``)."""
    with PostgresServer(primary=pg_primary) as server:
        yield server


@pytest.fixture(scope="session")
def pgbouncer(pg_primary: PostgresServer) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of ``pg_primary``."""
    with PgBouncer(pg_primary, pool_mode="transaction") as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def example_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleDatabases]:
    """The example's databases: one PostgreSQL cluster for the session, a migrated template
    copied per module or test (``ARENA_TEST_SQLITE=1``: SQLite files); see tests/example_db.py."""
    with _example_databases(tmp_path_factory) as databases:
        yield databases


@pytest.fixture
def example_database(example_databases: ExampleDatabases) -> Iterator[ExampleDatabase]:
    """A migrated database of the example for this test alone, dropped after it."""
    with example_databases.database("test") as db:
        yield db


@pytest.fixture(autouse=True)
def _reset_probe_state() -> Iterator[None]:
    """Every test starts with a fresh process lifecycle and an empty check-runner cache."""
    from django_arena_scale.health import _fastconf as fastconf
    from django_arena_scale.health._builtin import close_clients
    from django_arena_scale.health._service import reset_runner
    from django_arena_scale.lifecycle._state import reset_lifecycle

    fastconf.clear()
    reset_lifecycle()
    reset_runner()
    yield
    reset_lifecycle()
    reset_runner()
    close_clients()


# Property tests draw the same examples on every run (per test), so a CI result can be
# reproduced locally; set HYPOTHESIS_PROFILE=explore for fresh random examples.
_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
_hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
