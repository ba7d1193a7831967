"""``DeploymentSpec``: every number and name of a deployment, validated once.

Pure Python (no Django).  ``manage.py generate_lb_config`` builds one spec with
:meth:`DeploymentSpec.from_sources` (CLI options override the ``ARENA_SCALE_DEPLOY`` dict, which
overrides the defaults below) and hands it to the renderers listed in
:mod:`django_arena_scale.deploy`; each renderer module exposes ``render(spec) -> dict[str, str]``
(relative path -> file content; deterministic, no timestamps).  The defaults reproduce the
reference deployment: 10 replicas of 4 gunicorn gthread workers x 2 threads, 1 CPU / 1 GiB limits,
0.5 CPU / 512 MiB reservations, nginx keepalive 64 (60 s), ``max_fails=3 fail_timeout=30s
max_conns=200``, rate limits 100/10/5 r/s, 20 connections per client IP, stream read timeout
600 s, Redis cache ``maxmemory 2gb``.

Fields, by group (each field's ``metadata["help"]`` is the CLI help text):

- *topology*: ``target`` (``compose`` or ``local`` loopback variant), ``replicas`` (API replicas
  ``web-1..web-N``), ``topology`` (``split``: API on gunicorn gthread plus a separate ASGI pool
  ``stream-1..stream-M`` behind the streaming upstream; ``single``: ``web-*`` serve everything
  with ``app_server``), ``stream_replicas``, ``stream_workers``, ``backup_replicas``
  (``web-backup-1..B``, nginx ``backup``), ``sticky`` (``ip_hash`` on the API upstream).
- *app server*: ``app_server``, ``workers``, ``threads``, ``max_requests``, ``wsgi_app``,
  ``asgi_app``, ``settings_module``, ``image``, ``env_file``.
- *resources*: ``cpu_limit``, ``memory_limit_mb``, ``cpu_reservation``, ``memory_reservation_mb``.
- *network*: ``server_name``, ``http_port``, ``status_port`` (``stub_status``, internal only),
  ``app_port``, ``trusted_proxies`` (``real_ip`` source), ``internal_networks``
  (``/status/`` and ``stub_status`` allow list), ``nginx_profile`` (``oss-1.22`` static
  upstreams, ``oss-1.28`` ``resolve`` + ``resolver``), ``resolver``.
- *limits*: ``rate_general``/``rate_stream``/``rate_auth`` (r/s per client IP) with their
  bursts, ``conn_per_ip``, ``max_conns``, ``max_fails``, ``fail_timeout``, ``keepalive``,
  ``keepalive_timeout``, ``client_max_body_mb``.
- *timeouts* (seconds): ``app_graceful_timeout`` < ``graceful_timeout`` (server) <
  ``stop_grace_period`` (>= ``drain_delay`` + ``graceful_timeout`` + margin; derived when
  unset), ``worker_timeout``, ``connect_timeout``, ``api_read_timeout`` <=
  ``stream_read_timeout``, ``probe_timeout``, ``probe_period``.
- *paths*: ``probe_prefix``, ``stream_paths``, ``ws_path``, ``auth_paths``, ``static_url``,
  ``static_root``.
- *data*: ``redis_roles`` (``split``: cache on ``allkeys-lru``, sessions + channels on
  ``noeviction``; ``shared``: one ``noeviction`` Redis), ``redis_maxmemory``,
  ``redis_sessions_maxmemory``, ``postgres_max_connections``, ``pgbouncer``,
  ``pgbouncer_pool_size``, images.
- *kubernetes*: ``namespace``, ``ingress_class``, ``hpa_max_replicas``, ``hpa_cpu_target``.
- *local variant*: nginx listens on ``127.0.0.1:local_port``, the i-th app service (order of
  :attr:`DeploymentSpec.app_services`) on ``127.0.0.1:local_base_port + i``, Redis role r on
  ``local_redis_port + index``; every nginx path lives inside the output directory.

Derived numbers (:attr:`~DeploymentSpec.chain`, :attr:`~DeploymentSpec.db_budget`,
:attr:`~DeploymentSpec.capacity`, ...) are cached properties, computed once per spec.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

__all__ = [
    "API_UPSTREAM",
    "NEXT_UPSTREAM",
    "STREAM_UPSTREAM",
    "Capacity",
    "DbBudget",
    "DeploymentSpec",
    "Renderer",
    "SpecError",
    "TimeoutChain",
    "UpstreamMember",
]

API_UPSTREAM = "django_backend"
STREAM_UPSTREAM = "django_streaming"
#: Seconds added on top of drain + graceful before the orchestrator sends SIGKILL.
STOP_GRACE_MARGIN = 5
#: The generated Kubernetes pods' drain file (their ARENA_SCALE_DRAIN_FILE, which the preStop
#: hook's ``manage.py drain on`` writes): an in-memory emptyDir, since the root file system is
#: read-only, shared by every worker process of the container.
K8S_DRAIN_DIR = "/var/run/arena-scale"
K8S_DRAIN_FILE = f"{K8S_DRAIN_DIR}/drain"
#: When nginx (and ingress-nginx) tries the next replica and counts a failure (max_fails):
#: transport failures only.  A status the application chose to send (a provider's 502, an
#: open breaker's 503, a 503 for a dead shared dependency) is the answer, never a replica
#: failure, and is never replayed on another replica.  ``non_idempotent`` stays absent: a
#: POST that reached a replica is never sent twice.
NEXT_UPSTREAM = "error timeout"
#: Seconds the app server keeps an idle keep-alive connection longer than nginx does, so nginx
#: always closes first and never reuses a connection the server is closing (502s).
KEEPALIVE_HEADROOM = 5
#: Connections PostgreSQL keeps for superusers (its default); the app cannot use them.
PG_RESERVED_CONNECTIONS = 3
MAX_REPLICAS = 500


class SpecError(ValueError):
    """A field of the deployment spec is invalid: names the field, the value and the rule."""

    def __init__(self, field_name: str, value: Any, rule: str) -> None:
        self.field = field_name
        self.value = value
        self.rule = rule
        super().__init__(f"{field_name} {rule}; got {value!r}.")


class Renderer(Protocol):
    """What every renderer module provides (a module satisfies this protocol)."""

    def render(self, spec: DeploymentSpec) -> dict[str, str]: ...


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


@dataclass(frozen=True)
class UpstreamMember:
    """One ``server`` line of an nginx upstream: a service name, its address and flags."""

    name: str
    address: str
    backup: bool = False


@dataclass(frozen=True)
class TimeoutChain:
    """Every timeout of the shutdown and proxy chain (s): docs/architecture.md#timeout-chain."""

    app_graceful: int
    server_graceful: int
    drain_delay: int
    stop_grace_period: int
    worker_timeout: int
    server_keepalive: int
    nginx_keepalive_timeout: int
    connect: int
    api_read: int
    stream_read: int
    probe: int
    probe_period: int
    liveness_failure_threshold: int
    startup_failure_threshold: int


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


@dataclass(frozen=True, repr=False)
class DeploymentSpec:
    """A validated, immutable description of one deployment (see the module docstring)."""

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
    workers: int = _int(4, "server worker processes per API replica", 1, 64)
    threads: int = _int(2, "threads per gthread worker", 1, 64)
    max_requests: int = _int(
        1000, "restart a worker after this many requests (0: never)", 0, 1_000_000
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
    pgbouncer_image: str = _str("edoburu/pgbouncer:latest", "PgBouncer image", "image")
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

    # --- construction ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        self._check_cross_field()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_sources(
        cls, cli: Mapping[str, Any] | None = None, setting: Mapping[str, Any] | None = None
    ) -> DeploymentSpec:
        """Defaults, overridden by the ``ARENA_SCALE_DEPLOY`` mapping, overridden by CLI values.

        CLI values may be strings (they are converted and validated); setting values must have
        the field's type.  ``None`` in ``cli`` means "not given".
        """
        values: dict[str, Any] = {}
        for source, mapping, coerce in (
            ("ARENA_SCALE_DEPLOY", setting or {}, False),
            ("option", cli or {}, True),
        ):
            for key, raw in mapping.items():
                name = str(key).replace("-", "_") if coerce else key
                if name not in _FIELDS:
                    raise _unknown(source, key)
                if coerce and raw is None:
                    continue
                if not coerce and isinstance(raw, list):
                    raw = tuple(raw)  # settings naturally spell sequences as lists
                values[name] = _coerce(_FIELDS[name], raw) if coerce else raw
        return cls(**values)

    def replace(self, **changes: Any) -> DeploymentSpec:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def non_defaults(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        }

    def __repr__(self) -> str:
        changed = " ".join(f"{k}={v!r}" for k, v in self.non_defaults().items())
        return f"<DeploymentSpec {changed or 'defaults'}>"

    def _check_cross_field(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise SpecError(name, getattr(self, name), rule)

        if self.topology == "split" and self.app_server != "gunicorn":
            fail(
                "app_server",
                "must be 'gunicorn' with topology 'split' (streams go to the ASGI pool)",
            )
        if self.cpu_reservation > self.cpu_limit:
            fail("cpu_reservation", f"must not exceed cpu_limit ({self.cpu_limit!r})")
        if self.memory_reservation_mb > self.memory_limit_mb:
            fail(
                "memory_reservation_mb",
                f"must not exceed memory_limit_mb ({self.memory_limit_mb!r})",
            )
        if self.app_graceful_timeout >= self.graceful_timeout:
            fail(
                "app_graceful_timeout",
                f"must be shorter than graceful_timeout ({self.graceful_timeout})",
            )
        if 0 < self.drain_delay <= self.upstream_keepalive_timeout:
            fail(
                "keepalive_timeout" if self.keepalive_timeout is not None else "drain_delay",
                f"keepalive_timeout ({self.upstream_keepalive_timeout}) must be shorter than "
                f"drain_delay ({self.drain_delay}), or drain_delay 0: a draining replica "
                "waits for nginx to close its idle connections itself (closing one under a "
                "request nginx is sending would fail that request)",
            )
        minimum = self.drain_delay + self.graceful_timeout + STOP_GRACE_MARGIN
        if self.stop_grace_period is not None and self.stop_grace_period < minimum:
            fail(
                "stop_grace_period",
                f"must be at least drain_delay + graceful_timeout + {STOP_GRACE_MARGIN} "
                f"({minimum})",
            )
        if self.api_read_timeout > self.stream_read_timeout:
            fail(
                "api_read_timeout",
                f"must not exceed stream_read_timeout ({self.stream_read_timeout})",
            )
        if self.probe_timeout >= self.probe_period:
            fail("probe_timeout", f"must be shorter than probe_period ({self.probe_period})")
        if self.sticky and self.backup_replicas:
            fail("backup_replicas", "must be 0 when sticky is set (nginx ip_hash forbids 'backup')")
        if self.hpa_max_replicas is not None and self.hpa_max_replicas < self.replicas:
            fail("hpa_max_replicas", f"must be at least replicas ({self.replicas})")
        locations = [*self.stream_paths, *self.auth_paths, self.ws_path, self.static_url]
        locations += [*self.probe_paths.values(), "/"]
        for name in ("stream_paths", "auth_paths", "ws_path", "static_url", "probe_prefix"):
            value = getattr(self, name)
            for path in value if isinstance(value, tuple) else (value,):
                if name != "probe_prefix" and locations.count(path) > 1:
                    fail(name, f"must not repeat another location ({path!r} is used twice)")
        if self.http_port == self.status_port:
            fail("status_port", f"must differ from http_port ({self.http_port})")
        local = [self.local_port, self.status_port, *self.local_redis_ports.values()]
        last = self.local_base_port + len(self.app_services)
        if last > 65535:
            fail(
                "local_base_port", f"must leave room for {len(self.app_services)} ports below 65536"
            )
        app_range = range(self.local_base_port + 1, last + 1)
        if len(set(local)) != len(local) or any(p in app_range for p in local):
            fail(
                "local_port",
                "must not collide with status_port, the Redis ports or the app ports "
                f"{app_range.start}-{app_range.stop - 1} (local variant)",
            )
        if max(self.local_redis_ports.values()) > 65535:
            fail("local_redis_port", "must leave room for one port per Redis role below 65536")

    # --- names ------------------------------------------------------------------------------
    @cached_property
    def web_names(self) -> tuple[str, ...]:
        return tuple(f"web-{i}" for i in range(1, self.replicas + 1))

    @cached_property
    def backup_names(self) -> tuple[str, ...]:
        return tuple(f"web-backup-{i}" for i in range(1, self.backup_replicas + 1))

    @cached_property
    def stream_names(self) -> tuple[str, ...]:
        """Services of the separate ASGI pool (empty in the single topology)."""
        if self.topology != "split":
            return ()
        return tuple(f"stream-{i}" for i in range(1, self.stream_replicas + 1))

    @cached_property
    def app_services(self) -> tuple[str, ...]:
        """Every app server service, in port order: web, backups, stream."""
        return self.web_names + self.backup_names + self.stream_names

    def server_of(self, service: str) -> str:
        """'gunicorn' (gthread, WSGI) or 'uvicorn' (ASGI) for an app service."""
        if service in self.stream_names:
            return "uvicorn"
        return self.app_server

    def local_service_port(self, service: str) -> int:
        """The loopback port of an app service in the local variant."""
        return self.local_base_port + 1 + self._service_index[service]

    @cached_property
    def _service_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.app_services)}

    def address(self, service: str) -> str:
        """host:port nginx uses for an app service (compose DNS name or loopback)."""
        if self.target == "local":
            return f"127.0.0.1:{self.local_service_port(service)}"
        return f"{service}:{self.app_port}"

    def server_config_file(self, service: str) -> str:
        """Relative path of the server config an app service runs with."""
        if self.server_of(service) == "uvicorn":
            return "gunicorn_asgi.conf.py"
        return "gunicorn.conf.py"

    def server_command(self, service: str, config_dir: str = "/etc/arena") -> tuple[str, ...]:
        """argv that starts an app service (gunicorn with gthread or the uvicorn worker).

        ``config_dir`` is where the rendered ``*.conf.py`` files are (mounted in containers;
        the output dir for the local variant, which also passes ``--bind``).
        """
        argv: tuple[str, ...] = (
            "gunicorn",
            "--config",
            f"{config_dir.rstrip('/')}/{self.server_config_file(service)}",
        )
        if self.target == "local":
            argv += ("--bind", f"127.0.0.1:{self.local_service_port(service)}")
        return argv

    @cached_property
    def api_members(self) -> tuple[UpstreamMember, ...]:
        web = [UpstreamMember(n, self.address(n)) for n in self.web_names]
        return (*web, *(UpstreamMember(n, self.address(n), True) for n in self.backup_names))

    @cached_property
    def stream_members(self) -> tuple[UpstreamMember, ...]:
        if self.topology == "split":
            return tuple(UpstreamMember(n, self.address(n)) for n in self.stream_names)
        return self.api_members

    nginx_service = "nginx"
    #: One-off compose service (profile ``jobs``): ``docker compose run --rm manage migrate``.
    manage_service = "manage"
    #: Where the rendered server configs are mounted inside app containers.
    config_dir = "/etc/arena"
    #: Where ``nginx/`` is mounted inside the nginx container.
    nginx_config_dir = "/etc/nginx/arena"
    #: Where nginx serves ``static_url`` from (the collected static files volume).
    nginx_static_dir = "/srv/static"
    postgres_service = "postgres"
    pgbouncer_service = "pgbouncer"
    api_upstream = API_UPSTREAM
    stream_upstream = STREAM_UPSTREAM

    @cached_property
    def network(self) -> str:
        return f"{self.project}-network"

    @cached_property
    def redis_services(self) -> dict[str, str]:
        """Redis service per role: ``cache`` and ``sessions`` (sessions and channel layer)."""
        if self.redis_roles == "split":
            return {"cache": "redis-cache", "sessions": "redis-sessions"}
        return {"cache": "redis", "sessions": "redis"}

    @cached_property
    def local_redis_ports(self) -> dict[str, int]:
        """Loopback Redis port per distinct Redis service (local variant)."""
        services = sorted(set(self.redis_services.values()))
        return {name: self.local_redis_port + i for i, name in enumerate(services)}

    def redis_url(self, role: str, db: int = 0) -> str:
        service = self.redis_services[role]
        if self.target == "local":
            return f"redis://127.0.0.1:{self.local_redis_ports[service]}/{db}"
        return f"redis://{service}:6379/{db}"

    @cached_property
    def database_host(self) -> str:
        return self.pgbouncer_service if self.pgbouncer else self.postgres_service

    @cached_property
    def database_port(self) -> int:
        return 6432 if self.pgbouncer else 5432

    @cached_property
    def data_services(self) -> tuple[str, ...]:
        """Compose services the app needs healthy: Redis per role, PostgreSQL, PgBouncer.

        One list for the app's ``depends_on`` (compose), ``deploy.sh start`` and the operations
        guide, so they cannot disagree about what a replica needs.
        """
        services = [*sorted(set(self.redis_services.values())), self.postgres_service]
        if self.pgbouncer:
            services.append(self.pgbouncer_service)
        return tuple(services)

    @cached_property
    def app_environment(self) -> dict[str, str]:
        """Non-secret environment of every app service (secrets come from ``env_file``).

        Besides the service URLs it carries the app settings the generated probes depend on,
        for projects whose settings read ``ARENA_SCALE_*`` from the environment:
        ProbeMiddleware's prefix, and the probe timeout the readiness-deadline check (E030)
        compares with.  ``manage.py check --deploy`` warns when the settings disagree with the
        spec anyway (W051, W054).
        """
        return {
            # deploy.sh's rolling restart runs `manage.py drain on`, which writes this file.
            "ARENA_SCALE_DRAIN_FILE": "/tmp/arena-scale-drain",
            "ARENA_SCALE_PROBE_PREFIX": self.probe_prefix,
            "ARENA_SCALE_PROBE_TIMEOUT": str(self.probe_timeout),
            "ARENA_SCALE_REPLICAS": str(self.replicas),
            "CHANNEL_REDIS_URL": self.redis_url("sessions", 1),
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "REDIS_URL": self.redis_url("cache", 0),
            "SESSION_REDIS_URL": self.redis_url("sessions", 0),
        }

    # --- paths ------------------------------------------------------------------------------
    @cached_property
    def nginx_dir(self) -> str:
        """Directory of nginx.conf and its includes, relative to the output dir."""
        return "" if self.target == "local" else "nginx/"

    def nginx_servers_include(self, upstream: str) -> str:
        """Relative path of the include holding an upstream's ``server`` lines.

        The deploy script drains a replica by appending `` down`` before the ``;`` of its
        line (``server web-3:8000 ... down;``) and reloading nginx.
        """
        return f"{self.nginx_dir}upstreams/{upstream}.conf"

    @cached_property
    def probe_paths(self) -> dict[str, str]:
        p = self.probe_prefix
        return {k: f"{p}{k}/" for k in ("live", "ready", "health", "status")}

    # --- derived numbers --------------------------------------------------------------------
    @cached_property
    def chain(self) -> TimeoutChain:
        stop = self.stop_grace_period or (
            self.drain_delay + self.graceful_timeout + STOP_GRACE_MARGIN
        )
        # A busy worker must never fail liveness: tolerate a full worker_timeout of silence.
        liveness = max(3, math.ceil(self.worker_timeout / self.probe_period) + 1)
        return TimeoutChain(
            app_graceful=self.app_graceful_timeout,
            server_graceful=self.graceful_timeout,
            drain_delay=self.drain_delay,
            stop_grace_period=stop,
            worker_timeout=self.worker_timeout,
            server_keepalive=self.upstream_keepalive_timeout + KEEPALIVE_HEADROOM,
            nginx_keepalive_timeout=self.upstream_keepalive_timeout,
            connect=self.connect_timeout,
            api_read=self.api_read_timeout,
            stream_read=self.stream_read_timeout,
            probe=self.probe_timeout,
            probe_period=self.probe_period,
            liveness_failure_threshold=liveness,
            startup_failure_threshold=max(6, math.ceil(120 / self.probe_period)),
        )

    @property
    def upstream_keepalive_timeout(self) -> int:
        """nginx's upstream ``keepalive_timeout``: the field, else ``drain_delay - 2`` (>= 1)."""
        if self.keepalive_timeout is not None:
            return self.keepalive_timeout
        return max(1, self.drain_delay - 2)

    @cached_property
    def db_budget(self) -> DbBudget:
        api = (self.replicas + self.backup_replicas) * self.workers
        if self.app_server == "gunicorn":
            api *= self.threads  # gthread: one persistent connection per thread
        # An ASGI worker runs sync ORM code on one thread_sensitive executor thread.
        stream = len(self.stream_names) * self.stream_workers
        jobs = 1  # migrations / collectstatic one-off container
        return DbBudget(
            api=api,
            stream=stream,
            jobs=jobs,
            needed=api + stream + jobs,
            limit=self.postgres_max_connections - PG_RESERVED_CONNECTIONS,
            pgbouncer=self.pgbouncer,
            pgbouncer_server_connections=self.pgbouncer_pool_size,
        )

    @cached_property
    def redis_memory_mb(self) -> int:
        sizes = {self.redis_services["cache"]: _size_mb(self.redis_maxmemory)}
        sizes.setdefault(self.redis_services["sessions"], _size_mb(self.redis_sessions_maxmemory))
        return sum(sizes.values())

    @cached_property
    def nginx_worker_connections(self) -> int:
        """Per nginx worker: every open stream and in-flight API request, both ends, rounded up.

        Streams are long-lived, so all of the stream capacity (``max_conns`` x streaming
        replicas) may be open at once; API requests are bounded by the API pool's threads.
        Sized as if one worker held them all (accept is not balanced across workers), two
        file descriptors per proxied request, plus the keepalive pools and 1024 of headroom
        for idle client keep-alive connections.  Not ``max_conns`` x every replica: each
        connection slot costs memory in every worker, whether used or not.
        """
        stream = len(self.stream_members) * self.max_conns
        api = (self.replicas + self.backup_replicas) * self.workers
        if self.app_server == "gunicorn":
            api *= self.threads
        needed = 2 * (stream + api) + 2 * self.keepalive + 1024
        return max(1024, math.ceil(needed / 1024) * 1024)

    @cached_property
    def nginx_rlimit_nofile(self) -> int:
        return 2 * self.nginx_worker_connections

    @cached_property
    def capacity(self) -> Capacity:
        api_replicas = self.replicas + self.backup_replicas
        n_app = len(self.app_services)
        if self.topology == "split":
            stream_server = len(self.stream_names) * self.max_conns
        elif self.app_server == "uvicorn":
            stream_server = self.replicas * self.max_conns
        else:
            stream_server = self.replicas * self.workers * self.threads  # a thread per stream
        threads = self.threads if self.app_server == "gunicorn" else 1
        return Capacity(
            api_processes=api_replicas * self.workers,
            api_threads=api_replicas * self.workers * threads,
            stream_processes=len(self.stream_names) * self.stream_workers,
            concurrent_requests=self.replicas * self.workers * threads,
            stream_connections=len(self.stream_members) * self.max_conns,
            stream_connections_server=stream_server,
            app_memory_limit_mb=n_app * self.memory_limit_mb,
            app_memory_reservation_mb=n_app * self.memory_reservation_mb,
            app_cpu_limit=round(n_app * self.cpu_limit, 2),
            redis_memory_mb=self.redis_memory_mb,
            nginx_worker_connections=self.nginx_worker_connections,
        )

    @cached_property
    def hpa_max(self) -> int:
        return self.hpa_max_replicas or min(MAX_REPLICAS, 2 * self.replicas)

    @cached_property
    def nginx_image(self) -> str:
        return "nginx:1.22-alpine" if self.nginx_profile == "oss-1.22" else "nginx:1.28-alpine"


# --- validation helpers ---------------------------------------------------------------------
_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(DeploymentSpec)}


def _range_rule(meta: Mapping[str, Any], what: str) -> str:
    return f"must be {what} from {meta['lo']:g} to {meta['hi']:g}"


def _check_field(f: dataclasses.Field[Any], value: Any) -> None:
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


def _coerce(f: dataclasses.Field[Any], raw: Any) -> Any:
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


def _unknown(source: str, key: Any) -> SpecError:
    close = difflib.get_close_matches(str(key).replace("-", "_"), list(_FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(source, key, f"accepts only DeploymentSpec field names{hint}")


def _size_mb(size: str) -> int:
    number, unit = int(size[:-2]), size[-2:]
    return {"kb": max(1, number // 1024), "mb": number, "gb": number * 1024}[unit]
