"""Slow-header clients against a gthread replica must not fail its generated liveness probe.

A real gunicorn gthread server with the generated config's workers and threads (4 x 2) and the
package's hooks (so ``/live/`` reads the worker heartbeat) serves the example project.  64
clients connect 50 ms apart and send one header byte a second: each holds a request thread
while it reads headers (gunicorn has no header deadline), so ``/live/`` over HTTP goes
unanswered and a kubelet would restart a healthy pod.  The livenessProbe that
``generate_lb_config`` renders for the gthread pool is run here as the kubelet runs it (its
``timeoutSeconds``): it must pass under the attack, and still fail once the server is gone.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy._server import WSGI_WORKER
from django_arena_scale.deploy._spec import DeploymentSpec
from tests.example_app import EXAMPLE_DIR, example_env
from tests.example_db import ExampleDatabase
from tests.servers import _started, free_port, wait_for_port

pytestmark = pytest.mark.integration

SLOW_CLIENTS = 64
PROBES = 8
HOOKS = (
    "from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401\n"
    "    on_starting, post_worker_init, when_ready, worker_abort, worker_exit, worker_int,\n"
    ")\n"
)


def web_liveness_probe(spec: DeploymentSpec) -> dict[str, Any]:
    """The livenessProbe of the rendered web (gthread) Deployment manifest."""
    text = k8s.render(spec)["k8s/30-deployment-web.yaml"]
    deployment = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment")
    probe: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    return probe


def run_probe(probe: dict[str, Any], port: int) -> bool:
    """Run a Kubernetes probe like the kubelet: success within ``timeoutSeconds``."""
    timeout = float(probe["timeoutSeconds"])
    try:
        if "tcpSocket" in probe:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
        get = probe["httpGet"]
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", get["path"], headers=headers)
            return 200 <= conn.getresponse().status < 400
        finally:
            conn.close()
    except OSError:
        return False


def http_live(port: int, timeout: float) -> bool:
    return run_probe(
        {"timeoutSeconds": timeout, "httpGet": {"path": "/live/", "port": "http"}}, port
    )


@pytest.fixture(scope="module")
def spec() -> DeploymentSpec:
    return DeploymentSpec()


@pytest.fixture
def gthread_server(
    spec: DeploymentSpec, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[tuple[int, Any]]:
    env = example_env(example_database, ALLOWED_HOSTS="127.0.0.1,localhost")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOKS)
    port = free_port()
    args = [
        sys.executable, "-m", "gunicorn", "arena_project.wsgi:application", "-c", str(conf),
        "--bind", f"127.0.0.1:{port}", "--worker-class", WSGI_WORKER,
        "--workers", str(spec.workers), "--threads", str(spec.threads),
        "--timeout", str(spec.worker_timeout), "--graceful-timeout", "3",
        "--no-control-socket", "--log-level", "warning",
    ]  # fmt: skip
    with open(tmp_path / "gunicorn.log", "ab") as log:
        proc = subprocess.Popen(args, cwd=EXAMPLE_DIR, env=env, stdout=log, stderr=log)
    _started.append(proc)
    try:
        wait_for_port(port, timeout=30)
        # Every worker has booted and answers (a cold worker may take its first request slowly).
        for _ in range(50):
            if all(http_live(port, 5.0) for _ in range(8)):
                break
        else:
            pytest.fail("the gthread server never answered /live/ 8 times in a row")
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@contextlib.contextmanager
def slow_header_clients(port: int, count: int) -> Iterator[None]:
    """``count`` connections, 50 ms apart, each sending one header byte a second."""
    stop = threading.Event()
    request = b"GET /api/ping/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(request[:1])
            socks.append(sock)
            stop.wait(0.05)

        def trickle() -> None:
            for index in range(1, len(request)):
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(request[index : index + 1])
                if stop.wait(1.0):
                    return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        yield
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_generated_liveness_probe_survives_slow_header_clients(
    spec: DeploymentSpec, gthread_server: tuple[int, Any]
) -> None:
    port, proc = gthread_server
    probe = web_liveness_probe(spec)
    with slow_header_clients(port, SLOW_CLIENTS):
        http_answers = sum(http_live(port, float(probe["timeoutSeconds"])) for _ in range(PROBES))
        generated = [run_probe(probe, port) for _ in range(PROBES)]
    print(
        f"under {SLOW_CLIENTS} slow-header clients: HTTP /live/ answered {http_answers}/{PROBES}, "
        f"generated livenessProbe ({sorted(set(probe) & {'httpGet', 'tcpSocket'})}) passed "
        f"{sum(generated)}/{PROBES}"
    )
    # The attack works here (so the probe's pass below means something) ...
    assert http_answers < PROBES
    # ... and the generated liveness probe does not depend on a free request thread.
    assert all(generated)
    # Still a probe: it fails once the server no longer listens.
    proc.terminate()
    proc.wait(timeout=15)
    assert not run_probe(probe, port)
