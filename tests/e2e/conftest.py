"""The e2e stack: ``manage.py run_lb_stack --replicas 3`` of example_project, real nginx and
redis-server, on free loopback ports in a temp dir; stopped (and checked gone) at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_arena_scale.stack import _control as control
from tests.e2e.helpers import (
    EXAMPLE,
    get_json,
    stack_command,
    stack_database,
    stack_env,
    stop_stack,
)
from tests.example_db import stack_database_args
from tests.servers import free_port

REPLICAS = 3
STATUS_TOKEN = "e2e-status-token"
#: The example's switch for X-Arena-Simulate fault injection (off by default).
FAULT_INJECTION_ENV = "ARENA_EXAMPLE_FAULT_INJECTION"
#: Seconds an open LLM breaker stays open in the e2e stack.
BREAKER_RESET = 4.0


@dataclass
class Stack:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.dir / "stack.json").read_text()))

    def replica_ports(self) -> dict[str, int]:
        return {r["name"]: r["port"] for r in self.state()["replicas"]}

    def database(self) -> Path | str:
        """The example's data: the replicas' DATABASE_URL (PgBouncer), or the SQLite file."""
        return stack_database(self.dir)

    def replica_pids(self) -> dict[str, int]:
        return {r["name"]: r["pid"] for r in self.state()["replicas"]}

    def drain_file(self, name: str) -> Path:
        """The replica's ARENA_SCALE_DRAIN_FILE (run_lb_stack sets DIR/run/<name>.drain)."""
        return self.dir / "run" / f"{name}.drain"

    def reload_nginx(self) -> None:
        """SIGHUP nginx and wait for its new workers: forgets passive failure marks (max_fails)
        a previous test left, so one fault's test does not see the last one's."""
        pid = self.state()["nginx_pid"]
        children = Path(f"/proc/{pid}/task/{pid}/children")
        before = set(children.read_text().split())
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (set(children.read_text().split()) - before):
            assert time.monotonic() < deadline, "nginx did not start new workers after SIGHUP"
            time.sleep(0.02)
        time.sleep(0.3)

    def act(self, action: str, target: str | None = None) -> dict[str, Any]:
        answer = control.send(self.dir, action, target, timeout=180)
        assert answer["ok"], answer["message"]
        return answer

    def ready_everywhere(self) -> bool:
        state = self.state()
        if not all(r["state"] == "ready" for r in state["replicas"]):
            return False
        return all(get_json(p, "/ready/")[0] == 200 for p in self.replica_ports().values())

    def heal(self) -> None:
        """Bring back whatever a previous test took down (replicas, Redis)."""
        state = self.state()
        for redis in state["redis"]:
            if redis["state"] != "running":
                self.act("start-redis", redis["name"])
        for replica in state["replicas"]:
            if replica["state"] != "ready":
                self.act("start", replica["name"])
            elif self.drain_file(replica["name"]).exists():
                # Left by a drain test that failed before its own cleanup.
                self.drain_file(replica["name"]).unlink()
        deadline = time.monotonic() + 30
        while not self.ready_everywhere():
            assert time.monotonic() < deadline, f"stack not healthy: {self.state()['replicas']}"
            time.sleep(0.1)


def _wait_started(stack: Stack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            log = (stack.dir / "runner.log").read_text()
            pytest.fail(f"run_lb_stack exited with {stack.proc.returncode}:\n{log[-3000:]}")
        path = stack.dir / "stack.json"
        if path.exists():
            state = stack.state()
            if state.get("nginx_pid") and all(r["state"] == "ready" for r in state["replicas"]):
                return
        time.sleep(0.2)
    pytest.fail("run_lb_stack did not become ready in time")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """run_lb_stack --replicas 3 (single ASGI pool) with limits raised for bounded load."""
    state_dir = tmp_path_factory.mktemp("stack")
    port = free_port()
    argv = stack_command(
        "--replicas", str(REPLICAS), "--port", str(port), "--state-dir", str(state_dir),
        "--topology", "single", "--app-server", "uvicorn", "--workers", "1",
        "--drain-delay", "1",
        # Prometheus scrapes every replica each second (tests/e2e/test_observability_e2e.py).
        "--prometheus",
        # The load tests send a few hundred r/s from one IP; /auth/ keeps its 5 r/s + 10.
        "--set", "rate_general=5000", "--set", "burst_general=5000",
        "--set", "rate_stream=2000", "--set", "burst_stream=2000",
        "--set", "conn_per_ip=5000", "--set", "max_conns=2000",
        "--set", "graceful_timeout=15", "--set", "app_graceful_timeout=10",
        # nginx skips a replica that refused max_fails connections (a drained one) for
        # fail_timeout; 10 s keeps rolling restarts, which wait for it, within the budget.
        # Workers are not recycled mid-test (a recycle ends that worker's streams with the
        # reconnect event too); tests/integration/test_drain_listening.py covers recycling.
        "--set", "fail_timeout=10", "--set", "max_requests=1000000",
        "--env", "ARENA_TOKEN_DELAY=0.05",
        "--env", f"ARENA_SCALE_STATUS_TOKEN={STATUS_TOKEN}",
        # Readiness results are cached per process; the default 1 s plus the failing check
        # itself can exceed the "503 within 1 s" after Redis dies.
        "--env", "ARENA_SCALE_CHECK_CACHE_TTL=0.5",
        # Production's shape: PostgreSQL through PgBouncer in transaction mode (SQLite in
        # the state directory with ARENA_TEST_SQLITE=1).
        *stack_database_args(pgbouncer=True),
        # The chaos suite injects provider failures (X-Arena-Simulate); the example honours
        # the header only when fault injection is switched on.
        "--env", f"{FAULT_INJECTION_ENV}=1",
        # An open LLM breaker closes again after 4 s (default 30 s): the chaos suite checks
        # healthy streams right after a burst of provider failures.
        "--env",
        "ARENA_SCALE_LLM_PROVIDERS=" + json.dumps({"simulator": {"reset_timeout": BREAKER_RESET}}),
    )  # fmt: skip
    with open(state_dir / "runner.log", "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=EXAMPLE, env=stack_env(), stdout=log, stderr=subprocess.STDOUT
        )
    running = Stack(state_dir, port, proc)
    try:
        _wait_started(running)
        print(f"\n[stack] {running.state()['url']} replicas={running.replica_ports()}")
        yield running
    finally:
        leftovers = stop_stack(proc, state_dir)
        assert proc.returncode == 0, (state_dir / "runner.log").read_text()[-3000:]
        assert leftovers == [], f"processes left behind: {leftovers}"


@pytest.fixture
def healthy(stack: Stack) -> Stack:
    """The stack with every replica and Redis up (a previous test may have taken one down),
    and nginx's passive failure marks forgotten: a replica that refused connections while it
    drained is skipped for fail_timeout, which would skew the next test's spread."""
    stack.heal()
    stack.reload_nginx()
    return stack
