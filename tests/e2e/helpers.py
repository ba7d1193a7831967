"""Helpers shared by the e2e tests and the stack integration tests (run inside replicas too)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_project"


def hang_forever() -> None:
    """A warm-up that never ends: the replica stays STARTING (used by a bad-input test)."""
    threading.Event().wait()


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    # The replicas import django_arena_scale from where this test process does (the installed
    # wheel under tox, the source tree otherwise).
    import django_arena_scale

    package_root = Path(django_arena_scale.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), str(ROOT), str(EXAMPLE)])
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


# --- HTTP, load and SSE clients (stdlib only, so the counts are ours, not a library's) -------


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (``Connection: close``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def get_json(port: int, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path, **kwargs)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LoadStats:
    """Counts of one bounded load: sent, failed, latencies, who served what and when."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    served: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sent(self) -> int:
        return len(self.latencies) + len(self.failures)

    def record(
        self, seconds: float, status: int | None, replica: str | None, error: str = ""
    ) -> None:
        with self.lock:
            if error:
                self.failures.append(error)
                return
            self.latencies.append(seconds)
            assert status is not None
            self.statuses[status] += 1
            if replica:
                self.served.append((time.monotonic(), replica))

    def share(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(r for t, r in self.served if since <= t < until)

    def summary(self) -> str:
        ms = [x * 1000 for x in self.latencies]
        return (
            f"[{self.name}] sent={self.sent} failed={len(self.failures)} "
            f"statuses={dict(sorted(self.statuses.items()))} "
            f"p50={percentile(ms, 50):.1f}ms p95={percentile(ms, 95):.1f}ms "
            f"p99={percentile(ms, 99):.1f}ms max={max(ms, default=float('nan')):.1f}ms"
        )

    def report(self) -> None:
        print(self.summary())
        if self.failures:
            print(f"[{self.name}] first failures: {self.failures[:5]}")


Plan = Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]


class Load:
    """``threads`` clients, each sending one request at a time (fresh connection each) with a
    pause of ``pause`` seconds, until stopped: a bounded load (at most threads/pause r/s).

    A response counts as failed when the request raised or its status is not in ``ok``.
    """

    def __init__(
        self,
        port: int,
        plan: Plan,
        *,
        name: str,
        threads: int = 4,
        pause: float = 0.01,
        ok: frozenset[int] = frozenset({200, 201}),
    ) -> None:
        self.port = port
        self.plan = plan
        self.stats = LoadStats(name)
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]
        self.pause = pause
        self.ok = ok
        self._stop = threading.Event()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        return self.stats

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            method, path, body, headers = self.plan(index * 1_000_000 + n)
            n += 1
            started = time.monotonic()
            try:
                status, _, data = request(self.port, method, path, body=body, headers=headers)
            except (OSError, http.client.HTTPException) as exc:
                self.stats.record(0, None, None, f"{method} {path}: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.monotonic() - started
            if status not in self.ok:
                self.stats.record(0, None, None, f"{method} {path}: HTTP {status} {data[:120]!r}")
                continue
            replica = None
            if data.startswith(b"{"):
                with contextlib.suppress(ValueError, AttributeError):
                    replica = json.loads(data).get("replica")
            self.stats.record(elapsed, status, replica)
            self._stop.wait(self.pause)


@dataclass
class SSEEvent:
    at: float
    event: str
    data: str
    retry: int | None = None


class SSEClient:
    """Reads an SSE response line by line, stamping each event with its arrival time."""

    def __init__(self, port: int, path: str, *, timeout: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.started = time.monotonic()
        self.conn.request("GET", path, headers={"Host": "127.0.0.1", "Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.events: list[SSEEvent] = []

    def __iter__(self) -> Iterator[SSEEvent]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return
            text = line.decode().rstrip("\r\n")
            if text == "":
                if fields:
                    retry = fields.get("retry")
                    event = SSEEvent(
                        time.monotonic(),
                        fields.get("event", "message"),
                        fields.get("data", ""),
                        int(retry) if retry else None,
                    )
                    self.events.append(event)
                    yield event
                fields = {}
                continue
            if text.startswith(":"):
                continue
            key, _, value = text.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value

    def read_all(self) -> list[SSEEvent]:
        for _ in self:
            pass
        return self.events

    def close(self) -> None:
        self.conn.close()
