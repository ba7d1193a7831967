"""``LocalStack``: Redis, N replicas and nginx on 127.0.0.1, from the ``local`` deploy variant.

Start order: preflight (binaries, ports) -> render the ``local`` variant into ``DIR/conf`` ->
Redis -> ``migrate`` -> replicas (each must answer ``/ready/`` 200) -> nginx -> with
``prometheus=True``, Prometheus scraping every replica (:mod:`._prometheus`).  Each replica
keeps its metrics files in its own ``DIR/metrics/<name>`` (``PROMETHEUS_MULTIPROC_DIR``).
Any failure stops everything already started, in reverse order, and raises
:class:`StackError` naming the cause.  ``DIR/stack.json`` is rewritten atomically on every
state change.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.lifecycle import _drain as drain
from django_arena_scale.stack import _admission as admission
from django_arena_scale.stack import _control as control
from django_arena_scale.stack import _database_tier as database_tier
from django_arena_scale.stack import _prometheus as prometheus_server
from django_arena_scale.stack import _redis_servers as redis_servers
from django_arena_scale.stack import _rolling as rolling
from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._host import (
    find_binary,
    free_port_range,
    http_get,
    log_tail,
    port_in_use,
)
from django_arena_scale.stack._process import ManagedProcess
from django_arena_scale.stack._redis_servers import RedisService
from django_arena_scale.stack._replicas import (
    HOOKS_MODULE,
    STATUS_TOKEN_ENV,
    UVICORN_WORKER,
    Out,
    Replica,
    ReplicaCommands,
    StackOptions,
)

__all__ = [
    "HOOKS_MODULE",
    "UVICORN_WORKER",
    "LocalStack",
    "RedisService",
    "Replica",
    "StackOptions",
    "find_binary",
    "free_port_range",
    "http_get",
    "log_tail",
    "port_in_use",
]


class LocalStack(ReplicaCommands):
    """Supervise the local stack of ``spec`` (``target='local'``) with state in ``state_dir``."""

    def __init__(
        self,
        spec: DeploymentSpec,
        state_dir: str | Path,
        options: StackOptions | None = None,
        *,
        out: Out = print,
    ) -> None:
        if spec.target != "local":
            spec = spec.replace(target="local")
        self.spec = spec
        self.dir = Path(state_dir).resolve()
        self.options = options or StackOptions()
        self.out = out
        self.conf_dir = self.dir / "conf"
        self.log_dir = self.dir / "logs"
        self.run_dir = self.dir / "run"
        self.replicas: dict[str, Replica] = {}
        self.redis: dict[str, RedisService] = {}
        self.nginx: ManagedProcess | None = None
        self.nginx_bin = ""
        self.prometheus: prometheus_server.PrometheusServer | None = None
        self.prometheus_bin = ""
        # Prometheus scrapes <prefix>metrics with this token (the /status/ details rule):
        # the one the replicas are given, else a new one for this stack.
        self.status_token = self.options.env.get(STATUS_TOKEN_ENV) or os.environ.get(
            STATUS_TOKEN_ENV, ""
        )
        if self.options.prometheus and not self.status_token:
            self.status_token = secrets.token_urlsafe(24)
        self.redis_bin = ""
        self.database: database_tier.DatabaseTier | None = None
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._hup_requested = threading.Event()
        self._started = False

    def __repr__(self) -> str:
        return f"<LocalStack {self.url} replicas={len(self.replicas)} dir={str(self.dir)!r}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.local_port}/"

    # --- start ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything; on any failure stop what was started and raise StackError."""
        try:
            self._preflight()
            self._render()
            self._start_redis()
            if self.options.postgres:
                self._start_database()
            if self.options.migrate:
                self._migrate()
            self._collect_static()
            self._start_replicas()
            self._start_nginx()
            if self.options.prometheus:
                self._start_prometheus()
        except BaseException:
            self.stop(quiet=True)
            raise
        self._started = True
        self.write_state()

    def _preflight(self) -> None:
        self.nginx_bin = find_binary("nginx", self.options.nginx_bin)
        self.redis_bin = find_binary("redis-server", self.options.redis_bin)
        if self.options.prometheus:
            self.prometheus_bin = find_binary("prometheus", self.options.prometheus_bin)
        if self.options.postgres:
            self.database = self._database_tier()
            self.database.preflight()
        for directory in (self.dir, self.conf_dir, self.log_dir, self.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        wanted = {"nginx (--port)": self.spec.local_port}
        for name in self.spec.app_services:
            wanted[f"replica {name}"] = self.spec.local_service_port(name)
        for name, port in self.spec.local_redis_ports.items():
            wanted[f"Redis {name}"] = port
        busy = [f"{what} port {port}" for what, port in wanted.items() if port_in_use(port)]
        if busy:
            msg = (
                f"Port already in use on 127.0.0.1: {', '.join(busy)}; "
                "stop what holds it or pick another port."
            )
            raise StackError(msg)

    def _render(self) -> None:
        try:
            from django_arena_scale.deploy import render_all
        except ImportError as exc:  # pragma: no cover - the deploy package ships with us
            msg = "django_arena_scale.deploy.render_all is not available."
            raise StackError(msg) from exc
        try:
            rendered = render_all(self.spec)
        except ImportError as exc:
            msg = f"The local deploy renderer cannot be imported ({exc}); it renders nginx.conf."
            raise StackError(msg) from exc
        if self.conf_dir.exists():
            shutil.rmtree(self.conf_dir)
        for relpath, content in rendered.files.items():
            path = self.conf_dir / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        if not (self.conf_dir / "nginx.conf").exists():
            msg = f"The local variant rendered no nginx.conf into {str(self.conf_dir)!r}."
            raise StackError(msg)
        # Directories nginx expects (logs, temp paths) may be referenced but not rendered.
        for line in (self.conf_dir / "nginx.conf").read_text().splitlines():
            for token in line.replace(";", " ").split():
                if token.startswith(str(self.conf_dir)) and not Path(token).suffix:
                    Path(token).mkdir(parents=True, exist_ok=True)
        hooks = self.conf_dir / "stack_gunicorn_hooks.py"
        hooks.write_text(f"from {HOOKS_MODULE} import *  # noqa: F403\n")
        for sub in ("logs", "tmp"):
            (self.conf_dir / sub).mkdir(exist_ok=True)
        self._check_nginx_config()

    def _nginx_argv(self, *extra: str) -> list[str]:
        conf = self.conf_dir / "nginx.conf"
        argv = [self.nginx_bin, "-p", f"{self.conf_dir}/", "-c", str(conf)]
        # -e: without it nginx opens its compiled-in error log (/var/log/...) before reading
        # the config, which an ordinary user cannot.
        argv += ["-e", str(self.conf_dir / "logs" / "error.log")]
        directives = []
        if "daemon " not in conf.read_text():
            directives.append("daemon off;")
        if os.geteuid() == 0:
            # Started by root, nginx would run its workers as "nobody", who cannot read a
            # state dir under /root (static files 403): they run as whoever started the
            # stack, as they do for an ordinary user.  The stack listens on loopback only.
            directives.append("user root;")
        if directives:
            argv += ["-g", " ".join(directives)]
        return argv + list(extra)

    def _check_nginx_config(self) -> None:
        result = subprocess.run(
            self._nginx_argv("-t", "-q"), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            msg = f"nginx rejects the rendered config: {result.stderr.strip()}."
            raise StackError(msg)

    # --- redis -----------------------------------------------------------------------------
    def _start_redis(self) -> None:
        servers = redis_servers.planned(self.spec, self.redis_bin, self.dir / "redis", self.log_dir)
        for redis in servers:
            self.redis[redis.name] = redis
            redis_servers.launch(redis)

    def _database_tier(self) -> database_tier.DatabaseTier:
        spec = self.spec
        return database_tier.DatabaseTier(
            read_replicas=spec.postgres_read_replicas,
            pgbouncer=spec.pgbouncer,
            max_connections=spec.postgres_max_connections,
            pool_size=spec.pgbouncer_pool_size,
            query_wait_timeout=spec.pgbouncer_query_wait_timeout,
            log_dir=self.log_dir,
            bin_dir=self.options.pg_bin_dir,
        )

    def _start_database(self) -> None:
        """PostgreSQL primary, K streaming replicas and PgBouncer (:mod:`._database_tier`)."""
        assert self.database is not None  # created by _preflight
        self.database.start()
        self.write_state()

    def kill_database(self, name: str) -> str:
        """SIGKILL a database server's process group (postgres, postgres-replica-N, pgbouncer)."""
        with self._lock:
            self._database().kill(name)
            self.write_state()
        return "killed"

    def start_database(self, name: str) -> str:
        """Start a killed database server again, same port and data."""
        with self._lock:
            self._database().start_server(name)
            self.write_state()
        return "started"

    def _database(self) -> database_tier.DatabaseTier:
        if self.database is None:
            msg = "This stack runs no database servers; start it with --postgres."
            raise StackError(msg)
        return self.database

    def _start_replicas(self) -> None:
        for name in self.spec.app_services:
            replica = self._make_replica(name)
            drain.remove(replica.drain_file)
            self.replicas[name] = replica
            replica.process.start()
            replica.state = "starting"
        self.write_state()
        for replica in self.replicas.values():
            self._wait_ready(replica)

    def _wait_ready(self, replica: Replica) -> None:
        path = self.spec.probe_paths["ready"]
        deadline = time.monotonic() + self.options.ready_timeout
        last = "no answer"
        while True:
            if self._stop_requested.is_set():
                msg = f"Stopped while waiting for replica {replica.name} to become ready."
                raise StackError(msg)
            if not replica.process.alive():
                replica.state = "failed"
                msg = (
                    f"Replica {replica.name} exited with code {replica.process.returncode()} "
                    f"before becoming ready; last lines of {replica.process.log_path}:\n"
                    f"{log_tail(replica.process.log_path or Path())}"
                )
                raise StackError(msg)
            try:
                status, body = http_get(replica.port, path)
                if status == 200:
                    break
                last = f"{status} {body[:200].decode(errors='replace')}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                replica.state = "failed"
                msg = (
                    f"Replica {replica.name} (127.0.0.1:{replica.port}) did not become ready "
                    f"within {self.options.ready_timeout:g}s; last {path} answer: {last}."
                )
                raise StackError(msg)
            time.sleep(0.1)
        replica.state = "ready"
        self.write_state()

    # --- nginx -----------------------------------------------------------------------------
    def _start_nginx(self) -> None:
        self.nginx = ManagedProcess(
            "nginx", self._nginx_argv(), log_path=self.log_dir / "nginx.log", cwd=str(self.conf_dir)
        )
        self.nginx.start()
        deadline = time.monotonic() + 10
        while True:
            if not self.nginx.alive():
                tail = log_tail(self.nginx.log_path or Path())
                msg = f"nginx exited with code {self.nginx.returncode()}: {tail}."
                raise StackError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.spec.local_port), timeout=0.2),
            ):
                break
            if time.monotonic() > deadline:
                msg = f"nginx did not listen on 127.0.0.1:{self.spec.local_port} within 10s."
                raise StackError(msg)
            time.sleep(0.05)
        self.nginx.state = "running"

    # --- prometheus ------------------------------------------------------------------------
    def _start_prometheus(self) -> None:
        prometheus_server.write_token(self.conf_dir, self.status_token)
        start = max(self.spec.local_port, self.spec.status_port) + 1
        self.prometheus = prometheus_server.launch(
            self.prometheus_bin,
            self.conf_dir,
            self.dir / "prometheus-data",
            self.log_dir,
            start_port=start,
        )
        self.out(f"Prometheus: {self.prometheus.url}")

    # --- replica actions -------------------------------------------------------------------
    def replica(self, name: str) -> Replica:
        try:
            return self.replicas[name]
        except KeyError:
            msg = f"No replica named {name!r}; expected one of {', '.join(self.replicas)}."
            raise StackError(msg) from None

    # The replica actions and the rolling restart live in .rolling (see its docstring).
    def stop_replica(self, name: str) -> str:
        """Graceful stop without touching nginx: drain file, wait ``drain_delay``, SIGTERM."""
        return rolling.stop_replica(self, name)

    def start_replica(self, name: str) -> None:
        """Start (or restart) a replica and wait until it is ready."""
        rolling.start_replica(self, name)

    def restart_replica(self, name: str) -> None:
        rolling.restart_replica(self, name)

    def kill_replica(self, name: str) -> None:
        """``kill -9`` the replica's whole process group (no drain, no nginx change)."""
        rolling.kill_replica(self, name)

    def rolling_restart(self) -> None:
        """Restart every replica, one at a time, without an nginx reload."""
        rolling.rolling_restart(self)

    @property
    def nginx_log_dir(self) -> Path:
        """Where the rendered nginx.conf has nginx write its error and access logs."""
        return self.conf_dir / "logs"

    def admitted(self, replica: Replica) -> bool:
        """Whether nginx sends ``replica`` traffic (as far as its logs can tell)."""
        return admission.admitted(self.nginx_log_dir, replica.address, self.spec.fail_timeout)

    def stop_redis(self, name: str) -> None:
        with self._lock:
            redis = self._redis(name)
            redis.process.stop(5)
            redis.state = "stopped"
            self.write_state()

    def start_redis(self, name: str) -> None:
        with self._lock:
            redis = self._redis(name)
            redis_servers.launch(redis)
            self.write_state()

    def _redis(self, name: str) -> RedisService:
        try:
            return self.redis[name]
        except KeyError:
            msg = f"No Redis named {name!r}; expected one of {', '.join(self.redis)}."
            raise StackError(msg) from None

    def do(self, action: str, target: str | None) -> str:
        """Run one control action; returns a one-line result."""
        if action == "rolling-restart":
            self.rolling_restart()
            return "rolling restart done"
        assert target is not None
        actions: dict[str, Callable[[str], Any]] = {
            "restart": self.restart_replica,
            "kill": self.kill_replica,
            "stop": self.stop_replica,
            "start": self.start_replica,
            "stop-redis": self.stop_redis,
            "start-redis": self.start_redis,
            "kill-db": self.kill_database,
            "start-db": self.start_database,
        }
        if action not in actions:
            msg = f"Unknown stack action {action!r}; expected one of {', '.join(control.ACTIONS)}."
            raise StackError(msg)
        result = actions[action](target)
        return f"{action} {target}: {result or 'done'}"

    # --- supervision -----------------------------------------------------------------------
    def poll(self) -> None:
        """Notice children that died behind our back (a kill -9 from outside)."""
        changed = False
        for replica in self.replicas.values():
            if replica.state in ("ready", "starting", "draining") and not replica.process.alive():
                replica.state = f"exited({replica.process.returncode()})"
                changed = True
        for redis in self.redis.values():
            if redis.state == "running" and not redis.process.alive():
                redis.state = f"exited({redis.process.returncode()})"
                changed = True
        if changed:
            self.write_state()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def request_rolling_restart(self) -> None:
        self._hup_requested.set()

    def serve(self, *, tick: float = 0.1) -> int:
        """Run until asked to stop; returns the exit status (0 unless nginx died)."""
        status = 0
        while not self._stop_requested.is_set():
            if self._hup_requested.is_set():
                self._hup_requested.clear()
                try:
                    self.rolling_restart()
                except StackError as exc:
                    self.out(f"Rolling restart failed: {exc}")
            for path, body in control.pending(self.dir):
                try:
                    message = self.do(str(body.get("action")), body.get("target"))
                    control.answer(path, ok=True, message=message)
                except StackError as exc:
                    control.answer(path, ok=False, message=str(exc))
            self.poll()
            if self.nginx is not None and not self.nginx.alive():
                self.out(f"nginx exited with code {self.nginx.returncode()}; stopping the stack.")
                status = 1
                break
            self._stop_requested.wait(tick)
        return status

    def stop(self, *, quiet: bool = False) -> None:
        """Stop everything: drain replicas, nginx (graceful), replicas, Redis.  Idempotent."""
        with self._lock:
            live = [r for r in self.replicas.values() if r.process.alive()]
            for replica in live:
                with contextlib.suppress(OSError):
                    drain.write(replica.drain_file, reason="run_lb_stack stop")
                replica.state = "draining"
            if self.prometheus is not None:
                self.prometheus.process.stop(10)
            if live and self.nginx is not None and self.nginx.alive():
                time.sleep(min(self.options.drain_delay, 1.0))
            if self.nginx is not None:
                self.nginx.stop(10, signum=signal.SIGQUIT)
            threads = [
                threading.Thread(
                    target=replica.process.stop, args=(self.spec.chain.server_graceful + 5,)
                )
                for replica in self.replicas.values()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for replica in self.replicas.values():
                replica.state = "stopped"
                drain.remove(replica.drain_file)
            for redis in self.redis.values():
                redis.process.stop(5)
                redis.state = "stopped"
            if self.database is not None:
                self.database.close()
            if self.dir.exists():
                with contextlib.suppress(OSError):
                    self.write_state(running=False)
            if not quiet:
                self.out("Stack stopped.")

    # --- state -----------------------------------------------------------------------------
    def state(self, *, running: bool = True) -> dict[str, Any]:
        return {
            "url": self.url,
            "running": running,
            "supervisor_pid": os.getpid(),
            "nginx_pid": self.nginx.pid if self.nginx is not None else None,
            "nginx_conf": str(self.conf_dir / "nginx.conf"),
            "replicas": [r.as_json() for r in self.replicas.values()],
            "redis": [r.as_json() for r in self.redis.values()],
            **(
                self.database.as_json()
                if self.database is not None
                else {"databases": [], "pgbouncer": None}
            ),
            "probe_paths": self.spec.probe_paths,
            "prometheus": (
                {"url": self.prometheus.url, "pid": self.prometheus.process.pid}
                if self.prometheus is not None
                else None
            ),
        }

    def write_state(self, *, running: bool = True) -> None:
        control.write_json_atomic(self.dir / "stack.json", self.state(running=running))

    def table(self) -> str:
        rows = [("NAME", "POOL", "ADDRESS", "PID", "STATE")]
        for r in self.replicas.values():
            rows.append((r.name, r.pool, r.address, str(r.process.pid), r.state))
        for s in self.redis.values():
            rows.append(
                (
                    s.name,
                    "redis:" + "+".join(s.roles),
                    f"127.0.0.1:{s.port}",
                    str(s.process.pid),
                    s.state,
                )
            )
        if self.database is not None:
            state = self.database.as_json()
            for db in [*state["databases"], *([state["pgbouncer"]] if state["pgbouncer"] else [])]:
                role = db.get("role", "pooler")
                rows.append(
                    (
                        db["name"],
                        f"db:{role}",
                        f"127.0.0.1:{db['port']}",
                        str(db["pid"]),
                        db["state"],
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )
