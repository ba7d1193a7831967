"""``OPERATIONS.md``: the quick reference of this very deployment, from the same spec.

The prose is the package file ``templates/OPERATIONS.md``; every name and number in it
(services, ports, limits, the timeout chain, the deploy script's commands, the Kubernetes
objects) is an ``@NAME@`` filled from the :class:`DeploymentSpec` and the names the other
renderers use (:mod:`._shared`, the deploy script's variables), so the guide cannot drift
from the files next to it.  The services table and the notes that depend on the spec are
lists of lines (``<!-- @NAME@ -->``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django_arena_scale.deploy._script import SCRIPT, script_variables
from django_arena_scale.deploy._shared import (
    config_name,
    pools,
    prestop_command,
    secret_name,
    server_config_name,
    termination_grace_seconds,
)
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.deploy._templates import fill, read_template

__all__ = ["OPERATIONS", "TEMPLATE", "render", "values"]

OPERATIONS = "OPERATIONS.md"
#: ``templates/OPERATIONS.md`` in this package: the guide's prose, with ``@NAME@`` values.
TEMPLATE = read_template(OPERATIONS)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _span(names: Sequence[str]) -> str:
    if not names:
        return "-"
    if len(names) == 1:
        return f"`{names[0]}`"
    return f"`{names[0]}` .. `{names[-1]}` ({len(names)})"


def _services(spec: DeploymentSpec) -> list[str]:
    rows: list[tuple[str, str, str]] = []
    threads = f" x {spec.threads} threads" if spec.app_server == "gunicorn" else ""
    kind = "ArenaThreadWorker, WSGI" if spec.app_server == "gunicorn" else "uvicorn worker, ASGI"
    api_role = "API" if spec.stream_names else "API, SSE streams and WebSockets"
    plural = "" if spec.workers == 1 else "s"
    rows.append(
        (
            _span(spec.web_names),
            f"{api_role}: gunicorn ({kind}), {spec.workers} worker{plural}{threads}",
            f"{spec.app_port} (container)",
        )
    )
    if spec.backup_names:
        rows.append(
            (
                _span(spec.backup_names),
                "nginx `backup` servers: used only when every API replica fails",
                f"{spec.app_port} (container)",
            )
        )
    if spec.stream_names:
        rows.append(
            (
                _span(spec.stream_names),
                f"SSE streams and WebSockets: gunicorn + uvicorn worker (ASGI), "
                f"{spec.stream_workers} workers",
                f"{spec.app_port} (container)",
            )
        )
    rows.append(
        (
            f"`{spec.nginx_service}`",
            f"load balancer (`{spec.nginx_image}`), upstreams `{spec.api_upstream}` "
            f"(round robin{', ip_hash' if spec.sticky else ''}) and `{spec.stream_upstream}` "
            "(least_conn)",
            f"{spec.http_port} (published); {spec.status_port} stub_status (internal)",
        )
    )
    roles = spec.redis_services
    if roles["cache"] != roles["sessions"]:
        rows.append(
            (
                f"`{roles['cache']}`",
                f"Redis cache, `allkeys-lru`, maxmemory {spec.redis_maxmemory}",
                "6379",
            )
        )
        rows.append(
            (
                f"`{roles['sessions']}`",
                "Redis sessions + channel layer, `noeviction`, maxmemory "
                f"{spec.redis_sessions_maxmemory}",
                "6379",
            )
        )
    else:
        rows.append(
            (
                f"`{roles['cache']}`",
                f"Redis for cache, sessions and channels, `noeviction`, maxmemory "
                f"{spec.redis_sessions_maxmemory}",
                "6379",
            )
        )
    rows.append(
        (
            f"`{spec.postgres_service}`",
            f"PostgreSQL, max_connections {spec.postgres_max_connections}",
            "5432",
        )
    )
    if spec.pgbouncer:
        rows.append(
            (
                f"`{spec.pgbouncer_service}`",
                f"PgBouncer, transaction pooling, {spec.pgbouncer_pool_size} server connections",
                str(spec.database_port),
            )
        )
    rows.append(
        (
            f"`{spec.manage_service}`",
            "one-off `manage.py` jobs (compose profile `jobs`)",
            "-",
        )
    )
    return [_row(row) for row in rows]


def _capacity_note(spec: DeploymentSpec) -> list[str]:
    budget = spec.db_budget
    if budget.exceeded and not budget.pgbouncer:
        return [
            f"The app needs {budget.needed} PostgreSQL connections but only {budget.limit} are "
            "available: enable PgBouncer (`--pgbouncer true`), raise "
            "`postgres_max_connections`, or lower workers x threads.",
            "",
        ]
    if budget.exceeded:
        return [
            f"PgBouncer opens {budget.pgbouncer_server_connections} server connections but "
            f"PostgreSQL allows {budget.limit}: lower `pgbouncer_pool_size`.",
            "",
        ]
    return []


def _k8s_notes(spec: DeploymentSpec) -> list[str]:
    lines = []
    if spec.pgbouncer:
        lines.append(
            f"PgBouncer (`k8s/35-pgbouncer.yaml`, one pod) connects to the URL in the Secret's "
            f"`POSTGRES_PRIMARY_URL`; the app's `DATABASE_URL` names `{spec.pgbouncer_service}:"
            f"6432`, and `DATABASE_REPLICA_URLS` (Secret) the read replicas, reached directly."
        )
    elif spec.postgres_read_replicas:
        lines.append("`DATABASE_REPLICA_URLS` (Secret): the read replicas' URLs, comma-separated.")
    if spec.trusted_proxies:
        lines.append(
            "Behind the proxies " + ", ".join(spec.trusted_proxies) + ", set "
            '`use-forwarded-headers: "true"` and `proxy-real-ip-cidr` to them in the same '
            "ConfigMap, or every client shares one rate limit."
        )
    if spec.server_name != "_":
        lines.append(
            f"TLS for `{spec.server_name}` comes from the Secret `{spec.project}-tls` "
            "(e.g. created by cert-manager)."
        )
    return lines


def _codes(items: Iterable[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


def values(spec: DeploymentSpec) -> dict[str, str]:
    """Every ``@NAME@`` of the template: names and numbers of this deployment."""
    chain, cap, budget = spec.chain, spec.capacity, spec.db_budget
    v = script_variables(spec)
    topology = (
        f"split topology: API on `{spec.web_names[0]}`.. (WSGI), streams on "
        f"`{spec.stream_names[0]}`.. (ASGI)"
        if spec.stream_names
        else f"single topology: every request on `{spec.web_names[0]}`.."
    )
    probes = spec.probe_paths
    found: dict[str, object] = {
        "PROJECT": spec.project,
        "REPLICAS": spec.replicas,
        "SERVES": "any host" if spec.server_name == "_" else f"`{spec.server_name}`",
        "HTTP_PORT": spec.http_port,
        "NGINX_PROFILE": spec.nginx_profile,
        "TOPOLOGY": topology,
        "ENV_FILE": spec.env_file,
        # Capacity
        "API_PROCESSES": cap.api_processes,
        "API_THREADS": cap.api_threads,
        "CONCURRENT_REQUESTS": cap.concurrent_requests,
        "STREAM_PROCESSES": cap.stream_processes,
        "STREAM_CONNECTIONS": cap.stream_connections,
        "STREAM_CONNECTIONS_SERVER": cap.stream_connections_server,
        "NGINX_WORKER_CONNECTIONS": cap.nginx_worker_connections,
        "DB_NEEDED": budget.needed,
        "DB_LIMIT": budget.limit,
        "DB_EXCEEDED": " (EXCEEDED)" if budget.exceeded else "",
        "APP_MEMORY_LIMIT": cap.app_memory_limit_mb,
        "APP_MEMORY_RESERVATION": cap.app_memory_reservation_mb,
        "APP_CPU_LIMIT": f"{cap.app_cpu_limit:g}",
        "REDIS_MEMORY": cap.redis_memory_mb,
        # Limits
        "RATE_GENERAL": spec.rate_general,
        "BURST_GENERAL": spec.burst_general,
        "STREAM_PATHS": _codes(spec.stream_paths),
        "WS_PATH": spec.ws_path,
        "RATE_STREAM": spec.rate_stream,
        "BURST_STREAM": spec.burst_stream,
        "AUTH_PATHS": _codes(spec.auth_paths) or "-",
        "RATE_AUTH": spec.rate_auth,
        "BURST_AUTH": spec.burst_auth,
        "CONN_PER_IP": spec.conn_per_ip,
        "MAX_CONNS": spec.max_conns,
        "MAX_FAILS": spec.max_fails,
        "FAIL_TIMEOUT": spec.fail_timeout,
        "KEEPALIVE": spec.keepalive,
        "NGINX_KEEPALIVE_TIMEOUT": chain.nginx_keepalive_timeout,
        "CLIENT_MAX_BODY_MB": spec.client_max_body_mb,
        "PROBES": _codes(probes[k] for k in ("live", "ready", "health")),
        "STATUS_PATH": probes["status"],
        "INTERNAL_NETWORKS": ", ".join(spec.internal_networks),
        # Timeout chain
        "APP_GRACEFUL": chain.app_graceful,
        "SERVER_GRACEFUL": chain.server_graceful,
        "DRAIN_DELAY": chain.drain_delay,
        "STOP_GRACE": chain.stop_grace_period,
        "WORKER_TIMEOUT": chain.worker_timeout,
        "SERVER_KEEPALIVE": chain.server_keepalive,
        "CONNECT": chain.connect,
        "API_READ": chain.api_read,
        "STREAM_READ": chain.stream_read,
        "PROBE_TIMEOUT": chain.probe,
        "PROBE_PERIOD": chain.probe_period,
        "LIVENESS_THRESHOLD": chain.liveness_failure_threshold,
        "STARTUP_THRESHOLD": chain.startup_failure_threshold,
        # deploy.sh and the drain sequence
        "SCRIPT": SCRIPT,
        "DATA_SERVICES": _codes(spec.data_services),
        "READY_PATH": v["READY_PATH"],
        "LIVE_PATH": v["LIVE_PATH"],
        "FIRST_WEB": spec.web_names[0],
        "LAST_WEB": spec.web_names[-1],
        "WEB_COUNT": len(spec.web_names),
        "IMAGE": spec.image,
        "MANAGE_SERVICE": spec.manage_service,
        "READY_TIMEOUT_DEFAULT": v["READY_TIMEOUT_DEFAULT"],
        "NETWORK": spec.network,
        "COMPOSE_SUBNET": spec.compose_subnet,
        "API_INCLUDE": spec.nginx_servers_include(spec.api_upstream),
        "NGINX_SERVICE": spec.nginx_service,
        "PRESTOP": prestop_command(spec)[-1],
        "TERMINATION_GRACE": termination_grace_seconds(spec),
        # Kubernetes
        "NAMESPACE": spec.namespace,
        "DEPLOYMENTS": _codes(pool["name"] for pool in pools(spec)),
        "FIRST_DEPLOYMENT": pools(spec)[0]["name"],
        "CONFIG_MAP": config_name(spec),
        "SERVER_CONFIG_MAP": server_config_name(spec),
        "MIGRATE_JOB": f"{spec.project}-migrate",
        "SECRET": secret_name(spec),
        # Failures
        "SESSIONS_REDIS": spec.redis_services["sessions"],
        "MEMORY_LIMIT": spec.memory_limit_mb,
    }
    return {name: str(value) for name, value in found.items()}


def render_operations(spec: DeploymentSpec) -> str:
    """The text of ``OPERATIONS.md``: the template with this deployment's values."""
    blocks = {
        "SERVICE_ROWS": _services(spec),
        "CAPACITY_NOTE": _capacity_note(spec),
        "K8S_NOTES": _k8s_notes(spec),
    }
    return fill(TEMPLATE, values(spec), blocks)


def render(spec: DeploymentSpec) -> dict[str, str]:
    """``OPERATIONS.md``."""
    return {OPERATIONS: render_operations(spec)}
