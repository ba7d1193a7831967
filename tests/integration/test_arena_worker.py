"""``ArenaThreadWorker`` under real gunicorn, with a small WSGI app of its own.

What it must keep from gthread (requests served on kept-alive connections, pipelined requests,
idle connections closed after the keep-alive timeout, requests in flight finished on SIGTERM)
and what it changes: a worker whose threads are all busy leaves new connections to a worker
with a free thread (gthread's main thread accepted them and queued them behind the busy
request), and each response leaves in one send.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_arena_scale.deploy._server import WSGI_WORKER
from tests.example_app import start_gunicorn, stop_group
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration

#: Bounds for waits that end as soon as their condition holds (never a timing assertion).
PATIENCE = 30.0

APP = """
import os, time
from pathlib import Path

STATE = Path(os.environ["TEST_STATE_DIR"])


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        # Holds this request's thread until the test creates "release".
        (STATE / "slow-pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not (STATE / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one,", b"two,", b"three"]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class Server:
    def __init__(self, tmp: Path, *, worker: str, workers: int, threads: int, keepalive: int):
        (tmp / "worker_test_app.py").write_text(APP)
        self.state = tmp / "state"
        self.state.mkdir()
        self.port = free_port()
        env = dict(os.environ, TEST_STATE_DIR=str(self.state))
        args = [
            "worker_test_app:app", "--pythonpath", str(tmp),
            "--bind", f"127.0.0.1:{self.port}", "--worker-class", worker,
            "--workers", str(workers), "--threads", str(threads),
            "--keep-alive", str(keepalive), "--graceful-timeout", "20",
            "--no-control-socket", "--log-level", "warning",
        ]  # fmt: skip
        self.proc = start_gunicorn(args, env, tmp / "gunicorn.log")
        wait_for_port(self.port, timeout=PATIENCE)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE)
        return sock

    def stop(self) -> None:
        stop_group(self.proc)


def request(path: str, *, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n".encode()


def read_response(sock: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """One response with a Content-Length (status line, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return status.encode(), headers, rest[:length]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, worker=WSGI_WORKER, workers=2, threads=1, keepalive=2)
    try:
        yield running
    finally:
        running.stop()


def wait_for(path: Path) -> str:
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_busy_worker_leaves_new_connections_to_a_free_one(server: Server) -> None:
    """Two workers of one thread: while one is held by a slow request, every new connection is
    served by the other, none waits behind the slow request."""
    slow = server.connect()
    slow.sendall(request("/slow"))
    busy_pid = wait_for(server.state / "slow-pid")
    served_by = set()
    for _ in range(12):
        with server.connect() as sock:
            sock.sendall(request("/pid"))
            status, _, body = read_response(sock)  # would block until release if queued
            assert status.startswith(b"HTTP/1.1 200"), status
            served_by.add(body.decode())
    assert busy_pid not in served_by, served_by
    (server.state / "release").touch()
    status, _, body = read_response(slow)
    assert status.startswith(b"HTTP/1.1 200")
    assert body.decode() == busy_pid
    slow.close()


def test_kept_alive_and_pipelined_requests(server: Server) -> None:
    """Requests on one connection, one by one and two in one write, each answered in order."""
    with server.connect() as sock:
        pids = set()
        for _ in range(5):
            sock.sendall(request("/pid"))
            status, headers, body = read_response(sock)
            assert status.startswith(b"HTTP/1.1 200")
            assert headers.get("connection", "keep-alive").lower() != "close"
            pids.add(body)
        assert len(pids) == 1  # one connection, one worker
        sock.sendall(request("/pid") + request("/pid"))
        first = read_response(sock)
        second = read_response(sock)
        assert first[2] == second[2] == pids.pop()


def test_chunked_response_is_framed_whole(server: Server) -> None:
    """A response without Content-Length is chunked; the headers and chunks arrive intact."""
    with server.connect() as sock:
        sock.sendall(request("/chunks", close=True))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"


def test_idle_connection_closed_after_keepalive(server: Server) -> None:
    """An idle kept-alive connection is closed by the worker once its 2 s keep-alive ran out
    (read until EOF; the socket timeout only bounds a failure)."""
    with server.connect() as sock:
        sock.sendall(request("/pid"))
        read_response(sock)
        assert sock.recv(1) == b""


def test_sigterm_finishes_the_request_in_flight(server: Server) -> None:
    """SIGTERM while a request runs: it is answered, its kept-alive connection is closed
    (after gunicorn's stop linger), and the server exits."""
    slow = server.connect()
    slow.sendall(request("/slow"))
    wait_for(server.state / "slow-pid")
    os.kill(server.proc.pid, signal.SIGTERM)
    time.sleep(0.5)  # the worker is stopping while its request still runs
    (server.state / "release").touch()
    status, _, _ = read_response(slow)
    assert status.startswith(b"HTTP/1.1 200")
    assert slow.recv(1) == b""
    slow.close()
    assert server.proc.wait(timeout=PATIENCE) == 0


if sys.platform != "linux":  # pragma: no cover - the epoll loop is Linux-only
    pytestmark = [pytestmark, pytest.mark.skip(reason="epoll")]


def test_slow_request_lets_another_thread_serve(tmp_path: Path) -> None:
    """One worker of two threads: one thread serves at a time, so while a request waits (here
    on a file; in life on an LLM or the database) the watch must hand the next request to the
    other thread, or it would wait for the slow one."""
    running = Server(tmp_path, worker=WSGI_WORKER, workers=1, threads=2, keepalive=5)
    try:
        slow = running.connect()
        slow.sendall(request("/slow"))
        wait_for(running.state / "slow-pid")
        for _ in range(5):
            with running.connect() as sock:
                sock.sendall(request("/pid"))
                status, _, _ = read_response(sock)  # would block until release if queued
                assert status.startswith(b"HTTP/1.1 200"), status
        assert not (running.state / "release").exists()
        (running.state / "release").touch()
        status, _, _ = read_response(slow)
        assert status.startswith(b"HTTP/1.1 200")
        slow.close()
    finally:
        running.stop()
