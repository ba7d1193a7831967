"""The replicas of the local stack: what each one runs, and the one-off commands before them.

:class:`Replica` (one app server: a gunicorn master and its workers), :class:`StackOptions`
(the knobs that are not deployment facts), and :class:`ReplicaCommands`, the part of
:class:`~django_arena_scale.stack._runner.LocalStack` that builds a replica's environment and
command line and runs ``migrate`` and ``collectstatic`` in the project's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django_arena_scale.deploy._server import UVICORN_WORKER, WSGI_WORKER
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.lifecycle import _drain as drain
from django_arena_scale.metrics import MULTIPROC_ENV
from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._process import ManagedProcess

if TYPE_CHECKING:
    from django_arena_scale.stack import _database_tier as database_tier

__all__ = [
    "HOOKS_MODULE",
    "STATUS_TOKEN_ENV",
    "UVICORN_WORKER",
    "Out",
    "Replica",
    "ReplicaCommands",
    "StackOptions",
]

HOOKS_MODULE = "django_arena_scale.lifecycle.gunicorn"

Out = Callable[[str], None]
STATUS_TOKEN_ENV = "ARENA_SCALE_STATUS_TOKEN"


@dataclass
class Replica:
    """One app server of the stack (a gunicorn master and its workers)."""

    name: str
    port: int
    server: str  # "gunicorn" (gthread, WSGI) or "uvicorn" (ASGI)
    process: ManagedProcess
    drain_file: Path
    state: str = "new"

    @property
    def pool(self) -> str:
        return "wsgi" if self.server == "gunicorn" else "asgi"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "pid": self.process.pid,
            "pool": self.pool,
            "server": self.server,
            "state": self.state,
            "log": str(self.process.log_path),
        }


@dataclass
class StackOptions:
    """Knobs of the local stack that are not deployment facts (those live in the spec)."""

    nginx_bin: str | None = None
    redis_bin: str | None = None
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    drain_delay: float = 1.0
    migrate: bool = True
    cwd: str | None = None
    #: Also run Prometheus, scraping every replica (run_lb_stack --prometheus).
    prometheus: bool = False
    prometheus_bin: str | None = None
    #: Also run PostgreSQL (run_lb_stack --postgres): the spec's pgbouncer and
    #: postgres_read_replicas say whether PgBouncer and how many streaming replicas.
    postgres: bool = False
    #: Directory of initdb, postgres and pg_basebackup (default: PATH, /usr/lib/postgresql).
    pg_bin_dir: str | None = None


# Run in the project's environment: collect the static files when the project has any, and
# print STATIC_ROOT (an empty line when there is nothing to serve).
_COLLECT_STATIC = """
import django
from django.conf import settings
django.setup()
root = getattr(settings, "STATIC_ROOT", None)
if "django.contrib.staticfiles" in settings.INSTALLED_APPS and root:
    from django.core.management import call_command
    call_command("collectstatic", interactive=False, verbosity=0)
    print(root)
else:
    print()
"""


class ReplicaCommands:
    """A replica's environment and command line, and the one-off commands run before the
    replicas start; mixed into ``LocalStack``, which sets these attributes."""

    spec: DeploymentSpec
    dir: Path
    conf_dir: Path
    log_dir: Path
    run_dir: Path
    options: StackOptions
    out: Out
    status_token: str
    database: database_tier.DatabaseTier | None

    def replica_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec.app_environment)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env.setdefault("SQLITE_PATH", str(self.dir / "db.sqlite3"))
        # LLM breakers coordinate through Redis across the replicas (db 2 of the cache Redis).
        env.setdefault("ARENA_SCALE_BREAKER_REDIS_URL", self.spec.redis_url("cache", 2))
        env.update(self.options.env)
        if self.database is not None:
            env.update(self.database.app_env())
        if self.status_token:
            env[STATUS_TOKEN_ENV] = self.status_token
        # One directory per replica: its workers' metrics, merged by every scrape of it.
        env[MULTIPROC_ENV] = str(self.metrics_dir(name))
        env["ARENA_REPLICA_NAME"] = name
        env[drain.ENV_VAR] = str(self.drain_path(name))
        return env

    def metrics_dir(self, name: str) -> Path:
        """The replica's PROMETHEUS_MULTIPROC_DIR (its gunicorn master empties it at start)."""
        return self.dir / "metrics" / name

    def drain_path(self, name: str) -> Path:
        """The replica's drain file (its ARENA_SCALE_DRAIN_FILE)."""
        return self.run_dir / f"{name}.drain"

    def replica_argv(self, name: str) -> list[str]:
        """gunicorn with the rendered config of the replica's pool, bound to its port."""
        spec = self.spec
        server = spec.server_of(name)
        port = spec.local_service_port(name)
        rendered = self.conf_dir / (
            "gunicorn.conf.py" if server == "gunicorn" else "gunicorn_asgi.conf.py"
        )
        app = spec.wsgi_app if server == "gunicorn" else spec.asgi_app
        argv = [self.options.python, "-m", "gunicorn"]
        argv += ["--bind", f"127.0.0.1:{port}", "--name", f"arena-{name}"]
        if rendered.exists():
            argv += ["--config", str(rendered)]
            if name in spec.stream_names:
                argv += ["--workers", str(spec.stream_workers)]
            return [*argv, app]
        # No rendered server config (a renderer set without deploy._server): same settings.
        chain = spec.chain
        argv += ["--config", str(self.conf_dir / "stack_gunicorn_hooks.py")]
        argv += ["--graceful-timeout", str(chain.server_graceful)]
        argv += ["--timeout", str(chain.worker_timeout)]
        argv += ["--keep-alive", str(chain.server_keepalive)]
        if server == "gunicorn":
            argv += ["--worker-class", WSGI_WORKER, "--workers", str(spec.workers)]
            argv += ["--threads", str(spec.threads)]
        else:
            workers = spec.stream_workers if name in spec.stream_names else spec.workers
            argv += ["--worker-class", UVICORN_WORKER, "--workers", str(workers)]
        return [*argv, app]

    def _make_replica(self, name: str) -> Replica:
        process = ManagedProcess(
            name,
            self.replica_argv(name),
            env=self.replica_env(name),
            cwd=self.options.cwd,
            log_path=self.log_dir / f"{name}.log",
        )
        return Replica(
            name,
            self.spec.local_service_port(name),
            self.spec.server_of(name),
            process,
            self.drain_path(name),
        )

    def _collect_static(self) -> None:
        """``collectstatic`` into the project's ``STATIC_ROOT``, served by nginx as ``static/``.

        The local nginx config aliases the static URL to ``<conf dir>/static/``: a link to
        ``STATIC_ROOT`` after the files were collected.  A project without
        ``django.contrib.staticfiles`` or without ``STATIC_ROOT`` serves no static files (said
        in the log); a failing collectstatic stops the start, like a failing migrate.
        """
        first = self.spec.app_services[0]
        result = subprocess.run(
            [self.options.python, "-c", _COLLECT_STATIC],
            env=self.replica_env(first),
            cwd=self.options.cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        (self.log_dir / "collectstatic.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
            msg = (
                f"manage.py collectstatic failed (exit {result.returncode}):\n{tail}\n"
                "(see logs/collectstatic.log)."
            )
            raise StackError(msg)
        root = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if not root:
            self.out("static files: not served (no django.contrib.staticfiles or STATIC_ROOT)")
            return
        link = self.conf_dir / "static"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(root, target_is_directory=True)

    def _migrate(self) -> None:
        first = self.spec.app_services[0]
        env = self.replica_env(first)
        if self.database is not None:
            env.update(self.database.migrate_env())  # the primary itself, not PgBouncer
        result = subprocess.run(
            [self.options.python, "-m", "django", "migrate", "--noinput"],
            env=env,
            cwd=self.options.cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        (self.log_dir / "migrate.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
            msg = (
                f"manage.py migrate failed (exit {result.returncode}):\n{tail}\n"
                "(see logs/migrate.log)."
            )
            raise StackError(msg)
        if self.database is not None:
            self.database.wait_replayed()
