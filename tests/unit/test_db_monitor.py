"""ReplicaMonitor: which replicas may serve reads (pure: a fake clock and scripted probes)."""

from __future__ import annotations

import threading

from django_arena_scale.db._monitor import ReplicaMonitor

PARAMS = {"max_lag": 5.0, "interval": 1.0, "timeout": 0.2}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_healthy_replica_is_probed_once_per_interval() -> None:
    clock, calls = Clock(), []

    def probe(alias: str) -> float:
        calls.append(alias)
        return 0.5

    monitor = ReplicaMonitor(probe, clock=clock)
    assert monitor.usable("r1", **PARAMS)
    assert monitor.usable("r1", **PARAMS)
    assert calls == ["r1"]
    clock.now += 1.0
    assert monitor.usable("r1", **PARAMS)
    assert calls == ["r1", "r1"]
    health = monitor.health("r1")
    assert health is not None
    assert health.lag == 0.5
    assert health.reason is None


def test_down_or_lagging_replicas_are_skipped() -> None:
    lags = {"r1": 9.0, "r2": 1.0}

    def probe(alias: str) -> float:
        if alias == "r3":
            raise ConnectionRefusedError
        return lags[alias]

    monitor = ReplicaMonitor(probe, clock=Clock())
    assert monitor.pick(["r1", "r2", "r3"], **PARAMS) == "r2"
    assert monitor.health("r1").reason == "lagging"  # type: ignore[union-attr]
    assert monitor.health("r3").reason == "unavailable"  # type: ignore[union-attr]
    lags["r2"] = float("nan")
    monitor.reset()
    assert monitor.pick(["r1", "r2"], **PARAMS) is None


def test_report_down_skips_a_replica_until_its_next_probe() -> None:
    clock = Clock()
    monitor = ReplicaMonitor(lambda alias: 0.0, clock=clock)
    assert monitor.usable("r1", **PARAMS)
    monitor.report_down("r1")
    assert not monitor.usable("r1", **PARAMS)
    clock.now += 1.0
    assert monitor.usable("r1", **PARAMS)


def test_a_hung_probe_costs_one_timeout_then_nothing_until_it_returns() -> None:
    clock, release, started = Clock(), threading.Event(), []

    def probe(alias: str) -> float:
        started.append(alias)
        release.wait(5)
        return 0.0

    monitor = ReplicaMonitor(probe, clock=clock)
    assert not monitor.usable("r1", **PARAMS)  # waited the timeout
    assert monitor.health("r1").reason == "timeout"  # type: ignore[union-attr]
    clock.now += 5.0  # stale, but the probe still runs: no second probe, no wait
    assert not monitor.usable("r1", **{**PARAMS, "timeout": 30.0})
    assert started == ["r1"]
    release.set()
    for _ in range(200):
        health = monitor.health("r1")
        if health is not None and health.usable:
            break
        threading.Event().wait(0.01)
    assert monitor.usable("r1", **PARAMS)
