"""Graceful shutdown under real gunicorn (UvicornWorker and gthread) serving example_project.

SIGTERM straight to the master, without a drain file first: open SSE streams must end with
the reconnect event well before the graceful timeout, WebSockets must close with 1012, and
``@on_shutdown`` hooks must run once per worker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from django_arena_scale.deploy._server import WSGI_WORKER
from tests.e2e.helpers import EXAMPLE, SSEClient, stack_env
from tests.example_db import ExampleDatabase
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration

GRACEFUL = 10

CONFIG = """
from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401
    on_starting, post_worker_init, worker_int, worker_abort, worker_exit,
)
from django_arena_scale.lifecycle import on_shutdown


@on_shutdown
def record(sender):
    import os
    with open({marker!r}, "a") as handle:
        handle.write(f"{{os.getpid()}} {{sender}}\\n")
"""


class Server:
    def __init__(self, tmp: Path, db: ExampleDatabase, *, asgi: bool) -> None:
        self.port = free_port()
        self.marker = tmp / "hooks.log"
        config = tmp / "gunicorn.conf.py"
        config.write_text(CONFIG.format(marker=str(self.marker)))
        env = stack_env()
        env.update(db.env())  # migrated
        env.pop("REDIS_URL", None)
        argv = [
            sys.executable, "-m", "gunicorn", "--config", str(config),
            "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
            "--graceful-timeout", str(GRACEFUL),
        ]  # fmt: skip
        if asgi:
            argv += ["--worker-class", "django_arena_scale.lifecycle.uvicorn.UvicornWorker"]
            argv.append("arena_project.asgi:application")
        else:
            argv += ["--worker-class", WSGI_WORKER, "--threads", "4"]
            argv.append("arena_project.wsgi:application")
        self.log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=EXAMPLE, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port, timeout=60)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import http.client

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/ready/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        pytest.fail("server never became ready")

    def terminate(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def asgi_server(tmp_path: Path, example_database: ExampleDatabase) -> Iterator[Server]:
    server = Server(tmp_path, example_database, asgi=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def wsgi_server(tmp_path: Path, example_database: ExampleDatabase) -> Iterator[Server]:
    server = Server(tmp_path, example_database, asgi=False)
    try:
        yield server
    finally:
        server.stop()


def _sse_until_sigterm(server: Server) -> tuple[list[str], float, float]:
    client = SSEClient(server.port, "/messages/stream/?tokens=400&delay=0.05")
    try:
        events = iter(client)
        for _ in range(3):
            next(events)
        sent_at = server.terminate()
        for _ in events:
            pass
        ended = time.monotonic() - sent_at
    finally:
        client.close()
    server.proc.wait(timeout=GRACEFUL + 5)
    exited = time.monotonic() - sent_at
    return [e.event for e in client.events], ended, exited


def test_shutdown_uvicorn_sigterm_ends_sse_with_reconnect(asgi_server: Server) -> None:
    """SIGTERM to a UvicornWorker master: the open stream ends with ``event: reconnect``."""
    kinds, ended, exited = _sse_until_sigterm(asgi_server)
    print(f"[shutdown-asgi] stream ended {ended:.2f}s after SIGTERM; master exited {exited:.2f}s")
    assert kinds[-1] == "reconnect"
    assert "done" not in kinds
    assert ended < GRACEFUL / 2
    assert asgi_server.proc.returncode == 0


def test_shutdown_gthread_sigterm_ends_sse_with_reconnect(wsgi_server: Server) -> None:
    """SIGTERM to a gthread master: the WSGI stream ends with ``event: reconnect`` too."""
    kinds, ended, exited = _sse_until_sigterm(wsgi_server)
    print(f"[shutdown-wsgi] stream ended {ended:.2f}s after SIGTERM; master exited {exited:.2f}s")
    assert kinds[-1] == "reconnect"
    assert ended < GRACEFUL / 2
    assert wsgi_server.proc.returncode == 0


def test_shutdown_uvicorn_sigterm_closes_websocket_1012(asgi_server: Server) -> None:
    """SIGTERM: a connected WebSocket client is closed with 1012 (service restart)."""
    url = f"ws://127.0.0.1:{asgi_server.port}/ws/chat/shutdown/"
    with connect(url, origin="http://127.0.0.1") as ws:
        ws.send(json.dumps({"message": "hi"}))
        ws.recv(timeout=10)
        asgi_server.terminate()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=GRACEFUL)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012


def test_shutdown_hooks_run_once_in_the_worker(asgi_server: Server) -> None:
    """The @on_shutdown hook ran exactly once, in the worker, from worker_exit."""
    asgi_server.terminate()
    asgi_server.proc.wait(timeout=GRACEFUL + 5)
    lines = asgi_server.marker.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("gunicorn.worker_exit")
    assert int(lines[0].split()[0]) != asgi_server.proc.pid
