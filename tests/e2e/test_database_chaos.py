"""Database faults against ``run_lb_stack --postgres --pgbouncer --read-replicas 1``.

A stack of its own (module scope): 2 replicas of the example behind nginx, Redis, a real
PostgreSQL primary (initdb), a ``pg_basebackup -R`` streaming replica and PgBouncer in
transaction mode, all started by the command.  The faults are real: ``kill-db`` SIGKILLs the
server's whole process group (postmaster and backends), ``start-db`` starts it again on the
same port and data.  Every request goes through nginx unless it is a per-replica probe.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from django_arena_scale.stack import _control as control
from tests.e2e.helpers import (
    EXAMPLE,
    get_json,
    login,
    pid_alive,
    request,
    stack_command,
    stack_env,
    stop_stack,
    wait_until,
)
from tests.servers import free_port

pytestmark = pytest.mark.e2e

DB_503 = {"error": "dependency_unavailable", "dependency": "database"}
#: A request that needs a dead database must answer within this (a hung worker would not).
CLIENT_TIMEOUT = 20.0


class DbStack:
    def __init__(self, state_dir: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.dir = state_dir
        self.port = port
        self.proc = proc

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.dir / "stack.json").read_text()))

    def act(self, action: str, target: str) -> None:
        answer = control.send(self.dir, action, target, timeout=120)
        assert answer["ok"], answer["message"]

    def database(self, name: str) -> dict[str, Any]:
        state = self.state()
        servers = [*state["databases"], state["pgbouncer"]]
        return next(s for s in servers if s and s["name"] == name)

    def app_env(self) -> dict[str, str]:
        """The environment run_lb_stack gave the first replica (its gunicorn master)."""
        pid = self.state()["replicas"][0]["pid"]
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        pairs = (item.decode(errors="replace").partition("=") for item in raw if b"=" in item)
        return {key: value for key, _, value in pairs}

    def connect(self, name: str) -> Any:
        import psycopg

        url = urlsplit(self.app_env()["DATABASE_URL"])
        return psycopg.connect(
            host="127.0.0.1",
            port=self.database(name)["port"],
            user=url.username,
            password=url.password,
            dbname="arena",
            connect_timeout=2,
            autocommit=True,
        )

    def replica_ports(self) -> list[int]:
        return [r["port"] for r in self.state()["replicas"]]


def _pids(state_dir: Path) -> list[int]:
    path = state_dir / "stack.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    servers = [*state.get("databases", []), state.get("pgbouncer") or {}]
    return [s["pid"] for s in servers if s.get("pid")]


@pytest.fixture(scope="module")
def db_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbStack]:
    state_dir = tmp_path_factory.mktemp("dbstack")
    port = free_port()
    argv = stack_command(
        "--replicas", "2", "--port", str(port), "--state-dir", str(state_dir),
        "--topology", "single", "--app-server", "gunicorn", "--workers", "1", "--threads", "4",
        "--postgres", "--pgbouncer", "--read-replicas", "1",
        "--set", "pgbouncer_query_wait_timeout=2", "--set", "pgbouncer_pool_size=10",
        "--set", "postgres_max_connections=40",
        "--set", "rate_general=5000", "--set", "burst_general=5000",
        "--set", "conn_per_ip=5000", "--set", "max_conns=2000",
        "--set", "graceful_timeout=10", "--set", "app_graceful_timeout=8",
        "--drain-delay", "0.5",
        # A replica's health check may take longer than 0.5 s on a loaded 2-core machine.
        "--env", "ARENA_SCALE_REPLICA_CHECK_TIMEOUT=2",
    )  # fmt: skip
    with open(state_dir / "runner.log", "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=EXAMPLE, env=stack_env(), stdout=log, stderr=subprocess.STDOUT
        )
    stack = DbStack(state_dir, port, proc)
    db_pids: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"run_lb_stack exited:\n{(state_dir / 'runner.log').read_text()[-3000:]}"
                )
            if (state_dir / "stack.json").exists():
                state = stack.state()
                if state.get("nginx_pid") and all(r["state"] == "ready" for r in state["replicas"]):
                    break
            assert time.monotonic() < deadline, "the --postgres stack did not become ready"
            time.sleep(0.2)
        db_pids = _pids(state_dir)
        yield stack
    finally:
        db_pids += _pids(state_dir)
        leftovers = stop_stack(proc, state_dir)
        assert proc.returncode == 0, (state_dir / "runner.log").read_text()[-3000:]
        assert leftovers == [], f"processes left behind: {leftovers}"
        alive = [pid for pid in db_pids if pid_alive(pid)]
        assert alive == [], f"database servers left behind: {alive}"


@pytest.fixture
def healthy_db(db_stack: DbStack) -> DbStack:
    """Every database server running (a previous test may have killed one)."""
    state = db_stack.state()
    for server in [*state["databases"], state["pgbouncer"]]:
        if server["state"] != "running":
            db_stack.act("start-db", server["name"])
    return db_stack


def _post(port: int, cookie: str, csrf: str, text: str) -> tuple[int, Any]:
    status, _, body = request(
        port, "POST", "/api/messages/", body=json.dumps({"text": text}).encode(),
        headers={"Cookie": cookie, "X-CSRFToken": csrf, "Content-Type": "application/json",
                 "Referer": f"http://127.0.0.1:{port}/"},
        timeout=CLIENT_TIMEOUT,
    )  # fmt: skip
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body[:200]


def test_stack_json_and_app_environment(healthy_db: DbStack) -> None:
    """stack.json lists the primary, the replica and PgBouncer with redacted URLs; the app
    replicas talk to PgBouncer and the replica; a write through nginx is read back."""
    stack = healthy_db
    state = stack.state()
    roles = {(d["name"], d["role"]) for d in state["databases"]}
    assert roles == {("postgres", "primary"), ("postgres-replica-1", "replica")}
    assert state["pgbouncer"]["pool_mode"] == "transaction"
    env = stack.app_env()
    password = urlsplit(env["DATABASE_URL"]).password
    assert password
    assert password not in (stack.dir / "stack.json").read_text()
    for server in [*state["databases"], state["pgbouncer"]]:
        assert server["url"] == f"postgres://arena:***@127.0.0.1:{server['port']}/arena"
        assert pid_alive(server["pid"])
    assert urlsplit(env["DATABASE_URL"]).port == state["pgbouncer"]["port"]
    assert (
        urlsplit(env["DATABASE_REPLICA_URLS"]).port == stack.database("postgres-replica-1")["port"]
    )
    assert env["DATABASE_PGBOUNCER"] == "1"

    cookie, csrf = login(stack.port)
    text = f"db-stack-{uuid.uuid4()}"
    status, body = _post(stack.port, cookie, csrf, text)
    assert status == 201, body
    status, body = get_json(stack.port, "/api/messages/?limit=200", headers={"Cookie": cookie})
    assert status == 200
    assert text in [m["text"] for m in body["messages"]]
    with stack.connect("postgres") as conn:
        row = conn.execute("SELECT count(*) FROM arena_message WHERE text = %s", [text]).fetchone()
    assert row[0] == 1


def _replica_commits(stack: DbStack) -> int:
    with stack.connect("postgres-replica-1") as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = 'arena'"
        ).fetchone()
    return int(row[0])


def test_replica_killed_under_read_load_fails_no_read(healthy_db: DbStack) -> None:
    """4 anonymous readers through nginx; the streaming replica is SIGKILLed mid-load: every
    read answers 200 (its reads move to the primary), and the replica did serve reads before."""
    stack = healthy_db
    before = _replica_commits(stack)
    statuses: Counter[str] = Counter()
    stop = threading.Event()
    killed = threading.Event()
    after_kill = Counter[str]()

    def reader() -> None:
        while not stop.is_set():
            try:
                status, _, _ = request(stack.port, "GET", "/api/messages/?limit=5", timeout=10)
                key = str(status)
            except OSError as exc:
                key = type(exc).__name__
            statuses[key] += 1
            if killed.is_set():
                after_kill[key] += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(statuses.values()) >= 40, 30, "40 reads before the kill")
        served_by_replica = _replica_commits(stack) - before
        stack.act("kill-db", "postgres-replica-1")
        killed.set()
        wait_until(lambda: sum(after_kill.values()) >= 80, 60, "80 reads after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert served_by_replica > 0, "the replica served no read before it was killed"
    assert set(statuses) == {"200"}, statuses
    assert set(after_kill) == {"200"}, after_kill
    stack.act("start-db", "postgres-replica-1")


def test_primary_killed_fails_fast_and_recovers(healthy_db: DbStack) -> None:
    """Primary SIGKILLed: /live/ 200 on every replica, writes answer 503 (not a hang, not a
    500), no worker is stuck (each replica still answers /api/ping/), and writes succeed
    again once the primary is back, with the same replica processes."""
    stack = healthy_db
    cookie, csrf = login(stack.port)
    pids = [r["pid"] for r in stack.state()["replicas"]]
    stack.act("kill-db", "postgres")
    try:
        results: list[tuple[int, Any]] = []

        def write(i: int) -> None:
            results.append(_post(stack.port, cookie, csrf, f"while-down-{i}"))

        # More concurrent writes than one replica has threads: each must come back.
        threads = [threading.Thread(target=write, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)
        assert len(results) == 10
        assert [status for status, _ in results] == [503] * 10, results
        assert all(body == DB_503 for _, body in results), results
        for port in stack.replica_ports():
            assert get_json(port, "/live/")[0] == 200
            assert get_json(port, "/ready/")[0] == 200
            assert get_json(port, "/api/ping/", timeout=CLIENT_TIMEOUT)[0] == 200
    finally:
        stack.act("start-db", "postgres")
    # Recovery without restarting anything but the primary (PgBouncer retries its login).
    outcomes: list[int] = []

    def write_ok() -> bool:
        status, _ = _post(stack.port, cookie, csrf, f"after-{uuid.uuid4()}")
        outcomes.append(status)
        return status == 201

    wait_until(write_ok, 30, "a write succeeding after the primary came back")
    assert set(outcomes) <= {201, 503}, outcomes
    assert [r["pid"] for r in stack.state()["replicas"]] == pids


def test_pgbouncer_restarted(healthy_db: DbStack) -> None:
    """PgBouncer killed: writes 503; started again: the next writes succeed, no app restart."""
    stack = healthy_db
    cookie, csrf = login(stack.port)
    pids = [r["pid"] for r in stack.state()["replicas"]]
    stack.act("kill-db", "pgbouncer")
    try:
        status, body = _post(stack.port, cookie, csrf, "while-pgbouncer-down")
        assert (status, body) == (503, DB_503)
        assert get_json(stack.port, "/live/")[0] == 200
    finally:
        stack.act("start-db", "pgbouncer")
    for i in range(5):
        status, body = _post(stack.port, cookie, csrf, f"after-pgbouncer-{i}")
        assert status == 201, body
    assert [r["pid"] for r in stack.state()["replicas"]] == pids
