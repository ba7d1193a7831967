"""Helpers shared by the e2e tests and the stack integration tests (run inside replicas too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_project"


def hang_forever() -> None:
    """A warm-up that never ends: the replica stays STARTING (used by a bad-input test)."""
    threading.Event().wait()


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), str(EXAMPLE)])
    env["DJANGO_SETTINGS_MODULE"] = "arena_project.settings"
    env.pop("DJANGO_DEBUG", None)
    return env


def stack_command(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLE / "manage.py"), "run_lb_stack", *args]


def run_stack(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run run_lb_stack to completion (for the failure cases) and return its result."""
    return subprocess.run(
        stack_command(*args),
        cwd=EXAMPLE,
        env=stack_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stack_pids(state_dir: Path) -> list[int]:
    path = state_dir / "stack.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    pids = [r["pid"] for r in state["replicas"] + state["redis"]]
    pids.append(state.get("nginx_pid"))
    return [p for p in pids if p]


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout}s")
