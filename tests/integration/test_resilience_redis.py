"""Breakers coordinated through a real redis-server: across registries and OS processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from django_arena_scale.resilience import Outcome, ProviderUnavailable
from django_arena_scale.resilience._breaker import CircuitBreaker
from django_arena_scale.resilience._policy import BreakerOptions
from django_arena_scale.resilience._registry import Registry
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = BreakerOptions(failure_threshold=2, reset_timeout=30, probe_lease=5)

# A replica: one guarded provider "fleet", driven by commands on stdin, answering JSON lines.
REPLICA = r"""
import json, sys, time
from django_arena_scale.resilience import ProviderUnavailable, RetriesExhausted, llm_call
from django_arena_scale.resilience._registry import registry

registry.configure(redis_url=sys.argv[1])

class Down(Exception):
    status_code = 503

@llm_call("fleet", max_attempts=1, failure_threshold=2, reset_timeout=30)
def call(fail):
    if fail:
        raise Down()
    return "ok"

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "quit":
        break
    started = time.monotonic()
    try:
        result = call(command == "fail")
    except ProviderUnavailable:
        result = "short"
    except RetriesExhausted:
        result = "failed"
    elapsed = time.monotonic() - started
    state = registry.breaker("fleet").state
    print(json.dumps({"result": result, "elapsed": elapsed, "state": state}), flush=True)
registry.reset()
"""


class Replica:
    """Another OS process with its own breakers, sharing the Redis."""

    def __init__(self, url: str) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert json.loads(self._readline()) == {"ready": True}

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            msg = f"replica exited with {self.proc.wait(timeout=5)}"
            raise RuntimeError(msg)
        return line

    def send(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._readline())
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def replica(fresh_redis: RedisServer) -> Iterator[Replica]:
    proc = Replica(fresh_redis.url)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def local(fresh_redis: RedisServer) -> Iterator[Registry]:
    """This process's registry (a second replica), coordinated through the same Redis."""
    reg = Registry()
    reg.configure(redis_url=fresh_redis.url)
    try:
        yield reg
    finally:
        reg.reset()


def _registry(url: str, **kwargs: Any) -> Registry:
    reg = Registry()
    reg.configure(redis_url=url, **kwargs)
    return reg


def _trip(breaker: CircuitBreaker) -> None:
    while breaker.state == "closed":
        breaker.record(breaker.admit(), Outcome.RETRY, "http_503")


def _until_short(replica: Replica, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if replica.send("call")["result"] == "short":
            return time.monotonic() - started
        time.sleep(0.01)
    return float("inf")


def test_fleet_trip_reaches_other_process_within_1s(local: Registry, replica: Replica) -> None:
    """Process A trips the breaker; process B stops calling within about 1 s."""
    assert replica.send("call")["result"] == "ok"
    _trip(local.breaker("fleet", OPTIONS))
    assert _until_short(replica, 3.0) < 1.0 + 0.3  # refresh interval + scheduling slack


def test_fleet_redis_killed_local_breakers_work(
    fresh_redis: RedisServer, local: Registry, replica: Replica
) -> None:
    """With Redis dead, both processes keep calling fast and their local breakers still trip."""
    fresh_redis.kill()
    answers = [replica.send("call") for _ in range(60)]  # spans several refresh intervals
    time.sleep(0.02)
    assert {a["result"] for a in answers} == {"ok"}
    assert max(a["elapsed"] for a in answers) < 0.1 + 0.25  # 4 x 0.1 s with client retries
    replica.send("fail")
    replica.send("fail")
    assert replica.send("call")["result"] == "short"
    breaker = local.breaker("fleet", OPTIONS)
    _trip(breaker)
    with pytest.raises(ProviderUnavailable):
        breaker.admit()


def test_fleet_redis_restarted_coordination_resumes(
    fresh_redis: RedisServer, local: Registry, replica: Replica
) -> None:
    """After Redis comes back on the same port, a trip in A reaches B again."""
    fresh_redis.kill()
    assert replica.send("call")["result"] == "ok"
    fresh_redis.start()
    time.sleep(1.2)  # one refresh interval: both sides see Redis again
    assert replica.send("call")["result"] == "ok"
    _trip(local.breaker("fleet", OPTIONS))
    assert _until_short(replica, 3.0) < 1.0 + 0.3


def test_fleet_local_trip_republished_after_outage(fresh_redis: RedisServer) -> None:
    """A breaker that tripped while Redis was down is shared once Redis is back."""
    a = _registry(fresh_redis.url, refresh_interval=0.2)
    b = _registry(fresh_redis.url, refresh_interval=0.2)
    try:
        fresh_redis.kill()
        _trip(a.breaker("fleet", OPTIONS))
        fresh_redis.start()
        time.sleep(0.25)
        a.coordinator.refresh()  # type: ignore[union-attr]  # what A's next call would do
        with pytest.raises(ProviderUnavailable):
            b.breaker("fleet", OPTIONS).admit()
    finally:
        a.reset()
        b.reset()


def test_fleet_stalled_redis_bounded_waits(fresh_redis: RedisServer, replica: Replica) -> None:
    """A Redis that accepts but never answers costs at most one short timeout per interval."""
    assert fresh_redis.proc is not None
    os.kill(fresh_redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answers = []
        while time.monotonic() - started < 2.5:
            answers.append(replica.send("call"))
        duration = time.monotonic() - started
    finally:
        os.kill(fresh_redis.proc.pid, signal.SIGCONT)
    assert {a["result"] for a in answers} == {"ok"}
    waited = [a["elapsed"] for a in answers if a["elapsed"] > 0.09]  # hit the 0.1 s timeout
    assert max(a["elapsed"] for a in answers) < 0.1 + 0.25  # 4 x 0.1 s with client retries
    assert len(waited) <= int(duration / 1.0) + 2


def test_fleet_half_open_one_probe_across_replicas(fresh_redis: RedisServer) -> None:
    """In half-open, only one replica at a time gets the probe lease."""
    options = BreakerOptions(failure_threshold=1, reset_timeout=0.3, probe_lease=5)
    a = _registry(fresh_redis.url)
    b = _registry(fresh_redis.url)
    try:
        breaker_a = a.breaker("fleet", options)
        breaker_b = b.breaker("fleet", options)
        _trip(breaker_a)
        b.coordinator.refresh()  # type: ignore[union-attr]
        assert breaker_b.state == "open"
        time.sleep(0.35)
        ticket = breaker_a.admit()
        with pytest.raises(ProviderUnavailable, match="half-open"):
            breaker_b.admit()
        breaker_a.record(ticket, Outcome.SUCCESS)
        assert breaker_b.admit().probe is not None  # the lease was released
    finally:
        a.reset()
        b.reset()


def test_fleet_closed_hot_path_no_redis_round_trip(fresh_redis: RedisServer) -> None:
    """Closed-breaker calls within one refresh interval send no command to Redis."""
    reg = _registry(fresh_redis.url, refresh_interval=30)
    client = redis.Redis.from_url(fresh_redis.url)
    try:
        breaker = reg.breaker("fleet", OPTIONS)
        breaker.record(breaker.admit(), Outcome.SUCCESS)  # first use refreshes once
        before = client.info("stats")["total_commands_processed"]
        for _ in range(1000):
            breaker.record(breaker.admit(), Outcome.SUCCESS)
        after = client.info("stats")["total_commands_processed"]
    finally:
        client.close()
        reg.reset()
    assert after - before == 1  # the INFO command itself


def test_fleet_probe_failure_reopens_everywhere(fresh_redis: RedisServer) -> None:
    """A failed probe in one replica reopens the breaker for the others."""
    options = BreakerOptions(failure_threshold=1, reset_timeout=0.3, probe_lease=5)
    a = _registry(fresh_redis.url)
    b = _registry(fresh_redis.url)
    try:
        breaker_a = a.breaker("fleet", options)
        breaker_b = b.breaker("fleet", options)
        _trip(breaker_a)
        time.sleep(0.35)
        breaker_a.record(breaker_a.admit(), Outcome.RETRY, "http_503")
        with pytest.raises(ProviderUnavailable):
            breaker_b.admit()
    finally:
        a.reset()
        b.reset()


def test_fleet_redis_url_from_django_settings(fresh_redis: RedisServer) -> None:
    """ARENA_SCALE_BREAKER_REDIS_URL turns coordination on through the Django adapter."""
    from django.test import override_settings

    from django_arena_scale.resilience._registry import registry

    registry.reset()
    try:
        with override_settings(ARENA_SCALE_BREAKER_REDIS_URL=fresh_redis.url):
            breaker = registry.breaker("fleet")
            assert registry.coordinator is not None
            assert breaker.coordinator is registry.coordinator
            assert registry.coordinator.refresh() is True
    finally:
        registry.reset()
