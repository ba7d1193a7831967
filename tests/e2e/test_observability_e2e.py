"""Metrics and request IDs end to end: requests through nginx, counted by a real Prometheus
(``run_lb_stack --prometheus``) scraping every replica, and a client's X-Request-ID on Django's
own log record in the replica's log."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import REPLICAS, Stack
from tests.e2e.helpers import pid_alive, request

pytestmark = pytest.mark.e2e

ROUTE = "api/ping/"


def _query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    base = stack.state()["prometheus"]["url"]
    url = f"{base}api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _scalar(stack: Stack, expr: str) -> float:
    result = _query(stack, expr)
    return float(result[0]["value"][1]) if result else 0.0


def _scraped_since(stack: Stack, moment: float, timeout: float = 30) -> None:
    """Wait until Prometheus has started a scrape of every replica after ``moment``."""
    deadline = time.monotonic() + timeout
    job = 'job="arena"'
    while time.monotonic() < deadline:
        targets = _query(stack, f"timestamp(up{{{job}}}) and up{{{job}}} == 1")
        if len(targets) == REPLICAS and min(float(t["value"][1]) for t in targets) > moment:
            return
        time.sleep(0.2)
    pytest.fail(f"Prometheus did not scrape all {REPLICAS} replicas within {timeout}s")


def test_prometheus_counts_exactly_the_requests_sent_through_nginx(healthy: Stack) -> None:
    state = healthy.state()
    assert state["prometheus"]["url"].startswith("http://127.0.0.1:")
    assert pid_alive(state["prometheus"]["pid"])
    counted = f'sum(arena_http_requests_total{{job="arena",route="{ROUTE}",status="200"}})'
    _scraped_since(healthy, time.time())
    before = _scalar(healthy, counted)
    sent = 57
    replicas = set()
    for _ in range(sent):
        status, headers, _ = request(healthy.port, "GET", f"/{ROUTE}")
        assert status == 200
        replicas.add(headers.get("x-replica"))
    assert len(replicas) > 1, "nginx sent every request to one replica"
    _scraped_since(healthy, time.time())
    after = _scalar(healthy, counted)
    assert after - before == sent
    # Each replica is its own target: the requests are spread over them.
    per_replica = _query(
        healthy, f'arena_http_requests_total{{job="arena",route="{ROUTE}",status="200"}}'
    )
    assert {r["metric"]["service"] for r in per_replica} <= set(healthy.replica_ports())


def test_client_request_id_on_djangos_own_log_record(healthy: Stack) -> None:
    """Django logs the 404 itself (django.request, after the view); the record carries the
    X-Request-ID the client sent through nginx, in the log of the replica that answered."""
    request_id = f"e2e-{uuid.uuid4().hex}"
    path = f"/no-such-page-{request_id}/"
    status, headers, _ = request(healthy.port, "GET", path, headers={"X-Request-ID": request_id})
    assert status == 404
    assert headers["x-request-id"] == request_id
    deadline = time.monotonic() + 10
    found: list[str] = []
    while not found and time.monotonic() < deadline:
        for replica in healthy.state()["replicas"]:
            with open(replica["log"], errors="replace") as handle:
                found += [line for line in handle if f"Not Found: {path}" in line]
        time.sleep(0.1)
    assert len(found) == 1, found
    assert "django.request" in found[0]
    assert f"[{request_id}]" in found[0]
