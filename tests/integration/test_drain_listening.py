"""A draining replica stops listening, under real gunicorn (gthread and UvicornWorker).

The drain file appears (what ``manage.py drain on``, a Kubernetes ``preStop`` hook, deploy.sh
and run_lb_stack write): new connections are refused (so nginx moves them to another replica
before anything is sent), an idle keep-alive connection is closed by the server, and a request
already running completes.  The drain file goes away: the replica listens again.
"""

from __future__ import annotations

import collections
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_arena_scale.deploy._server import WSGI_WORKER
from tests.e2e.helpers import stack_env
from tests.example_app import start_gunicorn, stop_group
from tests.example_db import ExampleDatabase
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration

CONFIG = """
from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401
    on_starting, post_worker_init, when_ready, worker_int, worker_abort, worker_exit,
)
"""
#: Generous bound for "soon": the master polls every 0.2 s, a gthread worker's loop turns at
#: least once a second; this only bounds the wait, nothing asserts on how long it took.
SOON = 10.0


class Server:
    """gunicorn with the lifecycle hooks serving example_project, 2 workers, a drain file."""

    def __init__(
        self, tmp: Path, db: ExampleDatabase, *, asgi: bool, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.drain_file = tmp / "replica.drain"
        config = tmp / "gunicorn.conf.py"
        config.write_text(CONFIG)
        env = stack_env()
        env.update(db.env())  # migrated
        env["ARENA_SCALE_DRAIN_FILE"] = str(self.drain_file)
        env.pop("REDIS_URL", None)
        argv = [
            "--config", str(config),
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--graceful-timeout", "5",
            "--keep-alive", "30", *extra,
        ]  # fmt: skip
        if asgi:
            argv += ["--worker-class", "django_arena_scale.lifecycle.uvicorn.UvicornWorker"]
            argv.append("arena_project.asgi:application")
        else:
            argv += ["--worker-class", WSGI_WORKER, "--threads", "4"]
            argv.append("arena_project.wsgi:application")
        self.log_path = tmp / "server.log"
        self.proc = start_gunicorn(argv, env, self.log_path)
        try:
            wait_for_port(self.port, timeout=60)
            assert self.wait_until(lambda: self.get("/ready/")[0] == 200, timeout=60)
        except BaseException:
            self.stop()
            raise

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def refuses(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    @staticmethod
    def wait_until(predicate: object, *, timeout: float = SOON) -> bool:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture(params=["gthread", "uvicorn"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[Server]:
    running = Server(tmp_path, example_database, asgi=request.param == "uvicorn")
    try:
        yield running
    finally:
        running.stop()


def _stream_ended_cleanly(body: bytes) -> bool:
    """The SSE answer ran to its end: every token, or the drain's reconnect event last."""
    events = [block for block in body.split(b"\n\n") if block.strip()]
    return bool(events) and (
        events[-1].startswith(b"event: reconnect") or events[-1].startswith(b"event: done")
    )


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """True once the server closed this connection (EOF on its socket)."""
    sock = conn.sock
    assert sock is not None
    sock.settimeout(0.1)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_drain_file_stops_listening_keeps_idle_keepalive_for_one_last_answer(
    server: Server,
) -> None:
    """drain on: new connections refused; an idle keep-alive connection is NOT closed under
    the client (it may be sending a request at that instant) but its next request is served
    with Connection: close; a running request finishes.  drain off: served again."""
    idle = server.connection()
    idle.request("GET", "/api/ping/")
    first = idle.getresponse()
    first.read()
    assert (first.status, server.refuses()) == (200, False)

    slow: dict[str, object] = {}

    def run_slow() -> None:
        slow["answer"] = server.get("/messages/stream/?tokens=6&delay=0.25")

    worker = threading.Thread(target=run_slow)
    worker.start()
    time.sleep(0.3)

    server.drain_file.write_text("test\n")
    assert server.wait_until(server.refuses), "still accepting connections while draining"
    time.sleep(1.5)  # past a gthread worker's loop turn: it must still not close idle ones
    assert not _closed_by_server(idle), "an idle keep-alive connection was closed under us"
    idle.request("GET", "/api/ping/")
    last = idle.getresponse()
    last.read()
    assert (last.status, last.getheader("connection", "").lower()) == (200, "close")
    idle.close()
    worker.join(timeout=30)
    status, _, body = slow["answer"]  # type: ignore[misc]
    assert (status, _stream_ended_cleanly(body)) == (200, True)

    server.drain_file.unlink()
    assert server.wait_until(lambda: server.get("/api/ping/")[0] == 200), "not listening again"
    assert server.proc.poll() is None


def test_connection_busy_when_the_drain_starts_retires_after_its_response(
    server: Server,
) -> None:
    """A keep-alive connection carrying a request when the drain starts gets its whole answer;
    then it retires: the server closes it, or answers its next request with Connection: close
    (a proxy's cached connection brings the drained replica at most one more request)."""
    conn = server.connection()
    conn.request("GET", "/messages/stream/?tokens=6&delay=0.25")
    response = conn.getresponse()
    server.drain_file.write_text("test\n")
    body = response.read()
    assert (response.status, _stream_ended_cleanly(body)) == (200, True)
    assert server.wait_until(server.refuses)
    if conn.sock is not None and not server.wait_until(lambda: _closed_by_server(conn), timeout=1):
        conn.request("GET", "/api/ping/")
        last = conn.getresponse()
        last.read()
        assert (last.status, last.getheader("connection", "").lower()) == (200, "close")
    conn.close()


def test_no_connection_is_reset_when_the_replica_stops_listening(server: Server) -> None:
    """Clients opening connection after connection while the drain begins: each one is either
    refused before anything was sent (nginx then tries another replica, a POST included) or
    fully answered; none is reset after its request was sent.  (Connections still queued in
    the listening socket when its last descriptor closes are reset: the master closes its copy
    first and the last worker serves the queue before closing.)"""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + 4.0
    request = b"GET /api/ping/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    def client() -> None:
        while time.monotonic() < stop:
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            except ConnectionRefusedError:
                outcome = "refused"
                time.sleep(0.002)
            else:
                try:
                    sock.sendall(request)
                    data = sock.recv(65536)
                    outcome = "answered" if data.startswith(b"HTTP/1.1 200") else "broken"
                except OSError as exc:
                    outcome = f"reset after send ({type(exc).__name__})"
                finally:
                    sock.close()
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.drain_file.write_text("test\n")
    for thread in threads:
        thread.join(timeout=30)
    assert {"answered", "refused"} <= set(outcomes), outcomes
    assert set(outcomes) == {"answered", "refused"}, outcomes


@pytest.fixture(params=["gthread", "uvicorn"])
def recycling(
    request: pytest.FixtureRequest, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[Server]:
    """Workers that leave after 40 requests (max_requests), with a 3 s keep-alive."""
    extra = ("--max-requests", "40", "--max-requests-jitter", "0", "--keep-alive", "3")
    running = Server(tmp_path, example_database, asgi=request.param == "uvicorn", extra=extra)
    try:
        yield running
    finally:
        running.stop()


def test_recycled_workers_never_close_a_connection_under_a_request(recycling: Server) -> None:
    """Keep-alive clients that never retry, across several worker recyclings (max_requests):
    a leaving worker answers "Connection: close" until its keep-alive timeout instead of
    closing connections a client may be sending on; no request fails."""
    failures: list[str] = []
    answered: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + 8.0

    def client() -> None:
        conn = recycling.connection()
        while time.monotonic() < stop:
            try:
                conn.request("GET", "/api/ping/")
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = ""
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = recycling.connection()
            with lock:
                answered[outcome] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    booted = recycling.log_path.read_text(errors="replace").count("Booting worker")
    assert booted >= 4, f"no recycling happened ({booted} worker boots)"
    assert (failures, answered["200"] > 100) == ([], True)
