"""The generated nginx config behaves as designed, on a real nginx in front of stub replicas.

The local variant is rendered, a real nginx runs it on loopback, and each replica is a small
threaded HTTP/1.1 server in this process that records what nginx sent it.  This checks what
``nginx -t`` cannot: request ids, limits, probe exemptions, access rules, draining by the
servers include, retry rules and unbuffered streams.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.stack._runner import free_port_range
from tests.servers import wait_for_port

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Seen:
    """Requests one stub replica received: (method, path, headers)."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    fail_with: int | None = None


class Replica:
    """A threaded HTTP/1.1 server on 127.0.0.1:port that answers with its name."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.seen = Seen()
        seen, replica = self.seen, name

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen.requests.append((self.command, self.path, dict(self.headers.items())))
                if self.path.startswith("/messages/stream/"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i, pause in enumerate((0, 1.5)):
                        time.sleep(pause)
                        chunk = f"event: token\ndata: {i}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                status = seen.fail_with or 200
                body = replica.encode()
                self.send_response(status)
                self.send_header("X-Replica", replica)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    """nginx running the rendered local variant plus one stub per app service."""

    def __init__(self, root: Path, **fields: Any) -> None:
        # A random start: parallel test runs must not race for the same free range.
        base = free_port_range(16, start=random.randrange(21000, 31000))
        self.spec = DeploymentSpec(
            target="local",
            local_port=base,
            status_port=base + 1,
            local_redis_port=base + 2,
            local_base_port=base + 4,
            **fields,
        )
        self.root = root
        for rel, text in render_all(self.spec).files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        self.replicas = {
            name: Replica(name, self.spec.local_service_port(name))
            for name in self.spec.app_services
        }
        self.argv = [
            NGINX,
            "-p",
            str(root),
            "-c",
            f"{root}/nginx.conf",
            "-e",
            f"{root}/logs/error.log",
        ]
        self.proc = subprocess.Popen([*self.argv, "-g", "daemon off;"], stderr=subprocess.PIPE)
        wait_for_port(self.spec.local_port)

    def request(
        self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.spec.local_port, timeout=10)
        try:
            conn.request(
                method, path, body=b"x" if method == "POST" else None, headers=headers or {}
            )
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def reload(self) -> None:
        subprocess.run([*self.argv, "-s", "reload"], check=True, capture_output=True, timeout=30)
        time.sleep(1.0)  # old workers finish; new ones take over

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        for replica in self.replicas.values():
            replica.close()


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(**fields: Any) -> Stack:
        stack = Stack(tmp_path / f"s{len(stacks)}", **fields)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


def last_headers(stack: Stack) -> dict[str, str]:
    requests = [r for replica in stack.replicas.values() for r in replica.seen.requests]
    assert requests
    return {k.lower(): v for k, v in requests[-1][2].items()}


def test_nginx_keeps_well_formed_request_id(stack_factory: Any) -> None:
    """A well-formed client X-Request-ID goes upstream and comes back unchanged."""
    stack = stack_factory(replicas=1)
    status, headers, _ = stack.request("/api/x/", headers={"X-Request-ID": "client-id-12345"})
    assert (status, headers["x-request-id"]) == (200, "client-id-12345")
    assert last_headers(stack)["x-request-id"] == "client-id-12345"


def test_nginx_json_access_log_carries_the_request_id(stack_factory: Any) -> None:
    """log_format json: each request is one JSON line (values escaped, even a hostile
    User-Agent), with the client's request id and the replica that answered."""
    stack = stack_factory(replicas=1, log_format="json")
    hostile = 'evil"}, {"status": 200\\'
    status, _, _ = stack.request(
        "/api/x/?q=1", headers={"X-Request-ID": "json-log-id-1", "User-Agent": hostile}
    )
    assert status == 200
    log = stack.root / "logs" / "access.log"
    deadline = time.monotonic() + 10
    while "json-log-id-1" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    line = next(x for x in log.read_text().splitlines() if "json-log-id-1" in x)
    entry = json.loads(line)
    port = stack.spec.local_service_port("web-1")
    assert (entry["request_id"], entry["method"], entry["uri"], entry["status"]) == (
        "json-log-id-1", "GET", "/api/x/?q=1", 200,
    )  # fmt: skip
    assert (entry["upstream"], entry["user_agent"]) == (f"127.0.0.1:{port}", hostile)


def test_nginx_replaces_malformed_request_id(stack_factory: Any) -> None:
    """A malformed X-Request-ID is replaced by nginx's own 32-hex id, up and down."""
    stack = stack_factory(replicas=1)
    _, headers, _ = stack.request("/api/x/", headers={"X-Request-ID": "bad id<script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert last_headers(stack)["x-request-id"] == headers["x-request-id"]


def test_nginx_upstream_keepalive_headers(stack_factory: Any) -> None:
    """nginx talks HTTP/1.1 upstream without 'Connection: close' (keepalive pool)."""
    stack = stack_factory(replicas=1)
    stack.request("/api/x/")
    assert last_headers(stack).get("connection", "") == ""


def test_nginx_rate_limit_answers_429_for_api_and_probes(stack_factory: Any) -> None:
    """Beyond the general limit: 429 from nginx, for probe paths too (they are not a public
    API; orchestrators probe replicas directly), and none of those 429s reached a replica."""
    stack = stack_factory(replicas=1, rate_general=1, burst_general=0)
    api = [stack.request("/api/x/")[0] for _ in range(10)]
    probes = [stack.request("/ready/")[0] for _ in range(10)]
    seen = len(stack.replicas["web-1"].seen.requests)
    assert (api.count(429) >= 8, probes.count(429) >= 8) == (True, True)
    assert seen == api.count(200) + probes.count(200)


def test_nginx_status_denied_outside_internal_networks(stack_factory: Any) -> None:
    """/status/ and /metrics from an address outside internal_networks get 403 from nginx
    (the replica never sees them)."""
    stack = stack_factory(replicas=1, internal_networks=("10.0.0.0/8",))
    assert stack.request("/status/")[0] == 403
    assert stack.request("/metrics")[0] == 403
    assert stack.replicas["web-1"].seen.requests == []


def test_nginx_status_allowed_from_internal_networks(stack_factory: Any) -> None:
    """/status/ from loopback, an internal network by default, reaches the replica."""
    stack = stack_factory(replicas=1)
    assert stack.request("/status/")[0] == 200
    assert stack.request("/metrics")[0] == 200


def test_nginx_stub_status_on_internal_listener(stack_factory: Any) -> None:
    """stub_status answers on the status port."""
    stack = stack_factory(replicas=1)
    conn = http.client.HTTPConnection("127.0.0.1", stack.spec.status_port, timeout=5)
    try:
        conn.request("GET", "/nginx_status")
        body = conn.getresponse().read()
    finally:
        conn.close()
    assert body.startswith(b"Active connections:")


def test_nginx_drained_replica_gets_no_requests(stack_factory: Any) -> None:
    """Marking web-1 'down' in the servers include and reloading sends everything to web-2."""
    stack = stack_factory(replicas=2)
    include = stack.root / stack.spec.nginx_servers_include(stack.spec.api_upstream)
    text = include.read_text()
    include.write_text(
        re.sub(r"^(server 127\.0\.0\.1:\d+ [^;\n]*?)(;)$", r"\1 down\2", text, count=1, flags=re.M)
    )
    stack.reload()
    served = {stack.request("/api/x/")[1]["x-replica"] for _ in range(10)}
    assert served == {"web-2"}


def test_nginx_application_5xx_is_the_answer_not_a_replica_failure(
    stack_factory: Any,
) -> None:
    """A replica answering 502/503 (a provider error, an open breaker, a dead dependency) is
    not failed over: the client gets that answer, the request was sent once, and after many
    more than max_fails such answers the replica still gets its share of traffic."""
    stack = stack_factory(replicas=2, max_fails=1, fail_timeout=30)
    web1 = stack.replicas["web-1"]
    web1.seen.fail_with = 503
    statuses = [stack.request("/api/x/")[0] for _ in range(12)]
    sent = {name: len(r.seen.requests) for name, r in stack.replicas.items()}
    assert (statuses.count(503), sum(sent.values())) == (sent["web-1"], 12)
    web1.seen.fail_with = None
    after = [stack.request("/api/x/")[1].get("x-replica") for _ in range(10)]
    # Round robin still alternates: web-1 was never taken out.
    assert (sent["web-1"] >= 5, after.count("web-1") >= 4) == (True, True)


def test_nginx_never_retries_post(stack_factory: Any) -> None:
    """A POST answered 502 is not sent again (non_idempotent is not set)."""
    stack = stack_factory(replicas=2)
    for replica in stack.replicas.values():
        replica.seen.fail_with = 502
    status = stack.request("/api/x/", method="POST")[0]
    posts = [r for rep in stack.replicas.values() for r in rep.seen.requests if r[0] == "POST"]
    assert (status, len(posts)) == (502, 1)


def test_nginx_refused_connection_moves_get_and_post_to_another_replica(
    stack_factory: Any,
) -> None:
    """A replica that does not listen (draining or gone) refuses the connection before
    anything is sent, so nginx tries the next one: GETs and POSTs all succeed, each POST is
    applied exactly once."""
    stack = stack_factory(replicas=2)
    stack.replicas["web-1"].close()
    answers = [stack.request("/api/x/", method=method) for method in ("GET", "POST") * 10]
    posts = [r for r in stack.replicas["web-2"].seen.requests if r[0] == "POST"]
    assert ({a[0] for a in answers}, {a[1]["x-replica"] for a in answers}) == ({200}, {"web-2"})
    assert len(posts) == 10


def test_nginx_streams_unbuffered(stack_factory: Any) -> None:
    """SSE events pass through one by one (gzip off): event 0 arrives before event 1 exists."""
    stack = stack_factory(replicas=1)
    request = (
        b"GET /messages/stream/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
        b"Connection: close\r\n\r\n"
    )
    received = b""
    with socket.create_connection(("127.0.0.1", stack.spec.local_port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(request)
        while b"data: 0" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        elapsed = time.monotonic() - start
        while chunk:
            chunk = sock.recv(4096)
            received += chunk
    # The replica sends event 1 only 1.5 s after event 0: a buffering proxy would hold 0.
    assert (b"data: 1" in received, elapsed < 1.2) == (True, True)
