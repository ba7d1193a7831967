"""What a deployment can hold: the capacity maths of a spec and the report printed after a render.

The functions here compute the derived numbers that
:class:`~django_arena_scale.deploy._spec.DeploymentSpec` exposes as cached properties
(``db_budget``, ``capacity``, ``redis_memory_mb``, ``nginx_worker_connections``,
``nginx_rlimit_nofile``); :func:`report` writes them for a human.  Pure Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_arena_scale.deploy._spec import DeploymentSpec

__all__ = [
    "PG_RESERVED_CONNECTIONS",
    "Capacity",
    "DbBudget",
    "capacity",
    "db_budget",
    "nginx_rlimit_nofile",
    "nginx_worker_connections",
    "redis_memory_mb",
    "report",
]

#: Connections PostgreSQL keeps for superusers (its default); the app cannot use them.
PG_RESERVED_CONNECTIONS = 3


@dataclass(frozen=True)
class DbBudget:
    """PostgreSQL connections the app needs against what the server allows."""

    api: int
    stream: int
    jobs: int
    needed: int
    limit: int
    pgbouncer: bool
    pgbouncer_server_connections: int

    @property
    def exceeded(self) -> bool:
        """True when the app would open more connections than PostgreSQL accepts."""
        if self.pgbouncer:
            return self.pgbouncer_server_connections > self.limit
        return self.needed > self.limit


@dataclass(frozen=True)
class Capacity:
    """Concurrency and memory of the whole deployment."""

    api_processes: int
    api_threads: int
    stream_processes: int
    concurrent_requests: int
    stream_connections: int
    stream_connections_server: int
    app_memory_limit_mb: int
    app_memory_reservation_mb: int
    app_cpu_limit: float
    redis_memory_mb: int
    nginx_worker_connections: int


def db_budget(spec: DeploymentSpec) -> DbBudget:
    """Connections per pool: one per gthread thread, one per ASGI worker, one for jobs."""
    api = (spec.replicas + spec.backup_replicas) * spec.workers
    if spec.app_server == "gunicorn":
        api *= spec.threads  # gthread: one persistent connection per thread
    # An ASGI worker runs sync ORM code on one thread_sensitive executor thread.
    stream = len(spec.stream_names) * spec.stream_workers
    jobs = 1  # migrations / collectstatic one-off container
    return DbBudget(
        api=api,
        stream=stream,
        jobs=jobs,
        needed=api + stream + jobs,
        limit=spec.postgres_max_connections - PG_RESERVED_CONNECTIONS,
        pgbouncer=spec.pgbouncer,
        pgbouncer_server_connections=spec.pgbouncer_pool_size,
    )


def redis_memory_mb(spec: DeploymentSpec) -> int:
    """``maxmemory`` summed over the distinct Redis servers (MiB)."""
    sizes = {spec.redis_services["cache"]: _size_mb(spec.redis_maxmemory)}
    sizes.setdefault(spec.redis_services["sessions"], _size_mb(spec.redis_sessions_maxmemory))
    return sum(sizes.values())


def nginx_worker_connections(spec: DeploymentSpec) -> int:
    """Per nginx worker: every open stream and in-flight API request, both ends, rounded up.

    Streams are long-lived, so all of the stream capacity (``max_conns`` x streaming
    replicas) may be open at once; API requests are bounded by the API pool's threads.
    Sized as if one worker held them all (accept is not balanced across workers), two
    file descriptors per proxied request, plus the keepalive pools and 1024 of headroom
    for idle client keep-alive connections.  Not ``max_conns`` x every replica: each
    connection slot costs memory in every worker, whether used or not.
    """
    stream = len(spec.stream_members) * spec.max_conns
    api = (spec.replicas + spec.backup_replicas) * spec.workers
    if spec.app_server == "gunicorn":
        api *= spec.threads
    needed = 2 * (stream + api) + 2 * spec.keepalive + 1024
    return max(1024, math.ceil(needed / 1024) * 1024)


def nginx_rlimit_nofile(spec: DeploymentSpec) -> int:
    """nginx's ``worker_rlimit_nofile``: two descriptors per worker connection."""
    return 2 * spec.nginx_worker_connections


def capacity(spec: DeploymentSpec) -> Capacity:
    """Processes, threads, stream slots, memory and CPU of the whole deployment."""
    api_replicas = spec.replicas + spec.backup_replicas
    n_app = len(spec.app_services)
    if spec.topology == "split":
        stream_server = len(spec.stream_names) * spec.max_conns
    elif spec.app_server == "uvicorn":
        stream_server = spec.replicas * spec.max_conns
    else:
        stream_server = spec.replicas * spec.workers * spec.threads  # a thread per stream
    threads = spec.threads if spec.app_server == "gunicorn" else 1
    return Capacity(
        api_processes=api_replicas * spec.workers,
        api_threads=api_replicas * spec.workers * threads,
        stream_processes=len(spec.stream_names) * spec.stream_workers,
        concurrent_requests=spec.replicas * spec.workers * threads,
        stream_connections=len(spec.stream_members) * spec.max_conns,
        stream_connections_server=stream_server,
        app_memory_limit_mb=n_app * spec.memory_limit_mb,
        app_memory_reservation_mb=n_app * spec.memory_reservation_mb,
        app_cpu_limit=round(n_app * spec.cpu_limit, 2),
        redis_memory_mb=spec.redis_memory_mb,
        nginx_worker_connections=spec.nginx_worker_connections,
    )


def _size_mb(size: str) -> int:
    number, unit = int(size[:-2]), size[-2:]
    return {"kb": max(1, number // 1024), "mb": number, "gb": number * 1024}[unit]


def report(spec: DeploymentSpec) -> str:
    """Workers, concurrency, database budget, memory, streams and the timeout chain."""
    cap, db, chain = spec.capacity, spec.db_budget, spec.chain
    api_replicas = spec.replicas + spec.backup_replicas
    pool = f"{api_replicas} API replicas x {spec.workers} {spec.app_server} workers"
    if spec.app_server == "gunicorn":
        pool += f" x {spec.threads} threads"
    if spec.stream_names:
        pool += f", {len(spec.stream_names)} streaming replicas x {spec.stream_workers} uvicorn"
        pool += " workers"
    lines = [
        f"Capacity ({pool}):",
        f"  workers: {cap.api_processes} API processes, {cap.api_threads} threads"
        + (f"; {cap.stream_processes} streaming processes" if spec.stream_names else ""),
        f"  concurrent requests: {cap.concurrent_requests} "
        f"({spec.replicas} replicas x {spec.workers} workers"
        + (f" x {spec.threads} threads)" if spec.app_server == "gunicorn" else ")"),
        f"  stream capacity: {cap.stream_connections} connections admitted by nginx "
        f"(max_conns {spec.max_conns} x {len(spec.stream_members)} replicas), "
        f"{cap.stream_connections_server} held by the servers",
    ]
    if cap.stream_connections_server < cap.stream_connections:
        lines.append(
            "    note: under gthread every open stream holds a thread; "
            "--topology split serves streams on uvicorn."
        )
    breakdown = f"{db.api} API + {db.stream} streaming + {db.jobs} job"
    limit = (
        f"{db.limit} allowed (max_connections {spec.postgres_max_connections} - "
        f"{PG_RESERVED_CONNECTIONS} reserved)"
    )
    if db.pgbouncer:
        status = "EXCEEDED" if db.exceeded else "ok"
        lines.append(
            f"  database connections: {db.needed} clients ({breakdown}) pooled by PgBouncer "
            f"into {db.pgbouncer_server_connections} server connections of {limit}: {status}"
        )
        if db.exceeded:
            lines.append(
                "    advice: lower --pgbouncer-pool-size or raise --postgres-max-connections."
            )
    else:
        status = f"EXCEEDED by {db.needed - db.limit}" if db.exceeded else "ok"
        lines.append(
            f"  database connections: {db.needed} needed ({breakdown}) of {limit}: {status}"
        )
        if db.exceeded:
            lines.append(
                "    advice: enable PgBouncer (--pgbouncer), raise "
                "--postgres-max-connections, or lower --workers/--threads."
            )
    n_app = len(spec.app_services)
    lines += [
        f"  memory: {cap.app_memory_limit_mb} MiB limit / {cap.app_memory_reservation_mb} MiB "
        f"reserved for {n_app} app containers, plus {cap.redis_memory_mb} MiB Redis maxmemory",
        f"  cpu: {cap.app_cpu_limit:g} limit / {round(n_app * spec.cpu_reservation, 2):g} reserved",
        f"  nginx: worker_connections {cap.nginx_worker_connections}, "
        f"worker_rlimit_nofile {spec.nginx_rlimit_nofile}",
        f"  timeouts: drain {chain.drain_delay}s, app {chain.app_graceful}s < graceful "
        f"{chain.server_graceful}s < stop grace {chain.stop_grace_period}s; keep-alive nginx "
        f"{chain.nginx_keepalive_timeout}s < server {chain.server_keepalive}s; read API "
        f"{chain.api_read}s, streams {chain.stream_read}s",
    ]
    return "\n".join(lines) + "\n"
