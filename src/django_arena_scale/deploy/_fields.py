"""The fields of :class:`~django_arena_scale.deploy._spec.DeploymentSpec` and their validators.

Each field is declared once, with its default, its CLI help and its rule (``metadata``:
kind, range, choices, token); :func:`check_field` validates one value against that rule and
:func:`parse_cli_value` turns a command-line string into the field's type.  Rules that
relate several fields live with the spec (``DeploymentSpec._check_cross_field``).  Pure
Python.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPOSE_SUBNET_MAX_PREFIX",
    "DOCKER_DEFAULT_BRIDGE",
    "MAX_REPLICAS",
    "PRIVATE_PROXY_NETWORKS",
    "SpecError",
    "SpecFields",
    "check_field",
    "parse_cli_value",
    "trusted_proxy_problem",
]

MAX_REPLICAS = 500


class SpecError(ValueError):
    """A field of the deployment spec is invalid: names the field, the value and the rule."""

    def __init__(self, field_name: str, value: Any, rule: str) -> None:
        self.field = field_name
        self.value = value
        self.rule = rule
        super().__init__(f"{field_name} {rule}; got {value!r}.")


# --- field declarations ---------------------------------------------------------------------
_NAME = r"[a-z][a-z0-9-]{0,30}"  # compose service / k8s DNS label prefix
_TOKEN_RULES: dict[str, tuple[str, str]] = {
    "name": (_NAME, "must be a lowercase name (letters, digits, '-', starting with a letter)"),
    "host": (
        r"(_|(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*)",
        "must be a host name like 'arena.example.com', '*.example.com' or '_' "
        "(no spaces, quotes, ';', '{' or '}')",
    ),
    "image": (
        r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,199}",
        "must be a container image reference (letters, digits, '._/:@-', no spaces or quotes)",
    ),
    "app": (
        r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*",
        "must be 'dotted.module:attribute'",
    ),
    "module": (
        r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*",
        "must be a dotted Python module path",
    ),
    "relpath": (
        r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,199}",
        "must be a relative file path (letters, digits, '._/-')",
    ),
    "urlpath": (
        r"/([A-Za-z0-9._~-]+/)*",
        "must be a URL path that starts and ends with '/' (letters, digits, '._~-')",
    ),
    "size": (r"[1-9][0-9]{0,5}(kb|mb|gb)", "must be a Redis size like '512mb' or '2gb'"),
    "ip": (r"[0-9a-fA-F.:]{2,45}", "must be an IP address"),
    "abspath": (
        r"(/[A-Za-z0-9._-]+)+/?",
        "must be an absolute path (letters, digits, '._-' between slashes)",
    ),
}


def _f(
    default: Any,
    help: str,
    *,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    token: str = "",
) -> Any:
    meta = {"help": help, "kind": kind, "lo": lo, "hi": hi, "choices": choices, "token": token}
    return field(default=default, metadata=meta)


def _int(default: int | None, help: str, lo: int, hi: int, *, optional: bool = False) -> Any:
    return _f(default, help, kind="int?" if optional else "int", lo=lo, hi=hi)


def _num(default: float, help: str, lo: float, hi: float) -> Any:
    return _f(default, help, kind="float", lo=lo, hi=hi)


def _str(default: str, help: str, token: str) -> Any:
    return _f(default, help, kind="str", token=token)


def _choice(default: str, help: str, *choices: str) -> Any:
    return _f(default, help, kind="choice", choices=choices)


def _strs(default: tuple[str, ...], help: str, token: str, *, nonempty: bool = False) -> Any:
    return _f(default, help, kind="strs+" if nonempty else "strs", token=token)


def _bool(default: bool, help: str) -> Any:
    return _f(default, help, kind="bool")


@dataclass(frozen=True, repr=False)
class SpecFields:
    """Every field of the deployment spec, by group (the spec's module docstring lists them)."""

    # --- topology
    target: str = _choice(
        "compose", "what to render: containers or the loopback variant", "compose", "local"
    )
    replicas: int = _int(10, "API replicas web-1..web-N", 1, MAX_REPLICAS)
    topology: str = _choice(
        "split",
        "split: API on gunicorn gthread + separate ASGI streaming pool; single: one pool",
        "split",
        "single",
    )
    stream_replicas: int = _int(
        2, "ASGI streaming/WebSocket replicas (split topology)", 1, MAX_REPLICAS
    )
    stream_workers: int = _int(2, "uvicorn workers per streaming replica", 1, 64)
    backup_replicas: int = _int(0, "extra replicas used only when all others fail", 0, 50)
    sticky: bool = _bool(False, "ip_hash on the API upstream (sticky sessions)")
    # --- app server
    app_server: str = _choice(
        "gunicorn",
        "server of the web-* pool: gunicorn (gthread, WSGI) or uvicorn (ASGI)",
        "gunicorn",
        "uvicorn",
    )
    # 1 x 8, not the reference design's 4 x 2: the same 8 requests at once per replica, in one
    # process per CPU of cpu_limit (raise workers with it).  Processes that share one CPU each
    # pay for it per request, and the WSGI worker (lifecycle.worker) serves with one thread at a
    # time until one is held up, so threads cost nothing until a request waits (an LLM, the
    # database): through the stack 1 x 8 and 1 x 4 used 10-20% less CPU per request than 2 x 4
    # and half the memory (bench/throughput.py, docs/benchmarks/throughput.md).
    workers: int = _int(1, "server worker processes per API replica", 1, 64)
    threads: int = _int(8, "threads per worker of the API pool", 1, 64)
    # 10,000, not 1,000: a recycled worker costs a fork and its first requests' set-up (about
    # 0.2 s of CPU); at a few hundred requests a second per worker, 1,000 recycled each worker
    # every few seconds and cost a third of the replica's CPU.
    max_requests: int = _int(
        10_000, "restart a worker after this many requests (0: never)", 0, 1_000_000
    )
    wsgi_app: str = _str("config.wsgi:application", "WSGI application", "app")
    asgi_app: str = _str("config.asgi:application", "ASGI application", "app")
    settings_module: str = _str("config.settings", "DJANGO_SETTINGS_MODULE", "module")
    project: str = _str("arena", "name prefix of networks, volumes and Kubernetes objects", "name")
    image: str = _str("arena-backend:latest", "the project image", "image")
    env_file: str = _str(".env", "env file with secrets, relative to the output dir", "relpath")
    # --- resources per replica
    cpu_limit: float = _num(1.0, "CPU limit per replica", 0.05, 64)
    memory_limit_mb: int = _int(1024, "memory limit per replica (MiB)", 64, 262_144)
    cpu_reservation: float = _num(0.5, "CPU reservation per replica", 0.01, 64)
    memory_reservation_mb: int = _int(512, "memory reservation per replica (MiB)", 32, 262_144)
    # --- network
    server_name: str = _str("_", "nginx server_name / Ingress host ('_': any)", "host")
    http_port: int = _int(80, "port nginx listens on", 1, 65535)
    status_port: int = _int(8081, "internal nginx listener for stub_status", 1, 65535)
    app_port: int = _int(8000, "port every replica listens on inside its container", 1, 65535)
    trusted_proxies: tuple[str, ...] = _strs(
        (), "CIDRs whose X-Forwarded-For is believed (private ranges only)", "proxy"
    )
    internal_networks: tuple[str, ...] = _strs(
        ("127.0.0.1/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
        "CIDRs allowed to reach /status/ and stub_status",
        "cidr",
        nonempty=True,
    )
    nginx_profile: str = _choice(
        "oss-1.22",
        "oss-1.22: static upstreams; oss-1.28: 'resolve' + resolver",
        "oss-1.22",
        "oss-1.28",
    )
    resolver: str = _str("127.0.0.11", "DNS resolver for the oss-1.28 profile", "ip")
    log_format: str = _choice(
        "text",
        "json: one JSON object per line in nginx's access log and LOG_FORMAT=json for the app"
        " (gunicorn writes no access log in either format)",
        "text",
        "json",
    )
    compose_subnet: str = _str(
        "10.213.0.0/20",
        "IPv4 subnet of the compose network: every service gets a fixed address in it, so a "
        "recreated replica keeps the address nginx resolved at start (private, /20 or larger, "
        "not Docker's 172.17.0.0/16)",
        "subnet",
    )
    # --- limits
    rate_general: int = _int(100, "general requests per second per client IP", 1, 100_000)
    burst_general: int = _int(200, "burst of the general limit", 0, 1_000_000)
    rate_stream: int = _int(10, "stream requests per second per client IP", 1, 100_000)
    burst_stream: int = _int(20, "burst of the stream limit", 0, 1_000_000)
    rate_auth: int = _int(5, "auth requests per second per client IP", 1, 100_000)
    burst_auth: int = _int(10, "burst of the auth limit", 0, 1_000_000)
    conn_per_ip: int = _int(20, "concurrent connections per client IP", 1, 65535)
    max_conns: int = _int(200, "nginx max_conns per replica", 1, 100_000)
    max_fails: int = _int(3, "failures before a replica is skipped (passive health)", 1, 100)
    fail_timeout: int = _int(30, "seconds a failed replica is skipped", 1, 3600)
    keepalive: int = _int(64, "idle upstream keepalive connections per nginx worker", 1, 10_000)
    keepalive_timeout: int | None = _int(
        None,
        "nginx upstream keepalive_timeout (s); shorter than drain_delay, so nginx closes its "
        "own idle connections to a draining replica and none is closed under a request "
        "(default: drain_delay - 2, at least 1)",
        1,
        3600,
        optional=True,
    )
    client_max_body_mb: int = _int(10, "largest request body (MiB)", 1, 10_240)
    # --- timeouts (seconds)
    app_graceful_timeout: int = _int(
        20, "time the app drains streams and runs shutdown hooks", 1, 3600
    )
    graceful_timeout: int = _int(30, "server graceful shutdown timeout", 2, 3600)
    drain_delay: int = _int(10, "wait between marking a replica down and SIGTERM", 0, 3600)
    stop_grace_period: int | None = _int(
        None,
        "SIGTERM -> SIGKILL (default: drain_delay + graceful_timeout + 5)",
        1,
        7200,
        optional=True,
    )
    worker_timeout: int = _int(30, "gunicorn worker heartbeat timeout", 1, 3600)
    connect_timeout: int = _int(5, "nginx proxy_connect_timeout", 1, 75)
    api_read_timeout: int = _int(60, "nginx proxy_read_timeout for the API", 1, 3600)
    stream_read_timeout: int = _int(600, "nginx proxy_read_timeout for SSE and WebSockets", 1, 3600)
    probe_timeout: int = _int(
        2, "probe timeout (nginx probe locations, healthchecks, kubelet)", 1, 60
    )
    probe_period: int = _int(10, "seconds between probes", 1, 300)
    # --- paths
    probe_prefix: str = _str("/", "URL prefix of live/ ready/ health/ status/", "urlpath")
    stream_paths: tuple[str, ...] = _strs(
        ("/messages/stream/",), "SSE location prefixes", "urlpath", nonempty=True
    )
    ws_path: str = _str("/ws/", "WebSocket location prefix", "urlpath")
    auth_paths: tuple[str, ...] = _strs(
        ("/auth/",), "location prefixes with the strict limit", "urlpath"
    )
    static_url: str = _str(
        "/static/", "URL prefix nginx serves from the collected static files", "urlpath"
    )
    static_root: str = _str(
        "/app/staticfiles", "STATIC_ROOT inside the app image (collectstatic target)", "abspath"
    )
    # --- data
    redis_roles: str = _choice(
        "split",
        "split: cache (allkeys-lru) apart from sessions+channels (noeviction)",
        "split",
        "shared",
    )
    redis_maxmemory: str = _str("2gb", "maxmemory of the cache Redis", "size")
    redis_sessions_maxmemory: str = _str(
        "512mb", "maxmemory of the sessions+channels Redis", "size"
    )
    redis_image: str = _str("redis:7-alpine", "Redis image", "image")
    postgres_image: str = _str("postgres:16-alpine", "PostgreSQL image", "image")
    postgres_max_connections: int = _int(100, "PostgreSQL max_connections", 10, 100_000)
    pgbouncer: bool = _bool(False, "put PgBouncer (transaction pooling) in front of PostgreSQL")
    pgbouncer_pool_size: int = _int(20, "PgBouncer server connections per database", 1, 10_000)
    pgbouncer_image: str = _str("edoburu/pgbouncer:v1.25.1-p0", "PgBouncer image", "image")
    pgbouncer_query_wait_timeout: int = _int(
        5,
        "PgBouncer query_wait_timeout: seconds a client waits for a server connection "
        "(short, so a dead primary is a fast 503)",
        1,
        3600,
    )
    postgres_read_replicas: int = _int(
        0, "PostgreSQL streaming read replicas (DATABASE_REPLICA_URLS)", 0, 8
    )
    # --- kubernetes
    namespace: str = _str("arena", "Kubernetes namespace", "name")
    ingress_class: str = _str("nginx", "Kubernetes IngressClass", "name")
    hpa_max_replicas: int | None = _int(
        None, "HPA maximum (default: 2 x replicas, at most 500)", 1, MAX_REPLICAS, optional=True
    )
    hpa_cpu_target: int = _int(70, "HPA target CPU utilisation (%)", 10, 100)
    # --- local variant
    local_port: int = _int(8080, "local variant: nginx listens on 127.0.0.1:PORT", 1, 65535)
    local_base_port: int = _int(18000, "local variant: app service i on 127.0.0.1:BASE+i", 1, 65535)
    local_redis_port: int = _int(16379, "local variant: first Redis port", 1, 65535)


# --- validation helpers ---------------------------------------------------------------------


def _range_rule(meta: Mapping[str, Any], what: str) -> str:
    return f"must be {what} from {meta['lo']:g} to {meta['hi']:g}"


def check_field(f: dataclasses.Field[Any], value: Any) -> None:
    meta = f.metadata
    kind = meta["kind"]
    if kind == "int?" and value is None:
        return
    if kind in ("int", "int?"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f.name, value, _range_rule(meta, "an integer"))
        if not meta["lo"] <= value <= meta["hi"]:
            raise SpecError(f.name, value, _range_rule(meta, "an integer"))
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise SpecError(f.name, value, _range_rule(meta, "a number"))
        if not meta["lo"] <= value <= meta["hi"]:
            raise SpecError(f.name, value, _range_rule(meta, "a number"))
    elif kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(f.name, value, "must be true or false")
    elif kind == "choice":
        if value not in meta["choices"]:
            raise SpecError(f.name, value, f"must be one of {', '.join(meta['choices'])}")
    elif kind == "str":
        _check_token(f.name, value, meta["token"])
    elif kind in ("strs", "strs+"):
        if not isinstance(value, tuple) or (kind == "strs+" and not value):
            what = "a non-empty" if kind == "strs+" else "a"
            raise SpecError(f.name, value, f"must be {what} tuple of strings")
        for item in value:
            _check_token(f.name, item, meta["token"])
        if len(set(value)) != len(value):
            raise SpecError(f.name, value, "must not repeat an entry")


#: Where a trusted proxy may sit: loopback, RFC 1918, shared address space (RFC 6598),
#: link-local, IPv6 loopback, unique local (fc00::/7) and IPv6 link-local.  Every other
#: network holds global addresses (or, like ``::ffff:0:0/96``, can spell them).
PRIVATE_PROXY_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def trusted_proxy_problem(value: object) -> str | None:
    """Why ``value`` must not be a trusted proxy network, or None when it may.

    A trusted proxy's ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed, so any
    client inside the network can choose its own address (bypassing every per-IP limit and
    the internal-address allow lists) and claim HTTPS.  Only networks entirely inside
    :data:`PRIVATE_PROXY_NETWORKS` are accepted: ``0.0.0.0/0``, ``::/0`` and any network
    holding a global (public) address are refused.  Pure (no Django): the deploy spec and
    a system check on ``ARENA_SCALE_TRUSTED_PROXIES`` can share it.
    """
    if not isinstance(value, str):
        return "must be an IP network string like '10.0.0.0/8'"
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return "must be an IP network like '10.0.0.0/8'"
    for allowed in PRIVATE_PROXY_NETWORKS:
        if network.version == allowed.version and network.subnet_of(allowed):  # type: ignore[arg-type]
            return None
    what = "every address" if network.prefixlen == 0 else "public (global) addresses"
    return (
        f"must be a private network (loopback, 10/8, 172.16/12, 192.168/16, 100.64/10, "
        f"link-local, ::1, fc00::/7, fe80::/10): {str(network)!r} includes {what}, and any "
        "client there could forge X-Forwarded-For (bypassing per-IP limits) and "
        "X-Forwarded-Proto; list your load balancer's own addresses instead"
    )


#: Docker's default bridge network (docker0): a compose network must not overlap it.
DOCKER_DEFAULT_BRIDGE = ipaddress.ip_network("172.17.0.0/16")
#: Largest prefix length of ``compose_subnet``: the lower half of a /20 holds the fixed
#: addresses of up to MAX_REPLICAS API and streaming replicas, the backups, nginx and the data
#: services; the upper half is left to Docker for one-off containers (``compose run``).
COMPOSE_SUBNET_MAX_PREFIX = 20
_RFC1918 = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


def _check_subnet(name: str, value: Any) -> None:
    rule = (
        f"must be a private IPv4 network like '10.213.0.0/20' (inside 10/8, 172.16/12 or "
        f"192.168/16, /{COMPOSE_SUBNET_MAX_PREFIX} or larger, host bits zero, not overlapping "
        f"Docker's default bridge {DOCKER_DEFAULT_BRIDGE})"
    )
    if not isinstance(value, str) or not re.fullmatch(r"[0-9./]{9,18}", value):
        raise SpecError(name, value, rule)
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise SpecError(name, value, rule) from exc
    if not any(network.subnet_of(private) for private in _RFC1918):
        raise SpecError(name, value, rule + ": it is not a private network")
    if network.overlaps(DOCKER_DEFAULT_BRIDGE):
        raise SpecError(name, value, rule + f": it overlaps {DOCKER_DEFAULT_BRIDGE}")
    if network.prefixlen > COMPOSE_SUBNET_MAX_PREFIX:
        raise SpecError(
            name,
            value,
            rule + f": {network.num_addresses} addresses are too few for the fixed layout",
        )


def _check_token(name: str, value: Any, token: str) -> None:
    if token == "subnet":
        _check_subnet(name, value)
        return
    if token in ("cidr", "proxy"):
        rule = "must hold IP networks like '10.0.0.0/8' (no spaces, quotes, ';', '{' or '}')"
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F.:/]{2,49}", value):
            raise SpecError(name, value, rule)
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise SpecError(name, value, rule) from exc
        problem = trusted_proxy_problem(value) if token == "proxy" else None
        if problem:
            raise SpecError(name, value, problem)
        return
    pattern, rule = _TOKEN_RULES[token]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise SpecError(name, value, rule)
    if token == "host" and len(value) > 253:
        raise SpecError(name, value, rule + " of at most 253 characters")
    if token == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise SpecError(name, value, rule) from exc
    if token == "relpath" and (".." in value.split("/") or value.startswith("/")):
        raise SpecError(name, value, rule + " inside the output dir")
    if token == "urlpath" and any(seg in (".", "..") for seg in value.split("/")):
        # nginx and browsers normalise dot segments, so the location would never match.
        raise SpecError(name, value, rule + " without '.' or '..' segments")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_cli_value(f: dataclasses.Field[Any], raw: Any) -> Any:
    """Convert a CLI string to the field's type (non-strings pass through to validation)."""
    if not isinstance(raw, str):
        return tuple(raw) if isinstance(raw, list) else raw
    kind = f.metadata["kind"]
    text = raw.strip()
    try:
        if kind == "int?" and text.lower() in ("", "none", "auto"):
            return None
        if kind in ("int", "int?"):
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise ValueError(text)
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
    except ValueError as exc:
        what = {"int": "an integer", "int?": "an integer", "float": "a number"}.get(kind)
        if what is None:
            raise SpecError(f.name, raw, "must be true or false") from exc
        raise SpecError(f.name, raw, _range_rule(f.metadata, what)) from exc
    if kind in ("strs", "strs+"):
        return tuple(part for part in raw.split(",")) if raw else ()
    return raw
