"""The capacity report's connection budget, proven on real PostgreSQL, PgBouncer and gunicorn.

The deployment: 2 replicas x 2 gthread workers x 8 threads of the example, each thread keeping
its database connection (``CONN_MAX_AGE=60``, health checks on), in front of a PostgreSQL
primary whose ``max_connections`` is small (20).  :func:`db_budget` says the app needs 33
connections (32 threads + 1 for jobs) of the 17 allowed: exceeded without PgBouncer, within
the budget with PgBouncer's ``default_pool_size`` 10.  The same load (48 concurrent clients,
a bounded number of requests each) runs against both; a sampler on the primary counts client
backends in ``pg_stat_activity`` throughout.

- through PgBouncer: the count never exceeds the pool size (so never the budget nor
  ``max_connections``) and no request fails;
- directly: the threads want more connections than the primary accepts, and requests fail
  (``too many clients already`` becomes a 503): the load is big enough for the test to fail.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from django_arena_scale.deploy._capacity import db_budget
from django_arena_scale.deploy._spec import DeploymentSpec
from tests.example_app import ExampleServer, example_env, migrate
from tests.pg import PgBouncer, PostgresServer, connect

pytestmark = pytest.mark.integration

MAX_CONNECTIONS = 20
POOL_SIZE = 10
REPLICAS, WORKERS, THREADS = 2, 2, 8
CLIENTS = 48
REQUESTS_PER_CLIENT = 25

SPEC = DeploymentSpec(
    replicas=REPLICAS,
    workers=WORKERS,
    threads=THREADS,
    topology="single",
    app_server="gunicorn",
    postgres_max_connections=MAX_CONNECTIONS,
    pgbouncer_pool_size=POOL_SIZE,
)


@pytest.fixture(scope="module")
def small_primary() -> Iterator[PostgresServer]:
    with PostgresServer(max_connections=MAX_CONNECTIONS) as server:
        migrate(example_env(Path("/nonexistent.sqlite3"), DATABASE_URL=server.url))
        yield server


def _client_backends(conn: object) -> int:
    row = conn.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()
    return int(row[0])


def _run_load(
    primary: PostgresServer, database_url: str, tmp_path: Path, **env: str
) -> tuple[Counter[str], int]:
    """The example on REPLICAS gunicorn servers against ``database_url`` under CLIENTS clients;
    returns the status counts and the peak number of the primary's client backends (the
    sampler's own connection not counted)."""
    statuses: Counter[str] = Counter()
    peak = 0
    done = threading.Event()
    app_env = example_env(
        tmp_path / "unused.sqlite3", DATABASE_URL=database_url, CONN_MAX_AGE="60", **env
    )
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                ExampleServer(
                    "gunicorn", app_env, tmp_path / f"app-{i}.log", workers=WORKERS, threads=THREADS
                )
            )
            for i in range(REPLICAS)
        ]
        sampler_conn = stack.enter_context(connect(primary.port))

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _client_backends(sampler_conn) - 1)
                done.wait(0.01)

        def client(i: int) -> None:
            server = servers[i % len(servers)]
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(REQUESTS_PER_CLIENT):
                    try:
                        status = str(http.get("/api/messages/", params={"limit": 5}).status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    statuses[status] += 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        try:
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(timeout=120)
        finally:
            done.set()
            sampler.join(timeout=10)
    return statuses, peak


def test_budget_arithmetic() -> None:
    """What the capacity report says about this deployment, which the tests below check."""
    direct = db_budget(SPEC)
    assert direct.needed == REPLICAS * WORKERS * THREADS + 1 == 33
    assert direct.limit == MAX_CONNECTIONS - 3
    assert direct.exceeded
    pooled = db_budget(SPEC.replace(pgbouncer=True))
    assert not pooled.exceeded
    assert pooled.pgbouncer_server_connections == POOL_SIZE


def test_pgbouncer_keeps_the_primary_within_its_budget(
    small_primary: PostgresServer, tmp_path: Path
) -> None:
    budget = db_budget(SPEC.replace(pgbouncer=True))
    with PgBouncer(small_primary, pool_size=POOL_SIZE, max_client_conn=200) as bouncer:
        statuses, peak = _run_load(small_primary, bouncer.url, tmp_path, DATABASE_PGBOUNCER="1")
    print(f"\n[budget] through PgBouncer: {dict(statuses)}, peak client backends {peak}")
    assert statuses == Counter({"200": CLIENTS * REQUESTS_PER_CLIENT})
    assert 0 < peak <= POOL_SIZE <= budget.limit < MAX_CONNECTIONS


def test_without_pgbouncer_the_same_load_exceeds_max_connections(
    small_primary: PostgresServer, tmp_path: Path
) -> None:
    statuses, peak = _run_load(small_primary, small_primary.url, tmp_path)
    print(f"\n[budget] direct: {dict(statuses)}, peak client backends {peak}")
    # The threads took more connections than the primary's budget (max_connections less the
    # reserved ones), far more than PgBouncer's pool; once the server's own limit is reached,
    # requests fail fast (PostgreSQL: "too many clients already" -> 503), none hangs.
    limit = db_budget(SPEC).limit
    assert POOL_SIZE < limit < peak < MAX_CONNECTIONS, (peak, dict(statuses))
    assert statuses["503"] > 0 or peak >= MAX_CONNECTIONS - 1, (peak, dict(statuses))
    assert set(statuses) <= {"200", "503"}, statuses
