"""File-based requests to a running stack (``run_lb_stack --action ...`` and the e2e tests).

A request is ``DIR/control/<id>.json``; the runner answers with ``<id>.done`` (JSON with
``ok`` and ``message``).  Files, not a socket: nothing listens, nothing to secure beyond the
state directory's own permissions.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from django_arena_scale.stack._errors import StackError

ACTIONS = (
    "rolling-restart",
    "restart",
    "kill",
    "stop",
    "start",
    "stop-redis",
    "start-redis",
    "kill-db",
    "start-db",
)
#: Actions that need a target (a replica, Redis service or database server name).
TARGETED = frozenset(set(ACTIONS) - {"rolling-restart"})


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def control_dir(state_dir: Path) -> Path:
    return state_dir / "control"


def send(
    state_dir: str | Path, action: str, target: str | None = None, *, timeout: float = 120.0
) -> dict[str, Any]:
    """Ask the stack running in ``state_dir`` to do ``action`` and wait for its answer."""
    if action not in ACTIONS:
        msg = f"Unknown stack action {action!r}; expected one of {', '.join(ACTIONS)}."
        raise StackError(msg)
    if action in TARGETED and not target:
        msg = f"Stack action {action!r} needs a target (a replica or Redis name)."
        raise StackError(msg)
    state_dir = Path(state_dir)
    if not (state_dir / "stack.json").exists():
        msg = f"No running stack in {str(state_dir)!r} (no stack.json); start run_lb_stack first."
        raise StackError(msg)
    directory = control_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    write_json_atomic(directory / f"{request_id}.json", {"action": action, "target": target})
    done = directory / f"{request_id}.done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done.exists():
            answer: dict[str, Any] = json.loads(done.read_text())
            done.unlink()
            return answer
        time.sleep(0.05)
    msg = f"The stack in {str(state_dir)!r} did not answer {action!r} within {timeout}s."
    raise StackError(msg)


def pending(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Requests waiting in ``state_dir``, oldest first (malformed ones are answered as errors)."""
    directory = control_dir(state_dir)
    if not directory.is_dir():
        return []
    requests = []
    for path in sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            body = {"action": None}
        requests.append((path, body))
    return requests


def answer(request_path: Path, *, ok: bool, message: str) -> None:
    done = request_path.with_suffix(".done")
    write_json_atomic(done, {"ok": ok, "message": message})
    request_path.unlink(missing_ok=True)
