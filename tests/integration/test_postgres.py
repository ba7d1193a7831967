"""The example project on real PostgreSQL 15: read replicas, PgBouncer, database outages.

Every server is real: ``initdb`` clusters, a ``pg_basebackup -R`` streaming replica, PgBouncer
in transaction mode, redis-server (the cache that records recent writers) and the example
under gunicorn.  Where a read went is seen in the data, not in a mock: with WAL replay paused on
the replica (``pg_wal_replay_pause()``), a message written to the primary is visible only to
reads the primary answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.example_app import ExampleServer, example_env, login, migrate
from tests.pg import PgBouncer, PostgresServer, connect
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

DB_503 = {"error": "dependency_unavailable", "dependency": "database"}
TOKEN = "postgres-status-token"
# A paused replica falls behind by as long as the pause lasts: the routing tests pause it on
# purpose, so only the lag test itself uses a tight bound.
# The health check's time limit is generous too: on a loaded machine a first connection may
# take longer than the default 0.5 s, and these tests are about where reads go, not about that.
PATIENT = {"ARENA_SCALE_REPLICA_MAX_LAG": "3600", "ARENA_SCALE_REPLICA_CHECK_TIMEOUT": "5"}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def pause_replay(replica: PostgresServer) -> None:
    with connect(replica.port) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")


def resume_replay(replica: PostgresServer) -> None:
    with connect(replica.port) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")


def texts(client: httpx.Client) -> list[str]:
    response = client.get("/api/messages/", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["messages"]]


def post(client: httpx.Client, csrf: str, text: str) -> None:
    response = client.post("/api/messages/", json={"text": text}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 201, response.text


def db_env(tmp_path: Path, primary_url: str, *replica_urls: str, **extra: str) -> dict[str, str]:
    env = example_env(tmp_path / "unused.sqlite3", DATABASE_URL=primary_url, **extra)
    if replica_urls:
        env["DATABASE_REPLICA_URLS"] = ",".join(replica_urls)
    return env


@pytest.fixture(scope="module")
def migrated_primary(pg_primary: PostgresServer, pg_replica: PostgresServer) -> PostgresServer:
    """The session primary with the example's tables (and demo user), replayed by the replica."""
    migrate(example_env(Path("/nonexistent.sqlite3"), DATABASE_URL=pg_primary.url))
    pg_replica.wait_replayed()
    return pg_primary


@pytest.fixture
def replay_paused(pg_replica: PostgresServer) -> Iterator[PostgresServer]:
    pause_replay(pg_replica)
    try:
        yield pg_replica
    finally:
        resume_replay(pg_replica)


# --- routing ------------------------------------------------------------------------------------


def test_reads_go_to_the_replica_except_a_writers_own_reads_on_every_app_replica(
    migrated_primary: PostgresServer,
    pg_replica: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Write then read, same client: the primary (on another app replica too); others: replica."""
    env = db_env(
        tmp_path,
        migrated_primary.url,
        pg_replica.url,
        REDIS_URL=redis_server.url,
        ARENA_SCALE_READ_YOUR_WRITES="30",
        **PATIENT,
    )
    with (
        ExampleServer("gunicorn", env, tmp_path / "a.log") as app_a,
        ExampleServer("gunicorn", env, tmp_path / "b.log") as app_b,
        httpx.Client(base_url=app_a.url, timeout=10) as writer_a,
        httpx.Client(base_url=app_b.url, timeout=10) as other,
    ):
        csrf = login(writer_a)
        pg_replica.wait_replayed()  # the login's last_login update
        pause_replay(pg_replica)
        try:
            marker = f"ryw-{uuid.uuid4()}"
            post(writer_a, csrf, marker)
            # The writer reads its write back, from app replica A and from app replica B
            # (same session cookie, another process: the record lives in Redis).
            assert marker in texts(writer_a)
            writer_b = httpx.Client(base_url=app_b.url, timeout=10, cookies=writer_a.cookies)
            with writer_b:
                assert marker in texts(writer_b)
            # Anyone else reads from the replica, which has not replayed the write.
            assert marker not in texts(other)
        finally:
            resume_replay(pg_replica)
        _wait_until(lambda: marker in texts(other), 10, "the replica serving the new message")


def test_a_replica_lagging_beyond_the_bound_is_skipped(
    migrated_primary: PostgresServer,
    pg_replica: PostgresServer,
    replay_paused: PostgresServer,
    tmp_path: Path,
) -> None:
    env = db_env(
        tmp_path,
        migrated_primary.url,
        pg_replica.url,
        ARENA_SCALE_REPLICA_MAX_LAG="1",
        ARENA_SCALE_REPLICA_CHECK_INTERVAL="0.2",
    )
    marker = f"lag-{uuid.uuid4()}"
    with connect(migrated_primary.port) as conn:
        conn.execute(
            "INSERT INTO arena_message (text, replica, created_at) VALUES (%s, '', now())",
            [marker],
        )
    with (
        ExampleServer("gunicorn", env, tmp_path / "lag.log") as app,
        httpx.Client(base_url=app.url, timeout=10) as anonymous,
    ):
        # The replica has not replayed the insert and its last replayed transaction gets
        # older than 1 s: it is skipped, and the read goes to the primary.
        _wait_until(lambda: marker in texts(anonymous), 10, "reads moving to the primary")


# --- replica killed under read load -------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary and a replica of this test's own: the test kills them."""
    with PostgresServer() as primary:
        migrate(example_env(Path("/nonexistent.sqlite3"), DATABASE_URL=primary.url))
        with PostgresServer(primary=primary) as replica:
            # One replayed transaction: a standby that has replayed none has no replay
            # timestamp, so while it is paused its lag is unknown and it is skipped.
            with connect(primary.port) as conn:
                conn.execute("CREATE TABLE replayed (id int)")
            replica.wait_replayed()
            yield primary, replica


def test_replica_killed_under_read_load_no_read_fails(
    own_cluster: tuple[PostgresServer, PostgresServer], tmp_path: Path
) -> None:
    primary, replica = own_cluster
    env = db_env(tmp_path, primary.url, replica.url, ARENA_SCALE_STATUS_TOKEN=TOKEN, **PATIENT)
    pause_replay(replica)
    marker = f"kill-{uuid.uuid4()}"
    with connect(primary.port) as conn:
        conn.execute(
            "INSERT INTO arena_message (text, replica, created_at) VALUES (%s, '', now())",
            [marker],
        )
    results: list[tuple[int, bool]] = []  # (status, marker seen: served by the primary)
    errors: list[str] = []
    stop = threading.Event()

    def reader(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get("/api/messages/", params={"limit": 5})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                seen = response.status_code == 200 and any(
                    m["text"] == marker for m in response.json()["messages"]
                )
                results.append((response.status_code, seen))

    with ExampleServer("gunicorn", env, tmp_path / "kill.log") as app:
        threads = [threading.Thread(target=reader, args=(app.url,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            _wait_until(lambda: len(results) >= 100, 20, "100 reads before the kill")
            before = len(results)
            replica.kill()
            _wait_until(lambda: len(results) >= before + 200, 30, "200 reads after the kill")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        # /status/ names the dead replica, although its alias's reads are answered.
        with httpx.Client(base_url=app.url, timeout=10) as client:
            checks = client.get("/status/", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        databases = {name: entries[0]["status"] for name, entries in checks["checks"].items()}
        assert databases["database:replica_1"] == "fail"
        assert databases["database:default"] == "pass"
    from_replica = sum(not seen for _, seen in results[:before])
    print(
        f"\nreplica killed: {len(results)} reads, {before} before the kill "
        f"({from_replica} of them from the replica)"
    )
    assert errors == []
    assert [status for status, _ in results if status != 200] == []
    # Before the kill the paused replica answered most reads (no marker; the first ones may
    # go to the primary while the first health check runs); at the end, only the primary.
    assert from_replica > before // 2
    assert all(seen for _, seen in results[-50:])


# --- primary killed -----------------------------------------------------------------------------


@contextlib.contextmanager
def port_kept(port: int) -> Iterator[None]:
    """Keep the port of a killed server while it is down: every connection to it is closed at
    once (as a dead server's would fail), and no server of a test running in parallel can take
    the freed port meanwhile (the app would then reconnect and write to that other database:
    it happened once in CI, a write answered 201 right after the kill)."""
    keeper = socket.socket()
    keeper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead one's TIME_WAIT
    keeper.bind(("127.0.0.1", port))
    keeper.listen(16)
    keeper.settimeout(0.1)
    done = threading.Event()

    def refuse() -> None:
        while not done.is_set():
            try:
                conn, _ = keeper.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
        keeper.close()


def test_primary_killed_db_endpoints_503_fast_live_200_then_recovery(tmp_path: Path) -> None:
    with PostgresServer() as primary:
        migrate(example_env(Path("/nonexistent.sqlite3"), DATABASE_URL=primary.url))
        env = db_env(tmp_path, primary.url)
        with (
            ExampleServer("gunicorn", env, tmp_path / "primary.log") as app,
            # Bounds every request: connect_timeout is 2 s, so a 503 comes well within it.
            httpx.Client(base_url=app.url, timeout=5) as client,
        ):
            csrf = login(client)
            post(client, csrf, "before the outage")
            primary.kill()
            with port_kept(primary.port):
                started = time.monotonic()
                read = client.get("/api/messages/")
                write = client.post(
                    "/api/messages/", json={"text": "lost"}, headers={"X-CSRFToken": csrf}
                )
                elapsed = time.monotonic() - started
                assert (read.status_code, read.json()) == (503, DB_503)
                assert (write.status_code, write.json()) == (503, DB_503)
                assert read.headers["Retry-After"] == "5"
                assert client.get("/live/").status_code == 200
                assert client.get("/ready/").status_code == 200  # a shared dependency
                assert client.get("/api/ping/").status_code == 200
                print(f"\nprimary down: read + write answered 503 in {elapsed:.2f}s")
            primary.start()  # same port and data; the app is not restarted
            _wait_until(lambda: client.get("/api/messages/").status_code == 200, 15, "recovery")
            assert "before the outage" in texts(client)
            post(client, csrf, "after the outage")


# --- PgBouncer in transaction mode ---------------------------------------------------------------


def test_example_through_pgbouncer_transaction_mode(
    migrated_primary: PostgresServer, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    env = db_env(tmp_path, pgbouncer.url, DATABASE_PGBOUNCER="1")
    migrate(env)  # migrations through PgBouncer too (nothing to apply: a no-op run)
    with (
        ExampleServer("gunicorn", env, tmp_path / "bouncer.log") as app,
        httpx.Client(base_url=app.url, timeout=10) as client,
    ):
        csrf = login(client)
        markers = [f"bouncer-{uuid.uuid4()}" for _ in range(20)]
        for marker in markers:
            post(client, csrf, marker)
        assert set(markers) <= set(texts(client))


def test_what_the_pgbouncer_checks_guard_against_happens_for_real(
    pg_primary: PostgresServer,
) -> None:
    """E040-E042 name real failures of transaction pooling; Django's defaults avoid them."""
    import psycopg

    with PgBouncer(pg_primary, pool_size=2) as bouncer:
        # E041: psycopg's prepared statements meet another client's on a shared server
        # connection (or miss their own on another one).
        def alternate(**options: Any) -> None:
            with (
                connect(bouncer.port, **options) as first,
                connect(bouncer.port, **options) as second,
            ):
                for value in range(3):
                    assert first.execute("SELECT %s::int", [value]).fetchone() == (value,)
                    assert second.execute("SELECT %s::int", [value]).fetchone() == (value,)

        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            alternate(prepare_threshold=0)
        # Django's default (prepare_threshold None) prepares nothing: no error.
        alternate()
        # E042: an 'options' startup parameter is refused.
        with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
            connect(bouncer.port, options="-c search_path=public")
        # E040: a server-side cursor held across transactions (QuerySet.iterator() outside
        # atomic) is gone when the next transaction runs on another server connection.
        with connect(bouncer.port) as holder, connect(bouncer.port) as busy:
            holder.execute("DECLARE rows CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
            busy.autocommit = False
            busy.execute("SELECT 1")  # keeps the cursor's server connection in a transaction
            with pytest.raises(psycopg.errors.InvalidCursorName):
                holder.execute("FETCH 2 FROM rows")
            busy.rollback()


def test_primary_and_pgbouncer_killed_behind_pgbouncer_503_then_recovery(tmp_path: Path) -> None:
    """Through PgBouncer: the primary killed, then PgBouncer itself; neither app nor
    PgBouncer is restarted by hand for the other's return."""
    with (
        PostgresServer() as primary,
        PgBouncer(primary, pool_size=4, query_wait_timeout=2) as bouncer,
    ):
        env = db_env(tmp_path, bouncer.url, DATABASE_PGBOUNCER="1")
        migrate(env)
        with (
            ExampleServer("gunicorn", env, tmp_path / "behind.log") as app,
            # A client queued in PgBouncer when the server died waits query_wait_timeout (2 s).
            httpx.Client(base_url=app.url, timeout=10) as client,
        ):
            csrf = login(client)
            post(client, csrf, "before")
            timings = {}
            for name, down in (("primary", primary), ("pgbouncer", bouncer)):
                down.kill()
                started = time.monotonic()
                responses = [client.get("/api/messages/") for _ in range(3)]
                timings[name] = time.monotonic() - started
                assert [(r.status_code, r.json()) for r in responses] == [(503, DB_503)] * 3
                assert client.get("/live/").status_code == 200
                down.start()
                _wait_until(
                    lambda: client.get("/api/messages/").status_code == 200, 15, f"{name} back"
                )
                post(client, csrf, f"after {name}")
            assert {"before", "after primary", "after pgbouncer"} <= set(texts(client))
            print(
                f"\nbehind PgBouncer, 3 reads answered 503 in: primary down "
                f"{timings['primary']:.2f}s, PgBouncer down {timings['pgbouncer']:.2f}s"
            )
