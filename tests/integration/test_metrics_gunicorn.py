"""Metrics and request ids under real gunicorn: 2 workers recycled by ``--max-requests``.

The master prepares the metrics directory (``on_starting``) and marks exited workers dead
(``child_exit``); every worker writes its counts there.  A known number of requests is sent
while workers are replaced, and the metrics endpoint (with the status token) reports exactly
that number.  A client's ``X-Request-ID`` comes back in the response and is on Django's own
log record of that request (JSON log lines).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_arena_scale.deploy._server import HOOKS_IMPORT, WSGI_WORKER
from tests.e2e.helpers import stack_env
from tests.example_app import start_gunicorn, stop_group
from tests.example_db import ExampleDatabase
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration

TOKEN = "integration-metrics-token"
#: The hooks exactly as a generated gunicorn.conf.py imports them (and its config-time
#: metrics directory preparation, which preload_app needs).
CONFIG = HOOKS_IMPORT + "\n"
#: Requests each worker serves before gunicorn replaces it.
MAX_REQUESTS = 7
#: Only bounds the waits; nothing asserts on how long anything took.
PATIENCE = 60.0


class Server:
    def __init__(
        self, tmp: Path, db: ExampleDatabase, *, asgi: bool, preload: bool = False
    ) -> None:
        self.port = free_port()
        self.preload = preload
        self.metrics_dir = tmp / "metrics"
        if not preload:
            self.metrics_dir.mkdir()
            # A previous master's file: prepare_multiprocess_dir() must remove it (it is no
            # valid metrics file, so a scrape would fail if it stayed).
            (self.metrics_dir / "counter_999999.db").write_bytes(b"stale")
        config = tmp / "gunicorn.conf.py"
        config.write_text(CONFIG + f"preload_app = {preload!r}\n")
        env = stack_env()
        env.update(db.env())  # migrated
        # With preload_app the master imports the app before on_starting: the directory does
        # not exist yet, so only the config's own preparation (at load time) lets it start.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        env["ARENA_SCALE_STATUS_TOKEN"] = TOKEN
        env["LOG_FORMAT"] = "json"
        env["LOG_LEVEL"] = "WARNING"
        env.pop("REDIS_URL", None)
        argv = [
            "--config", str(config),
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--graceful-timeout", "5",
            "--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", "0",
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
            wait_for_port(self.port, timeout=PATIENCE)
            deadline = time.monotonic() + PATIENCE
            while self.get("/ready/")[0] != 200:
                assert time.monotonic() < deadline, self.log_path.read_text()
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        # A new connection per request, so both workers (and their successors) serve them.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
            response = conn.getresponse()
            # Header names lowercased: h11 (uvicorn) sends them so.
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            conn.close()

    def metric(self, name: str, labels: dict[str, str]) -> float:
        status, _headers, body = self.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, body
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture(params=["gthread", "gthread-preload", "uvicorn"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, example_database: ExampleDatabase
) -> Iterator[Server]:
    running = Server(
        tmp_path,
        example_database,
        asgi=request.param == "uvicorn",
        preload=request.param.endswith("preload"),
    )
    try:
        yield running
    finally:
        running.stop()


def _pids_that_wrote(directory: Path) -> set[str]:
    return {
        m.group(1) for f in os.listdir(directory) if (m := re.fullmatch(r"counter_(\d+)\.db", f))
    }


def test_exact_request_count_across_worker_recycling(server: Server) -> None:
    """N requests to /api/ping/ read back as exactly N, though workers were replaced meanwhile."""
    ping = {"method": "GET", "route": "api/ping/", "status": "200"}
    assert server.preload or not (server.metrics_dir / "counter_999999.db").exists()
    assert server.metric("arena_http_requests_total", ping) == 0
    # At least 5 workers' worth, and on until a replacement worker has counted some too (a
    # UvicornWorker past max_requests keeps serving through its retire phase for a while).
    sent = 0
    deadline = time.monotonic() + PATIENCE
    while sent < 5 * MAX_REQUESTS or len(_pids_that_wrote(server.metrics_dir)) <= 2:
        assert time.monotonic() < deadline, f"no worker replaced after {sent} requests"
        assert server.get("/api/ping/")[0] == 200
        sent += 1
    assert server.metric("arena_http_requests_total", ping) == sent
    assert server.metric("arena_http_request_duration_seconds_count",
                         {"method": "GET", "route": "api/ping/"}) == sent  # fmt: skip
    # The raw path is never a label; a path no pattern matches is 'unmatched'.
    assert server.get("/api/nope/123/")[0] == 404
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert server.metric("arena_http_requests_total", unmatched) == 1


def test_metrics_refused_without_credentials(server: Server) -> None:
    status, _headers, body = server.get("/metrics")
    assert status == 403
    assert json.loads(body) == {"error": "forbidden"}
    assert b"arena_http" not in body


def test_request_id_in_response_and_on_djangos_log_record(server: Server) -> None:
    request_id = f"itest-{uuid.uuid4().hex}"
    status, headers, _ = server.get("/api/no-such-page/", {"X-Request-ID": request_id})
    assert status == 404
    assert headers["x-request-id"] == request_id
    records: list[dict[str, object]] = []
    deadline = time.monotonic() + PATIENCE
    while not records and time.monotonic() < deadline:
        for line in server.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("request_id") == request_id:
                    records.append(record)
        time.sleep(0.1)
    assert records, server.log_path.read_text()
    assert records[0]["logger"] == "django.request"
    assert "/api/no-such-page/" in str(records[0]["message"])
    # A bad id is replaced, never echoed.
    _, headers, _ = server.get("/api/ping/", {"X-Request-ID": "bad id;"})
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
