"""Lifecycle core: STARTING -> READY (warm-ups) -> DRAINING, liveness bookkeeping."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from django_arena_scale import lifecycle as lifecycle_api
from django_arena_scale.lifecycle._state import (
    Lifecycle,
    State,
    get_lifecycle,
    register_warmup,
    registered_warmups,
    reset_lifecycle,
    unregister_warmup,
)
from django_arena_scale.lifecycle._warmup import configured_warmups, start_warmups


def test_lifecycle_starts_in_starting() -> None:
    """A new lifecycle is STARTING."""
    assert Lifecycle().state is State.STARTING


def test_lifecycle_ready_after_warmups() -> None:
    """run_warmups() runs the callables, then the state is READY."""
    ran = []
    lifecycle = Lifecycle()
    lifecycle.run_warmups([lambda: ran.append(1)])
    assert (ran, lifecycle.state) == ([1], State.READY)


def test_lifecycle_failed_warmup_is_recorded_and_ready() -> None:
    """A failing warm-up is named in warmup_failures; readiness checks decide the rest."""

    def broken_warmup() -> None:
        raise RuntimeError("nope")

    lifecycle = Lifecycle()
    lifecycle.run_warmups([broken_warmup])
    assert (lifecycle.state, lifecycle.warmup_failures) == (
        State.READY,
        [f"{__name__}.test_lifecycle_failed_warmup_is_recorded_and_ready.<locals>.broken_warmup"],
    )


def test_lifecycle_begin_drain() -> None:
    """begin_drain() moves a READY lifecycle to DRAINING."""
    lifecycle = Lifecycle()
    lifecycle.mark_ready()
    lifecycle.begin_drain()
    assert lifecycle.state is State.DRAINING


def test_lifecycle_drain_wins_over_starting() -> None:
    """Draining while still starting is DRAINING."""
    lifecycle = Lifecycle()
    lifecycle.begin_drain()
    assert lifecycle.state is State.DRAINING


def test_lifecycle_drain_file_present(tmp_path: Path) -> None:
    """An existing drain file means DRAINING."""
    drain = tmp_path / "drain"
    drain.write_text("")
    lifecycle = Lifecycle(drain_file=str(drain))
    lifecycle.mark_ready()
    assert lifecycle.state is State.DRAINING


def test_lifecycle_drain_file_absent_is_ready(tmp_path: Path) -> None:
    """A configured but absent drain file leaves READY alone."""
    lifecycle = Lifecycle(drain_file=str(tmp_path / "drain"))
    lifecycle.mark_ready()
    assert lifecycle.state is State.READY


def test_lifecycle_drain_file_from_provider(tmp_path: Path) -> None:
    """Without an explicit path, the provider's path is used on every read."""
    drain = tmp_path / "drain"
    lifecycle = Lifecycle(drain_file_provider=lambda: str(drain))
    lifecycle.mark_ready()
    drain.write_text("")
    assert lifecycle.state is State.DRAINING


def test_lifecycle_drain_file_from_settings(settings: Any, tmp_path: Path) -> None:
    """The process lifecycle follows ARENA_SCALE_DRAIN_FILE."""
    drain = tmp_path / "drain"
    drain.write_text("")
    settings.ARENA_SCALE_DRAIN_FILE = str(drain)
    assert get_lifecycle().drain_file == str(drain)


def test_lifecycle_end_drain() -> None:
    """end_drain() returns to READY when no drain file exists."""
    lifecycle = Lifecycle()
    lifecycle.mark_ready()
    lifecycle.begin_drain()
    lifecycle.end_drain()
    assert lifecycle.state is State.READY


def test_lifecycle_broken_is_not_live() -> None:
    """mark_broken() makes is_live() False."""
    lifecycle = Lifecycle()
    lifecycle.mark_broken("deadlock")
    assert not lifecycle.is_live(30)


def test_lifecycle_no_heartbeat_is_live() -> None:
    """Without any heartbeat (not wired), the process counts as live."""
    assert Lifecycle().is_live(30)


def test_lifecycle_stale_heartbeat_is_not_live() -> None:
    """A heartbeat older than the timeout makes is_live() False."""
    now = [0.0]
    lifecycle = Lifecycle(clock=lambda: now[0])
    lifecycle.heartbeat()
    now[0] = 30.5
    assert not lifecycle.is_live(30)


def test_lifecycle_uptime_uses_clock() -> None:
    """uptime() is measured with the injected clock."""
    now = [5.0]
    lifecycle = Lifecycle(clock=lambda: now[0])
    now[0] = 12.5
    assert lifecycle.uptime() == 7.5


def test_lifecycle_claim_warmups_once_per_process() -> None:
    """claim_warmups() is True once, then False in the same process."""
    lifecycle = Lifecycle()
    assert [lifecycle.claim_warmups(), lifecycle.claim_warmups()] == [True, False]


def test_lifecycle_claim_warmups_again_after_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked child (another pid) that is not READY claims the warm-ups again."""
    lifecycle = Lifecycle()
    lifecycle.claim_warmups()
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert lifecycle.claim_warmups()


def test_lifecycle_repr() -> None:
    """repr shows the state."""
    assert repr(Lifecycle()) == "<Lifecycle state=starting>"


def test_lifecycle_api_begin_drain() -> None:
    """lifecycle.begin_drain() drains the process lifecycle."""
    lifecycle_api.begin_drain()
    assert get_lifecycle().state is State.DRAINING


def test_lifecycle_api_mark_broken() -> None:
    """lifecycle.mark_broken() breaks the process lifecycle."""
    lifecycle_api.mark_broken("x")
    assert get_lifecycle().broken == "x"


def test_lifecycle_api_heartbeat() -> None:
    """lifecycle.heartbeat() records a heartbeat."""
    lifecycle_api.heartbeat()
    assert get_lifecycle().heartbeat_age() is not None


# --- warm-up registry and triggering (Django adapter) -----------------------------------------
@pytest.fixture
def warmup_calls() -> Any:
    calls: list[str] = []

    def warm() -> None:
        calls.append("registered")

    register_warmup(warm)
    yield calls
    unregister_warmup(warm)


def settings_warmup() -> None:
    _settings_calls.append("settings")


_settings_calls: list[str] = []


def test_lifecycle_register_warmup_is_idempotent() -> None:
    """Registering the same callable twice keeps one entry."""

    def warm() -> None:
        pass

    register_warmup(warm)
    register_warmup(warm)
    try:
        assert registered_warmups().count(warm) == 1
    finally:
        unregister_warmup(warm)


def test_lifecycle_configured_warmups_settings_first(settings: Any, warmup_calls: Any) -> None:
    """ARENA_SCALE_WARMUPS come first, then registered ones."""
    settings.ARENA_SCALE_WARMUPS = [f"{__name__}.settings_warmup"]
    names = [f.__name__ for f in configured_warmups()]
    assert names[:2] == ["settings_warmup", "warm"]


def test_lifecycle_start_warmups_runs_and_readies(settings: Any, warmup_calls: Any) -> None:
    """start_warmups(background=False) runs every warm-up, then READY."""
    settings.ARENA_SCALE_WARMUPS = []
    start_warmups(background=False)
    assert (warmup_calls, get_lifecycle().state) == (["registered"], State.READY)


def test_lifecycle_start_warmups_only_once(settings: Any, warmup_calls: Any) -> None:
    """A second start_warmups() in the same process does nothing."""
    start_warmups(background=False)
    assert start_warmups(background=False) is False


def test_lifecycle_start_warmups_background_stays_starting_until_done(settings: Any) -> None:
    """In the background, the replica is STARTING until the warm-ups finish."""
    gate = threading.Event()
    done = threading.Event()

    def slow() -> None:
        gate.wait(5)

    settings.ARENA_SCALE_WARMUPS = [slow]
    start_warmups()
    starting = get_lifecycle().state
    gate.set()
    for _ in range(500):
        if get_lifecycle().state is State.READY:
            done.set()
            break
        done.wait(0.01)
    assert (starting, done.is_set()) == (State.STARTING, True)


def test_lifecycle_unimportable_warmup_recorded(settings: Any) -> None:
    """A dotted path that does not import is a failed warm-up, not a crash."""
    settings.ARENA_SCALE_WARMUPS = ["no.such.warmup"]
    start_warmups(background=False)
    assert get_lifecycle().warmup_failures == ["no.such.warmup"]


def test_lifecycle_reset_gives_fresh_state() -> None:
    """reset_lifecycle() replaces the process lifecycle."""
    get_lifecycle().begin_drain()
    assert reset_lifecycle().state is State.STARTING


def test_lifecycle_middleware_init_triggers_warmups(settings: Any, warmup_calls: Any) -> None:
    """Building ProbeMiddleware starts the warm-ups (with none pending: READY at once)."""
    from django.http import HttpResponse

    from django_arena_scale.middleware import ProbeMiddleware

    settings.ARENA_SCALE_WARMUPS = []
    ProbeMiddleware(lambda r: HttpResponse())
    for _ in range(500):
        if get_lifecycle().state is State.READY:
            break
        threading.Event().wait(0.01)
    assert warmup_calls == ["registered"]
