"""Load plan of the reference deployment, scaled to a 2-core machine, for the example arena.

Run headless against a running stack (``manage.py run_lb_stack``) - ``bench/stack.py locust``
does it for you and prints the per-endpoint table::

    ARENA_SCENARIO=sustained locust -f bench/locustfile.py --headless \
        --host http://127.0.0.1:8080 --csv /tmp/sustained --only-summary

Scenarios (``ARENA_SCENARIO``), each bounded in users and time:

- ``baseline``: 2 API users for 15 s - latency without contention;
- ``rampup``: 0 -> 30 users (API + streams 4:1) over 30 s, then 10 s at 30 - where it bends;
- ``sustained``: 20 users (4:1) for 45 s - steady state, error rate must stay 0;
- ``streaming``: 40 stream users and 5 API users for 30 s - SSE-heavy traffic.

Locust reports requests/s, p50/p95/p99 and failures per endpoint (``--csv``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from locust import HttpUser, LoadTestShape, between, task

SCENARIO = os.environ.get("ARENA_SCENARIO", "sustained")
DEMO = {
    "username": os.environ.get("ARENA_DEMO_USER", "demo"),
    "password": os.environ.get("ARENA_DEMO_PASSWORD", "demo-password"),
}


class ApiUser(HttpUser):
    """Reads the board, asks who it is, and posts now and then (logged in, with CSRF)."""

    wait_time = between(0.05, 0.2)
    weight = 4

    def on_start(self) -> None:
        response = self.client.post(
            "/auth/login/", data=json.dumps(DEMO), headers={"Content-Type": "application/json"}
        )
        self.csrf = response.json().get("csrf_token", "") if response.ok else ""

    @task(5)
    def list_messages(self) -> None:
        self.client.get("/api/messages/?limit=20", name="/api/messages/ GET")

    @task(3)
    def whoami(self) -> None:
        self.client.get("/api/whoami/")

    @task(2)
    def ping(self) -> None:
        self.client.get("/api/ping/")

    @task(1)
    def post_message(self) -> None:
        self.client.post(
            "/api/messages/",
            data=json.dumps({"text": "load test message"}),
            headers={"Content-Type": "application/json", "X-CSRFToken": self.csrf},
            name="/api/messages/ POST",
        )


class StreamUser(HttpUser):
    """Opens an SSE stream of 20 tokens (50 ms apart) and reads it to the end."""

    wait_time = between(0.1, 0.5)
    weight = 1

    @task
    def stream(self) -> None:
        with self.client.get(
            "/messages/stream/?tokens=20&delay=0.05",
            stream=True,
            name="/messages/stream/ SSE",
            catch_response=True,
        ) as response:
            body = b"".join(response.iter_content(chunk_size=None))
            if response.status_code != 200 or b"event: done" not in body:
                response.failure(f"stream ended without done ({response.status_code})")
            else:
                response.success()


class Shape(LoadTestShape):
    """(seconds from start, users, spawn rate, user classes) steps of the chosen scenario."""

    plans: dict[str, list[tuple[int, int, float, list[Any]]]] = {
        "baseline": [(15, 2, 2, [ApiUser])],
        "rampup": [(30, 30, 1, [ApiUser, StreamUser]), (40, 30, 1, [ApiUser, StreamUser])],
        "sustained": [(45, 20, 5, [ApiUser, StreamUser])],
        "streaming": [(30, 45, 10, [ApiUser, StreamUser])],
    }

    def tick(self) -> tuple[int, float, list[Any]] | None:
        if SCENARIO == "streaming":
            StreamUser.weight, ApiUser.weight = 8, 1
        run_time = self.get_run_time()
        for until, users, rate, classes in self.plans[SCENARIO]:
            if run_time < until:
                return users, rate, classes
        return None
