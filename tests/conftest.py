from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session (flushed by tests that need it empty)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A real redis-server of its own, for tests that stop, kill or restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_probe_state() -> Iterator[None]:
    """Every test starts with a fresh process lifecycle and an empty check-runner cache."""
    from django_arena_scale.health import fastconf
    from django_arena_scale.health.builtin import close_clients
    from django_arena_scale.health.service import reset_runner
    from django_arena_scale.lifecycle.state import reset_lifecycle

    fastconf.clear()
    reset_lifecycle()
    reset_runner()
    yield
    reset_lifecycle()
    reset_runner()
    close_clients()
