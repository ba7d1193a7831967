"""The capacity report printed after generating: what this deployment can hold."""

from __future__ import annotations

from django_arena_scale.deploy.spec import PG_RESERVED_CONNECTIONS, DeploymentSpec

__all__ = ["report"]


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
