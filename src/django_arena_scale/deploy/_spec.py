"""``DeploymentSpec``: every number and name of a deployment, validated once.

Pure Python (no Django).  ``manage.py generate_lb_config`` builds one spec with
:meth:`DeploymentSpec.from_sources` (CLI options override the ``ARENA_SCALE_DEPLOY`` dict, which
overrides the defaults below) and hands it to the renderers listed in
:mod:`django_arena_scale.deploy`; each renderer module exposes ``render(spec) -> dict[str, str]``
(relative path -> file content; deterministic, no timestamps).  The defaults reproduce the
reference deployment: 10 replicas serving 8 requests at once each (1 gunicorn worker x 8
threads; the reference had 4 x 2, which cost more CPU and memory on one CPU), 1 CPU / 1 GiB
limits, 0.5 CPU / 512 MiB reservations, nginx keepalive 64 (60 s), ``max_fails=3 fail_timeout=30s
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
  upstreams, ``oss-1.28`` ``resolve`` + ``resolver``), ``resolver``, ``log_format`` (``text``,
  or ``json``: nginx's access log as JSON lines, ``LOG_FORMAT=json`` for the app).
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
:attr:`~DeploymentSpec.capacity`, ...) are cached properties, computed once per spec.  This
module is the spec's entry point (the class, its construction and the rules that relate
several fields); the fields and their one-field rules are in ``deploy/_fields.py``, the
derived names, addresses and paths in ``deploy/_topology.py``, the capacity maths in
``deploy/_capacity.py``.  Import every name from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from django_arena_scale.deploy import _capacity as _capacity
from django_arena_scale.deploy._capacity import PG_RESERVED_CONNECTIONS, Capacity, DbBudget
from django_arena_scale.deploy._fields import (
    MAX_REPLICAS,
    SpecError,
    check_field,
    parse_cli_value,
    trusted_proxy_problem,
)
from django_arena_scale.deploy._topology import (
    API_UPSTREAM,
    STREAM_UPSTREAM,
    SpecTopology,
    UpstreamMember,
)

__all__ = [
    "API_UPSTREAM",
    "K8S_DRAIN_DIR",
    "K8S_DRAIN_FILE",
    "KEEPALIVE_HEADROOM",
    "MAX_REPLICAS",
    "NEXT_UPSTREAM",
    "PG_RESERVED_CONNECTIONS",
    "STOP_GRACE_MARGIN",
    "STREAM_UPSTREAM",
    "Capacity",
    "DbBudget",
    "DeploymentSpec",
    "Renderer",
    "SpecError",
    "TimeoutChain",
    "UpstreamMember",
    "trusted_proxy_problem",
]

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


class Renderer(Protocol):
    """What every renderer module provides (a module satisfies this protocol)."""

    def render(self, spec: DeploymentSpec) -> dict[str, str]: ...


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


@dataclass(frozen=True, repr=False)
class DeploymentSpec(SpecTopology):
    """A validated, immutable description of one deployment (see the module docstring)."""

    # --- construction ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
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
                values[name] = parse_cli_value(_FIELDS[name], raw) if coerce else raw
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

    # --- capacity (deploy/_capacity.py) -------------------------------------------------------
    @cached_property
    def db_budget(self) -> DbBudget:
        """PostgreSQL connections the app needs against what the server allows."""
        return _capacity.db_budget(self)

    @cached_property
    def redis_memory_mb(self) -> int:
        """``maxmemory`` summed over the distinct Redis servers (MiB)."""
        return _capacity.redis_memory_mb(self)

    @cached_property
    def nginx_worker_connections(self) -> int:
        """nginx ``worker_connections``: every open stream and in-flight request, both ends."""
        return _capacity.nginx_worker_connections(self)

    @cached_property
    def nginx_rlimit_nofile(self) -> int:
        return _capacity.nginx_rlimit_nofile(self)

    @cached_property
    def capacity(self) -> Capacity:
        """Concurrency and memory of the whole deployment."""
        return _capacity.capacity(self)

    # --- scaling and images -----------------------------------------------------------------
    @cached_property
    def hpa_max(self) -> int:
        return self.hpa_max_replicas or min(MAX_REPLICAS, 2 * self.replicas)

    @cached_property
    def nginx_image(self) -> str:
        return "nginx:1.22-alpine" if self.nginx_profile == "oss-1.22" else "nginx:1.28-alpine"


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(DeploymentSpec)}


def _unknown(source: str, key: Any) -> SpecError:
    close = difflib.get_close_matches(str(key).replace("-", "_"), list(_FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(source, key, f"accepts only DeploymentSpec field names{hint}")
