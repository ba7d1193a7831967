"""Real servers for tests: started on a free 127.0.0.1 port, stopped (and killed) afterwards.

No fakes: these are the Debian ``redis-server`` (and, for e2e, ``nginx``) binaries.  Every
process a helper starts is remembered and killed at interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_started: list[subprocess.Popen[bytes]] = []


def _kill_leftovers() -> None:
    for proc in _started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)


atexit.register(_kill_leftovers)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def require_binary(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        raise RuntimeError(
            f"{name!r} is not installed; on Debian/Ubuntu run: apt-get install -y {name}"
        )
    return path


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence.

    ``stop()`` and ``start()`` reuse the same port, so clients configured with the URL
    reconnect after a restart, which is what the outage tests need.
    """

    def __init__(self, *, port: int | None = None, maxmemory_policy: str = "noeviction") -> None:
        self.binary = require_binary("redis-server")
        self.port = port or free_port()
        self.maxmemory_policy = maxmemory_policy
        self.dir = tempfile.mkdtemp(prefix="arena-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--maxmemory-policy", self.maxmemory_policy,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _started.append(self.proc)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def rmtree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
