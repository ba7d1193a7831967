"""``OPERATIONS.md``: the quick reference of this very deployment, from the same spec.

Every name and number in it (services, ports, limits, the timeout chain, the deploy script's
commands, the Kubernetes objects) comes from the :class:`DeploymentSpec` and the other
renderers' helpers, so the guide cannot drift from the files next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django_arena_scale.deploy import _shared as k8s
from django_arena_scale.deploy.script import SCRIPT, script_variables
from django_arena_scale.deploy.spec import DeploymentSpec

__all__ = ["OPERATIONS", "render"]

OPERATIONS = "OPERATIONS.md"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _span(names: Sequence[str]) -> str:
    if not names:
        return "-"
    if len(names) == 1:
        return f"`{names[0]}`"
    return f"`{names[0]}` .. `{names[-1]}` ({len(names)})"


def _services(spec: DeploymentSpec) -> list[str]:
    rows: list[tuple[str, str, str]] = []
    threads = f" x {spec.threads} threads" if spec.app_server == "gunicorn" else ""
    kind = "gthread, WSGI" if spec.app_server == "gunicorn" else "uvicorn worker, ASGI"
    api_role = "API" if spec.stream_names else "API, SSE streams and WebSockets"
    rows.append(
        (
            _span(spec.web_names),
            f"{api_role}: gunicorn ({kind}), {spec.workers} workers{threads}",
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
    return _table(("Service", "Role", "Port"), rows)


def _capacity(spec: DeploymentSpec) -> list[str]:
    cap = spec.capacity
    budget = spec.db_budget
    rows = [
        ("API worker processes / threads", f"{cap.api_processes} / {cap.api_threads}"),
        ("Concurrent API requests", cap.concurrent_requests),
        ("Streaming worker processes", cap.stream_processes),
        (
            "Stream connections admitted by nginx (max_conns x replicas)",
            cap.stream_connections,
        ),
        ("Stream connections the servers hold", cap.stream_connections_server),
        ("nginx worker_connections", cap.nginx_worker_connections),
        (
            "Database connections needed / allowed",
            f"{budget.needed} / {budget.limit}" + (" (EXCEEDED)" if budget.exceeded else ""),
        ),
        (
            "App memory limit / reservation (MiB)",
            f"{cap.app_memory_limit_mb} / {cap.app_memory_reservation_mb}",
        ),
        ("App CPU limit", f"{cap.app_cpu_limit:g}"),
        ("Redis memory (MiB)", cap.redis_memory_mb),
    ]
    lines = _table(("Figure", "Value"), rows)
    if budget.exceeded and not budget.pgbouncer:
        lines += [
            f"The app needs {budget.needed} PostgreSQL connections but only {budget.limit} are "
            "available: enable PgBouncer (`--pgbouncer true`), raise "
            "`postgres_max_connections`, or lower workers x threads.",
            "",
        ]
    elif budget.exceeded:
        lines += [
            f"PgBouncer opens {budget.pgbouncer_server_connections} server connections but "
            f"PostgreSQL allows {budget.limit}: lower `pgbouncer_pool_size`.",
            "",
        ]
    return lines


def _limits(spec: DeploymentSpec) -> list[str]:
    stream = ", ".join(f"`{p}`" for p in spec.stream_paths)
    auth = ", ".join(f"`{p}`" for p in spec.auth_paths) or "-"
    rows = [
        ("General requests per client IP", f"{spec.rate_general} r/s, burst {spec.burst_general}"),
        (
            f"Streams ({stream}, `{spec.ws_path}`)",
            f"{spec.rate_stream} r/s, burst {spec.burst_stream}",
        ),
        (f"Auth ({auth})", f"{spec.rate_auth} r/s, burst {spec.burst_auth}"),
        ("Connections per client IP", spec.conn_per_ip),
        ("Answer when a limit is hit", "429"),
        ("max_conns per replica", spec.max_conns),
        (
            "Passive health",
            f"max_fails={spec.max_fails}, fail_timeout={spec.fail_timeout}s; counted and "
            "retried on transport failures only (refused, reset, timeout), never on a status "
            "the application sent; a POST that reached a replica is never retried",
        ),
        (
            "Upstream keepalive",
            f"{spec.keepalive} idle connections per worker, {spec.chain.nginx_keepalive_timeout}s",
        ),
        ("Largest request body", f"{spec.client_max_body_mb} MiB"),
        (
            "Probes",
            ", ".join(f"`{spec.probe_paths[k]}`" for k in ("live", "ready", "health"))
            + ", `"
            + spec.probe_paths["status"]
            + "` only from "
            + ", ".join(spec.internal_networks)
            + f", limited like `/` ({spec.rate_general} r/s); orchestrators probe replicas "
            "directly",
        ),
    ]
    return _table(("Limit", "Value"), rows)


def _chain(spec: DeploymentSpec) -> list[str]:
    chain = spec.chain
    rows = [
        ("App drains streams and runs shutdown hooks", f"{chain.app_graceful}s"),
        ("gunicorn `graceful_timeout` (after SIGTERM)", f"{chain.server_graceful}s"),
        ("Drain delay (marked down, before SIGTERM)", f"{chain.drain_delay}s"),
        (
            "Stop grace: compose `stop_grace_period`, k8s `terminationGracePeriodSeconds`",
            f"{chain.stop_grace_period}s",
        ),
        ("gunicorn worker `timeout` (heartbeat)", f"{chain.worker_timeout}s"),
        (
            "App keep-alive / nginx upstream keepalive_timeout",
            f"{chain.server_keepalive}s / {chain.nginx_keepalive_timeout}s",
        ),
        ("nginx connect / API read timeout", f"{chain.connect}s / {chain.api_read}s"),
        ("nginx read timeout, SSE and WebSockets", f"{chain.stream_read}s"),
        ("Probe timeout / period", f"{chain.probe}s / {chain.probe_period}s"),
        (
            "Liveness / startup failure thresholds (k8s)",
            f"{chain.liveness_failure_threshold} / {chain.startup_failure_threshold}",
        ),
    ]
    lines = _table(("Timeout", "Seconds"), rows)
    lines += [
        f"Invariant: {chain.app_graceful} < {chain.server_graceful} and "
        f"{chain.stop_grace_period} >= {chain.drain_delay} + {chain.server_graceful} + margin. "
        "A stream longer than the SSE read timeout is cut by nginx.",
        "",
    ]
    return lines


def _commands(spec: DeploymentSpec) -> list[str]:
    v = script_variables(spec)
    first, last = spec.web_names[0], spec.web_names[-1]
    rows = [
        (
            "`start`",
            "pre-flight (docker, compose, `"
            + v["ENV_FILE"]
            + "`), build the image, start "
            + ", ".join(f"`{s}`" for s in spec.data_services)
            + ", migrate, collectstatic, then every replica and nginx",
        ),
        ("`stop`", "stop every service, each within its stop_grace_period"),
        ("`status`", "containers, and replicas marked down or parked in nginx"),
        (
            "`health`",
            f"`{v['READY_PATH']}` and `{v['LIVE_PATH']}` of each replica, nginx end to end",
        ),
        (
            "`scale N`",
            f"serve with `{first}`..`web-N` (N <= {len(spec.web_names)}); the rest are drained, "
            "stopped and parked; more needs `generate_lb_config --replicas N`",
        ),
        (
            "`rolling-restart`",
            "build, migrate, then the drain sequence below, one replica at a time",
        ),
        ("`logs [SERVICE...]`", f"follow logs, e.g. `./{SCRIPT} logs {last}`"),
        ("`build`", f"build `{spec.image}` from the project root (the directory above this one)"),
        ("`migrate`, `collectstatic`", f"one-off `{spec.manage_service}` container"),
    ]
    return [
        *_table(("`./" + SCRIPT + "` command", "What it does"), rows),
        "Environment: `ARENA_SKIP_BUILD=1` pulls the image instead of building it; "
        f"`ARENA_READY_TIMEOUT=SECONDS` (default {v['READY_TIMEOUT_DEFAULT']}) bounds the wait "
        "for a replica; `ARENA_BUILD_CONTEXT` and `ARENA_DEPLOY_DIR` move the build context.",
        "",
    ]


def _drain(spec: DeploymentSpec) -> list[str]:
    v = script_variables(spec)
    include = spec.nginx_servers_include(spec.api_upstream)
    return [
        "`rolling-restart` never reloads nginx: a reload closes clients' idle keep-alive "
        "connections, racing with requests they send on them (browsers and HTTP client pools "
        "lose those; a POST is never resent).",
        "",
        "1. `python manage.py drain on` in the replica: it stops listening (idle keep-alive "
        "connections close, requests in flight finish with `Connection: close`), `"
        + v["READY_PATH"]
        + "` answers 503, SSE streams end with a reconnect hint, WebSockets close with 1012. "
        "nginx's next connection to it is refused before anything is sent and goes to the "
        f"next replica, a POST too; after {spec.max_fails} refusals nginx skips it for "
        f"{spec.fail_timeout}s (fail_timeout).",
        f"2. Wait {v['DRAIN_DELAY']}s, then `docker compose stop --timeout {v['STOP_GRACE']}`.",
        "3. Recreate it (`docker compose up -d --no-deps --force-recreate`) and wait up to "
        f"{v['READY_TIMEOUT_DEFAULT']}s for `{v['READY_PATH']}`. It keeps its fixed address "
        f"on `{spec.network}` (`{spec.compose_subnet}`), so the address nginx resolved at start "
        "still reaches it.",
        f"4. Wait until {spec.fail_timeout}s + 1s have passed since it was ready before "
        "draining the next replica: nginx skips a server for fail_timeout after its last "
        "refused connection, which came before the new container listened; after that "
        "nginx sends to it again, so another replica of each pool always takes the traffic.",
        f"5. A replica that is not ready in time is marked `down` in `{include}` (and the "
        f"streaming include) and nginx reloaded in `{spec.nginx_service}`, and the restart "
        "stops; `scale N` parks replicas the same way (mark + reload). `start` clears marks.",
        "",
        "Kubernetes does the same with the pod's preStop hook (`"
        + k8s.prestop_command(spec)[-1]
        + "`), then SIGTERM, within terminationGracePeriodSeconds "
        f"({k8s.termination_grace_seconds(spec)}s).",
        "",
    ]


def _kubernetes(spec: DeploymentSpec) -> list[str]:
    ns = spec.namespace
    secret = k8s.secret_name(spec)
    names = [pool["name"] for pool in k8s.pools(spec)]
    lines = [
        f"Namespace `{ns}`; Deployments "
        + ", ".join(f"`{n}`" for n in names)
        + " (each with a Service, HPA and PodDisruptionBudget); ConfigMaps "
        f"`{spec.project}-config` and `{k8s.server_config_name(spec)}`; Job "
        f"`{spec.project}-migrate`; Ingresses for the API, streams, auth, probes and "
        f"`{spec.probe_paths['status']}` (internal networks only).",
        "",
        "```sh",
        "kubectl apply -f k8s/00-namespace.yaml",
        f"kubectl -n {ns} create secret generic {secret} --from-env-file={spec.env_file}",
        f"kubectl -n {ns} delete job {spec.project}-migrate --ignore-not-found",
        "kubectl apply -f k8s/",
        f"kubectl -n {ns} wait --for=condition=complete job/{spec.project}-migrate --timeout=15m",
        f"kubectl -n {ns} rollout status deployment/{names[0]}",
        "```",
        "",
        f"The Secret `{secret}` holds SECRET_KEY, DATABASE_URL, REDIS_URL, SESSION_REDIS_URL, "
        "CHANNEL_REDIS_URL and the LLM keys; nothing secret is in the ConfigMap. "
        "ingress-nginx answers a rate limit with 503 unless its controller ConfigMap sets "
        '`limit-req-status-code: "429"` and `limit-conn-status-code: "429"`; it sends its own '
        "X-Request-ID upstream.",
    ]
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
    return [*lines, ""]


def _failures(spec: DeploymentSpec) -> list[str]:
    v = script_variables(spec)
    sessions = spec.redis_services["sessions"]
    last = spec.web_names[-1]
    rows = [
        (
            "502 from nginx",
            f"a replica is down or not listening: `./{SCRIPT} health`, "
            f"`./{SCRIPT} logs {last}`, `docker compose logs {spec.nginx_service}`",
        ),
        (
            "503 from nginx",
            f"every replica failed {spec.max_fails} times within {spec.fail_timeout}s, or all "
            f"are draining: `./{SCRIPT} status`",
        ),
        (
            "504, or a stream cut after a fixed time",
            f"API read timeout {spec.chain.api_read}s, stream read timeout "
            f"{spec.chain.stream_read}s",
        ),
        (
            "429",
            f"a client passed {spec.rate_general} r/s (streams {spec.rate_stream}, auth "
            f"{spec.rate_auth}) or {spec.conn_per_ip} connections; behind a proxy, check "
            "`trusted_proxies`",
        ),
        (
            f"`{v['READY_PATH']}` 503",
            "starting, draining or a critical dependency failing: "
            f"`{spec.probe_paths['status']}` from an internal network shows which",
        ),
        (
            "Tokens arrive in bursts",
            "something buffers the SSE response: the stream location needs "
            "`proxy_buffering off` and `gzip off`",
        ),
        (
            "Users logged out at random",
            f"sessions evicted: `{sessions}` must run `noeviction`; "
            f"`docker compose exec {sessions} redis-cli info memory`",
        ),
        (
            "`too many connections` from PostgreSQL",
            f"{spec.db_budget.needed} needed vs {spec.db_budget.limit} allowed: enable PgBouncer "
            "or lower workers x threads",
        ),
        (
            "Exit code 137",
            f"SIGKILL: memory limit {spec.memory_limit_mb} MiB (OOM), or shutdown longer than "
            f"{spec.chain.stop_grace_period}s",
        ),
        (
            "WORKER TIMEOUT in the logs",
            f"a worker was silent for {spec.chain.worker_timeout}s; its thread stacks are logged",
        ),
        (
            "rolling-restart stops at a replica",
            f"it was not ready within {v['READY_TIMEOUT_DEFAULT']}s and stays marked down; "
            f"fix it, then `./{SCRIPT} rolling-restart` again (or `./{SCRIPT} start`)",
        ),
        (
            "`manage.py drain on failed` during a restart",
            "the replica has no `ARENA_SCALE_DRAIN_FILE` in its environment: its streams end at "
            "SIGTERM instead of with a reconnect hint",
        ),
        (
            "`nginx -s reload` fails: host not found in upstream",
            "a replica container is stopped while its line is active (static upstreams): "
            f"start it, or use `./{SCRIPT} scale N`",
        ),
    ]
    return _table(("Symptom", "Where to look"), rows)


def render_operations(spec: DeploymentSpec) -> str:
    """The text of ``OPERATIONS.md``."""
    topology = (
        f"split topology: API on `{spec.web_names[0]}`.. (WSGI), streams on "
        f"`{spec.stream_names[0]}`.. (ASGI)"
        if spec.stream_names
        else f"single topology: every request on `{spec.web_names[0]}`.."
    )
    server = "any host" if spec.server_name == "_" else f"`{spec.server_name}`"
    lines = [
        f"# Operations: `{spec.project}`, {spec.replicas} API replicas",
        "",
        "<!-- Generated by `manage.py generate_lb_config` from one DeploymentSpec; change the "
        "spec and re-run it instead of editing here. -->",
        "",
        f"Serves {server} on port {spec.http_port} through nginx ({spec.nginx_profile}), "
        f"{topology}. Secrets live only in `{spec.env_file}` (see `env.example`).",
        "",
        "## Services",
        "",
        *_services(spec),
        "## Capacity",
        "",
        *_capacity(spec),
        "## Limits",
        "",
        *_limits(spec),
        "## Timeout chain",
        "",
        *_chain(spec),
        f"## `{SCRIPT}`",
        "",
        *_commands(spec),
        "## Drain sequence (one replica)",
        "",
        *_drain(spec),
        "## Kubernetes (`k8s/`)",
        "",
        *_kubernetes(spec),
        "## When something fails",
        "",
        *_failures(spec),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def render(spec: DeploymentSpec) -> dict[str, str]:
    """``OPERATIONS.md``."""
    return {OPERATIONS: render_operations(spec)}
