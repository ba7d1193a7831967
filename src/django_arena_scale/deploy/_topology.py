"""Names, addresses and paths derived from the spec's fields (no numbers, no validation).

:class:`SpecTopology` is the base of :class:`~django_arena_scale.deploy._spec.DeploymentSpec`
that turns the fields into what the renderers write: service names per pool, the address and
server command of each app service, the nginx upstream members, Redis per role, the database
host, the app environment, the nginx include paths and the probe paths.  Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from django_arena_scale.deploy._fields import SpecFields

__all__ = ["API_UPSTREAM", "STREAM_UPSTREAM", "SpecTopology", "UpstreamMember"]

API_UPSTREAM = "django_backend"
STREAM_UPSTREAM = "django_streaming"


@dataclass(frozen=True)
class UpstreamMember:
    """One ``server`` line of an nginx upstream: a service name, its address and flags."""

    name: str
    address: str
    backup: bool = False


class SpecTopology(SpecFields):
    """The derived names, addresses and paths of a deployment (cached per spec)."""

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
    def postgres_replica_services(self) -> tuple[str, ...]:
        """The streaming read replicas' services: ``postgres-replica-1`` .. ``-K``."""
        return tuple(
            f"{self.postgres_service}-replica-{i}"
            for i in range(1, self.postgres_read_replicas + 1)
        )

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
            # database_settings(pgbouncer=...): server-side cursors off behind PgBouncer.
            "DATABASE_PGBOUNCER": "1" if self.pgbouncer else "0",
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            # The app's LOGGING chooses its formatter from it (requestid.JSONFormatter).
            "LOG_FORMAT": self.log_format,
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

    @property
    def metrics_path(self) -> str:
        """Where every replica answers Prometheus (``ProbeMiddleware``, under the probe prefix)."""
        return f"{self.probe_prefix}metrics"
