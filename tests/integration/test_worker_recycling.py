"""A gthread worker recycled by ``max_requests`` is replaced before it exits (real gunicorn).

A retiring worker keeps its idle keep-alive connections until the client (nginx) closes them,
so it can live for the proxy's keep-alive timeout after its last accepted connection; gunicorn
would start its successor only once it exited, and the replica would serve with one worker
fewer meanwhile.  The generated hooks mark the worker retiring and the master starts the
successor at once.  With one worker configured, a request on a new connection that is
answered while the retiring worker is still alive and still serving its idle connection can
only have been answered by a successor started early.
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

import psutil
import pytest

from django_arena_scale.deploy._server import HOOKS_IMPORT, WSGI_WORKER
from tests.example_app import example_env, start_gunicorn, stop_group
from tests.example_db import ExampleDatabase
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration

TOKEN = "integration-recycling-token"
MAX_REQUESTS = 25
#: Seconds a retiring worker keeps an idle keep-alive connection (the hooks set gunicorn's
#: linger to ``keepalive``); only bounds how long the old worker can be alive.
KEEPALIVE = 20


def _config(preload: bool) -> str:
    return HOOKS_IMPORT + (
        f"\nworker_class = {WSGI_WORKER!r}\nworkers = 1\nthreads = 2\n"
        f"max_requests = {MAX_REQUESTS}\nmax_requests_jitter = 0\nkeepalive = {KEEPALIVE}\n"
        f"graceful_timeout = {KEEPALIVE + 10}\npreload_app = {preload!r}\n"
        "control_socket_disable = True\n"
    )


def _status_pid(conn: http.client.HTTPConnection, *, close: bool) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if close:
        headers["Connection"] = "close"
    conn.request("GET", "/status/", headers=headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return int(json.loads(body)["replica"]["pid"])


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_retiring_worker_is_replaced_while_it_still_serves_its_connections(
    tmp_path: Path, preload: bool, example_database: ExampleDatabase
) -> None:
    env = example_env(
        example_database,
        ARENA_SCALE_STATUS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        LOG_LEVEL="WARNING",
    )
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(_config(preload))
    port = free_port()
    log_path = tmp_path / "server.log"
    args = ["--config", str(config), "--bind", f"127.0.0.1:{port}"]
    proc = start_gunicorn([*args, "arena_project.wsgi:application"], env, log_path)
    try:
        wait_for_port(port, timeout=60)
        # The idle keep-alive connection nginx's upstream pool would hold on the only worker.
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        old = _status_pid(idle, close=False)
        successor = None
        for _ in range(3 * MAX_REQUESTS):
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                pid = _status_pid(fresh, close=True)
            finally:
                fresh.close()
            if pid != old:
                successor = pid
                break
        assert successor is not None, log_path.read_text()
        # Answered by the successor while the retiring worker is alive ...
        assert psutil.pid_exists(old)
        assert psutil.Process(old).status() != psutil.STATUS_ZOMBIE, log_path.read_text()
        # ... and still serving the connection it kept (answered with Connection: close).
        assert _status_pid(idle, close=False) == old
        idle.close()
        master = psutil.Process(proc.pid)
        assert successor in {child.pid for child in master.children()}
    finally:
        stop_group(proc, signum=signal.SIGTERM, grace=KEEPALIVE + 20)
