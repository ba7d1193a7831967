"""The local stack's Redis servers: one per distinct Redis service of the spec, on loopback.

The cache alone gets ``allkeys-lru`` and the spec's ``redis_maxmemory``; a server that holds
sessions or channels gets ``noeviction`` and ``redis_sessions_maxmemory`` (an evicted session
logs a user out).  No persistence: the stack's data lives as long as the stack.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._host import log_tail
from django_arena_scale.stack._process import ManagedProcess

if TYPE_CHECKING:
    from django_arena_scale.deploy._spec import DeploymentSpec

__all__ = ["RedisService", "launch", "planned"]


@dataclass
class RedisService:
    name: str
    port: int
    roles: list[str]
    policy: str
    maxmemory: str
    process: ManagedProcess
    state: str = "new"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "pid": self.process.pid,
            "roles": self.roles,
            "maxmemory_policy": self.policy,
            "state": self.state,
            "url": f"redis://127.0.0.1:{self.port}/0",
        }


def planned(
    spec: DeploymentSpec, redis_bin: str, data_root: Path, log_dir: Path
) -> Iterator[RedisService]:
    """Each Redis server of ``spec``, not started yet (its data directory is created)."""
    roles: dict[str, list[str]] = {}
    for role, service in spec.redis_services.items():
        roles.setdefault(service, []).append(role)
    for service, port in spec.local_redis_ports.items():
        cache_only = roles[service] == ["cache"]
        policy = "allkeys-lru" if cache_only else "noeviction"
        maxmemory = spec.redis_maxmemory if cache_only else spec.redis_sessions_maxmemory
        data = data_root / service
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_bin,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data),
            "--maxmemory", maxmemory,
            "--maxmemory-policy", policy,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        process = ManagedProcess(service, argv, log_path=log_dir / f"{service}.log", cwd=str(data))
        yield RedisService(service, port, sorted(roles[service]), policy, maxmemory, process)


def launch(redis: RedisService) -> None:
    """Start ``redis`` and wait (10 s at most) until it accepts connections."""
    redis.process.start()
    deadline = time.monotonic() + 10
    while True:
        if not redis.process.alive():
            redis.state = "failed"
            msg = (
                f"redis-server {redis.name} on port {redis.port} exited with code "
                f"{redis.process.returncode()}: {log_tail(redis.process.log_path or Path())}."
            )
            raise StackError(msg)
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", redis.port), timeout=0.2),
        ):
            break
        if time.monotonic() > deadline:
            msg = f"redis-server {redis.name} did not listen on port {redis.port} within 10s."
            raise StackError(msg)
        time.sleep(0.05)
    redis.state = "running"
