"""The one ``wrk`` runner the benchmark scripts share (bench/stack.py, topology.py, probes.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

#: DeploymentSpec fields that lift nginx's per-client limits: every load generator here is one
#: client IP (127.0.0.1), so the limits would measure nginx's limiter, not the stack.
UNLIMITED = {
    "rate_general": 100_000,
    "burst_general": 100_000,
    "rate_stream": 100_000,
    "burst_stream": 100_000,
    "rate_auth": 100_000,
    "conn_per_ip": 65_535,
}


class WrkResult(NamedTuple):
    """What one ``wrk`` run reported (``p99_ms`` only when asked for ``latency``)."""

    rps: float
    requests: int
    p99_ms: float | None = None


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    headers: Sequence[str] = (),
    latency: bool = False,
) -> WrkResult:
    """Load ``url`` for ``duration`` seconds (whole seconds, at least 1); exits on any non-2xx/3xx.

    A benchmark whose load got errors measures the error path, not the endpoint, so it stops
    instead of printing a figure.
    """
    seconds = max(1, round(duration))
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    for header in headers:
        command += ["-H", header]
    if latency:
        command.append("--latency")
    out = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise SystemExit(f"cannot parse wrk output for {url}:\n{out}")
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    p99_ms = float(p99.group(1)) * _UNIT_MS[p99.group(2)] if p99 else None
    return WrkResult(float(rate.group(1)), int(total.group(1)), p99_ms)


def process_tree(pid: int) -> list[Any]:
    """The process and its descendants (psutil), gone ones skipped."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds so far of each process tree in ``pids``: its live processes and the children
    they reaped (a worker recycled by max_requests counts with its master)."""
    import psutil

    total = 0.0
    for pid in pids:
        for proc in process_tree(pid):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def stack_parts(stack: Any) -> dict[str, list[int]]:
    """The process trees of a ``LocalStack`` whose CPU is counted: nginx, the API replicas, Redis
    (bench/throughput.py prints them apart, bench/observability.py adds them up)."""
    return {
        "nginx": [stack.nginx.pid] if stack.nginx and stack.nginx.pid else [],
        "API replicas": [
            r.process.pid
            for n, r in stack.replicas.items()
            if n in stack.spec.web_names and r.process.pid
        ],
        "redis": [r.process.pid for r in stack.redis.values() if r.process.pid],
    }


@contextlib.contextmanager
def served(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    ready_url: str,
    what: str,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in a process group of its own until ``ready_url`` answers (60 s at most);
    on exit stop the whole group (SIGTERM, then SIGKILL after 30 s)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(ready_url, timeout=2).read()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                where = f"; see {log}" if log else ""
                raise SystemExit(f"{what} did not start{where}")
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def local_stack(
    *,
    start: int,
    prefix: str,
    env: dict[str, str],
    options: dict[str, Any] | None = None,
    **spec: Any,
) -> Iterator[Any]:
    """A ``LocalStack`` of the example project (local target, nginx's per-client limits lifted,
    ports from ``start``) in a temp state dir, started and stopped around the block; ``spec``
    overrides DeploymentSpec fields, ``options`` adds StackOptions fields."""
    from django_arena_scale.deploy._spec import DeploymentSpec
    from django_arena_scale.stack._runner import LocalStack, StackOptions, free_port_range

    base = free_port_range(12, start=start)
    fields: dict[str, Any] = {
        "target": "local",
        "settings_module": "arena_project.settings",
        "wsgi_app": "arena_project.wsgi:application",
        "asgi_app": "arena_project.asgi:application",
        "local_port": base,
        "status_port": base + 1,
        "local_redis_port": base + 2,
        "local_base_port": base + 3,
        **UNLIMITED,
        **spec,
    }
    state_dir = tempfile.mkdtemp(prefix=prefix)
    example = Path(__file__).resolve().parents[1] / "example_project"
    stack = LocalStack(
        DeploymentSpec(**fields),
        state_dir,
        StackOptions(cwd=str(example), env=env, **(options or {})),
        out=lambda line: None,
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop(quiet=True)
        shutil.rmtree(state_dir, ignore_errors=True)
