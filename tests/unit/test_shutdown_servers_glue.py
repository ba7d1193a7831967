"""gunicorn hooks and the uvicorn worker's timeout arithmetic (no server started)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from django_arena_scale.lifecycle import gunicorn as ghooks
from django_arena_scale.lifecycle._hooks import get_hooks
from django_arena_scale.lifecycle._state import Lifecycle, State, reset_lifecycle
from django_arena_scale.lifecycle.uvicorn import graceful_shutdown_timeout, notify_interval


class FakeWorker:
    def __init__(self) -> None:
        self.notified = 0
        self.pid = 4242

    def notify(self) -> None:
        self.notified += 1


@pytest.fixture(autouse=True)
def lifecycle() -> Iterator[Lifecycle]:
    term = signal.getsignal(signal.SIGTERM)
    lc = reset_lifecycle(Lifecycle(clock=lambda: 100.0))
    yield lc
    signal.signal(signal.SIGTERM, term)
    reset_lifecycle()
    get_hooks().reset()


def test_gunicorn_hooks_module_exports_exactly_the_hooks_generated_configs_import() -> None:
    """The names a generated gunicorn.conf.py imports are the module's hooks (and the
    config-time ``prepare_master``), all callable."""
    import re

    from django_arena_scale.deploy._server import HOOKS_IMPORT

    imported = re.findall(r"^    (\w+),$", HOOKS_IMPORT, re.M)
    expected = [
        "child_exit",
        "on_exit",
        "on_starting",
        "post_worker_init",
        "prepare_master",
        "when_ready",
        "worker_abort",
        "worker_exit",
        "worker_int",
    ]
    assert sorted(ghooks.__all__) == sorted(imported) == expected
    assert all(callable(getattr(ghooks, name)) for name in ghooks.__all__)


def test_post_worker_init_marks_ready(lifecycle: Lifecycle) -> None:
    """A booted worker is READY."""
    ghooks.post_worker_init(FakeWorker())
    assert lifecycle.state is State.READY


def test_post_worker_init_heartbeats_on_notify(lifecycle: Lifecycle) -> None:
    """The worker's notify() also records the /live/ heartbeat."""
    worker = FakeWorker()
    ghooks.post_worker_init(worker)
    lifecycle._last_heartbeat = None
    worker.notify()
    assert (worker.notified, lifecycle.heartbeat_age()) == (1, 0.0)


def test_post_worker_init_makes_sigterm_drain(lifecycle: Lifecycle) -> None:
    """SIGTERM to a gthread worker begins the drain, then runs gunicorn's handler."""
    seen: list[int] = []

    def gunicorn_exit(sig: int, frame: FrameType | None) -> None:
        seen.append(sig)

    signal.signal(signal.SIGTERM, gunicorn_exit)
    ghooks.post_worker_init(FakeWorker())
    signal.raise_signal(signal.SIGTERM)
    assert lifecycle.state is State.DRAINING
    assert seen == [signal.SIGTERM]


def test_worker_exit_drains_and_runs_hooks(lifecycle: Lifecycle) -> None:
    """worker_exit begins the drain and runs the @on_shutdown hooks once."""
    calls: list[str] = []
    registry = get_hooks()
    registry.reset()

    def hook(sender: str) -> None:
        calls.append(sender)

    registry.register(hook)
    try:
        ghooks.worker_exit(object(), FakeWorker())
        ghooks.worker_int(FakeWorker())
    finally:
        registry.unregister(hook)
    assert lifecycle.state is State.DRAINING
    assert calls == ["gunicorn.worker_exit"]


def test_worker_abort_logs_thread_stacks(caplog: pytest.LogCaptureFixture) -> None:
    """A timed-out worker logs where its threads were."""
    ghooks.worker_abort(FakeWorker())
    assert "Thread 'MainThread'" in caplog.text


def test_uvicorn_graceful_timeout_below_gunicorn() -> None:
    """uvicorn gets less than gunicorn's graceful_timeout, keeping room for the hooks."""
    assert graceful_shutdown_timeout(30.0) == 29.0


def test_uvicorn_graceful_timeout_keeps_half_when_short() -> None:
    """A tiny graceful_timeout still leaves uvicorn half of it."""
    assert graceful_shutdown_timeout(1.0) == 0.5


def test_uvicorn_notify_interval_inside_heartbeat_timeout() -> None:
    """The worker notifies (and beats) several times per /live/ threshold."""
    assert notify_interval(30.0, 30.0) == 7.5


def test_uvicorn_worker_class_is_importable() -> None:
    """The worker class path used in gunicorn.conf.py resolves."""
    from django_arena_scale.lifecycle.uvicorn import UvicornWorker

    assert UvicornWorker.__name__ == "UvicornWorker"


async def test_uvicorn_server_drains_when_leaving_on_max_requests(lifecycle: Lifecycle) -> None:
    """A worker leaving on max_requests drains first, so its streams get the reconnect event."""
    from uvicorn.config import Config

    from django_arena_scale.lifecycle.uvicorn import DrainingServer

    server = DrainingServer(
        Config(app=lambda scope, receive, send: None, limit_max_requests=1, timeout_keep_alive=5)
    )
    server.server_state.total_requests = 5
    # It retires first: answers with Connection: close for its keep-alive timeout...
    assert not await server.on_tick(1)
    assert lifecycle.state is State.DRAINING
    assert server.retire_until is not None
    # ...then stops accepting and leaves after a last short grace.
    server.retire_until = 0.0
    assert not await server.on_tick(2)
    assert server.final_until is not None
    server.final_until = 0.0
    assert await server.on_tick(3)


async def test_uvicorn_leaving_worker_drained_long_enough_leaves_at_once(
    lifecycle: Lifecycle,
) -> None:
    """A replica drained for longer than the keep-alive timeout has nothing left to retire."""
    from uvicorn.config import Config

    from django_arena_scale.lifecycle.uvicorn import DrainingServer

    server = DrainingServer(Config(app=lambda scope, receive, send: None, timeout_keep_alive=5))
    server.draining_since = -100.0
    server.should_exit = True
    assert not await server.on_tick(1)  # the last grace after it stopped accepting
    server.final_until = 0.0
    assert await server.on_tick(2)


async def test_uvicorn_server_keeps_serving_below_max_requests(lifecycle: Lifecycle) -> None:
    """Below the limit a tick changes nothing."""
    from uvicorn.config import Config

    from django_arena_scale.lifecycle.uvicorn import DrainingServer

    lifecycle.mark_ready()
    server = DrainingServer(Config(app=lambda scope, receive, send: None, limit_max_requests=100))
    assert not await server.on_tick(1)
    assert lifecycle.state is State.READY


def test_generated_config_prepares_metrics_only_when_gunicorn_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preload_app imports the app (and prometheus_client) before ``on_starting``, so the
    generated config chooses the metrics directory while gunicorn loads it, under the name
    gunicorn gives it; read by anything else (a test, a linter) it has no side effect, and
    a second load in the same master (SIGHUP) does not empty the directory again."""
    from django_arena_scale.deploy import DeploymentSpec
    from django_arena_scale.deploy import _server as server

    text = server.render(DeploymentSpec())["gunicorn.conf.py"]
    assert "preload_app = True" in text
    calls: list[str] = []

    def prepare() -> str:  # the real one also checks prometheus_client's import state
        calls.append("prepare")
        return str(tmp_path)

    monkeypatch.setattr(ghooks, "prepare_multiprocess_dir", prepare)
    monkeypatch.setattr(ghooks, "_PREPARED", {})
    exec(compile(text, "gunicorn.conf.py", "exec"), {"__name__": "tool"})
    assert calls == []
    exec(compile(text, "gunicorn.conf.py", "exec"), {"__name__": "__config__"})
    assert calls == ["prepare"]
    exec(compile(text, "gunicorn.conf.py", "exec"), {"__name__": "__config__"})
    ghooks.on_starting(None)
    assert calls == ["prepare"]
