"""run_lb_stack as a user drives it: start, an --action from a second shell, Ctrl-C."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    EXAMPLE,
    get_json,
    pid_alive,
    run_stack,
    stack_command,
    stack_env,
    stack_pids,
    wait_until,
)
from tests.example_db import stack_database_args, use_sqlite
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _ready(state_dir: Path) -> bool:
    path = state_dir / "stack.json"
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    return bool(state["nginx_pid"]) and all(r["state"] == "ready" for r in state["replicas"])


def test_run_lb_stack_action_restart_then_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """--action restart swaps the replica's pid; SIGINT then stops everything with exit 0."""
    port = free_port()
    argv = stack_command(
        "--replicas", "1", "--topology", "single", "--app-server", "uvicorn",
        "--workers", "1", "--port", str(port), "--state-dir", str(tmp_path),
        *stack_database_args(pgbouncer=False),
    )  # fmt: skip
    env = {**stack_env(), "STATIC_ROOT": str(tmp_path / "static-root")}
    with open(tmp_path / "runner.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=EXAMPLE, env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: _ready(tmp_path), 120, "stack ready")
        # The stack collected the demo page's static files; nginx serves them.
        css = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        css.request("GET", "/static/arena/arena.css")
        css_answer = css.getresponse()
        css_status, css_type, css_body = (
            css_answer.status, css_answer.getheader("Content-Type", ""), css_answer.read(),
        )  # fmt: skip
        css.close()
        started = json.loads((tmp_path / "stack.json").read_text())
        before = started["replicas"][0]["pid"]
        result = run_stack("--state-dir", str(tmp_path), "--action", "restart", "--target", "web-1")
        after = json.loads((tmp_path / "stack.json").read_text())["replicas"][0]
        status, body = get_json(port, "/api/whoami/")
        pids = stack_pids(tmp_path)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    time.sleep(0.2)
    output = (tmp_path / "runner.log").read_text()
    assert result.returncode == 0, result.stderr
    assert "restart web-1" in result.stdout
    assert (after["pid"] != before, after["state"]) == (True, "ready")
    assert (status, body["replica"]) == (200, "web-1")
    assert (css_status, css_type.split(";")[0]) == (200, "text/css"), css_body[:200]
    assert css_body == (EXAMPLE / "arena" / "static" / "arena" / "arena.css").read_bytes()
    assert "Stack ready: http://127.0.0.1:" in output
    assert proc.returncode == 0
    # stack.json records the PostgreSQL primary; stack_pids() counts it, so it is gone too.
    databases = [(d["role"], d["state"]) for d in started.get("databases", [])]
    assert databases == ([] if use_sqlite() else [("primary", "running")])
    assert [p for p in pids if pid_alive(p)] == []


def test_run_lb_stack_action_without_stack_fails(tmp_path: Path) -> None:
    """--action on a directory with no running stack says so and exits non-zero."""
    result = run_stack("--state-dir", str(tmp_path), "--action", "kill", "--target", "web-1")
    assert result.returncode != 0
    assert "No running stack" in result.stderr


def test_run_lb_stack_action_unknown_replica_names_it(tmp_path: Path) -> None:
    """The running stack answers an unknown target with the valid names (answered by file)."""
    from django_arena_scale.stack import _control as control

    (tmp_path / "stack.json").write_text("{}")
    directory = control.control_dir(tmp_path)
    directory.mkdir()
    # No runner here: answer the request by hand to check the CLI's error path end to end.
    proc = subprocess.Popen(
        stack_command("--state-dir", str(tmp_path), "--action", "kill", "--target", "web-9"),
        cwd=EXAMPLE, env=stack_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: any(directory.glob("*.json")), 30, "control request written")
    [(path, body)] = control.pending(tmp_path)
    control.answer(path, ok=False, message="No replica named 'web-9'; expected one of web-1.")
    _, stderr = proc.communicate(timeout=30)
    assert body == {"action": "kill", "target": "web-9"}
    assert proc.returncode != 0
    assert "'web-9'" in stderr
