"""run_lb_stack bad input: a clear message naming the cause, nothing left running, exit != 0."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.e2e.helpers import pid_alive, run_stack, stack_pids
from tests.servers import free_port

pytestmark = pytest.mark.integration

LIGHT = ("--replicas", "1", "--topology", "single", "--app-server", "uvicorn", "--workers", "1")


def test_run_lb_stack_port_in_use_names_the_port(tmp_path: Path) -> None:
    """A busy --port fails before anything starts and names the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_stack(*LIGHT, "--port", str(port), "--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert f"port {port}" in result.stderr
    assert "already in use" in result.stderr
    assert stack_pids(tmp_path) == []


def test_run_lb_stack_missing_nginx_names_the_binary(tmp_path: Path) -> None:
    """A missing nginx binary is named, with a non-zero exit."""
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path),
        "--nginx", "/nonexistent/nginx",
    )  # fmt: skip
    assert result.returncode != 0
    assert "'/nonexistent/nginx'" in result.stderr


def test_run_lb_stack_missing_redis_server_names_the_binary(tmp_path: Path) -> None:
    """A missing redis-server binary is named, with a non-zero exit."""
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path),
        "--redis-server", "/nonexistent/redis-server",
    )  # fmt: skip
    assert result.returncode != 0
    assert "redis-server" in result.stderr
    assert "'/nonexistent/redis-server'" in result.stderr


def test_run_lb_stack_replica_never_ready_stops_everything(tmp_path: Path) -> None:
    """A replica stuck in STARTING: the message names it, and Redis and the replica are gone."""
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path),
        "--ready-timeout", "4",
        "--env", 'ARENA_SCALE_WARMUPS=["tests.e2e.helpers.hang_forever"]',
    )  # fmt: skip
    state = json.loads((tmp_path / "stack.json").read_text())
    assert result.returncode != 0
    assert "web-1" in result.stderr
    assert "did not become ready" in result.stderr
    assert state["redis"], "Redis was started before the replica"
    assert [p for p in stack_pids(tmp_path) if pid_alive(p)] == []


def test_run_lb_stack_replica_crash_reports_its_log(tmp_path: Path) -> None:
    """A replica whose app cannot load exits; the error names it and shows its log."""
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path),
        "--set", "asgi_app=no_such_module.asgi:application",
    )  # fmt: skip
    assert result.returncode != 0
    assert "Replica web-1 exited" in result.stderr
    assert "no_such_module" in result.stderr
    assert [p for p in stack_pids(tmp_path) if pid_alive(p)] == []
