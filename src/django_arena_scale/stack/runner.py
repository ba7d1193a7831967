"""``LocalStack``: Redis, N replicas and nginx on 127.0.0.1, from the ``local`` deploy variant.

Start order: preflight (binaries, ports) -> render the ``local`` variant into ``DIR/conf`` ->
Redis -> ``migrate`` -> replicas (each must answer ``/ready/`` 200) -> nginx.  Any failure
stops everything already started, in reverse order, and raises :class:`StackError` naming
the cause.  ``DIR/stack.json`` is rewritten atomically on every state change.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django_arena_scale.deploy.spec import DeploymentSpec
from django_arena_scale.stack import control, upstreams
from django_arena_scale.stack.errors import StackError
from django_arena_scale.stack.process import ManagedProcess

UVICORN_WORKER = "django_arena_scale.lifecycle.uvicorn.UvicornWorker"
HOOKS_MODULE = "django_arena_scale.lifecycle.gunicorn"
#: Bytes at the end of nginx's logs read to learn which replicas it skips.
_LOG_TAIL = 256 * 1024
#: Seconds past nginx's fail_timeout after which a replica counts as back without evidence.
_ADMIT_MARGIN = 3.0

Out = Callable[[str], None]


def find_binary(name: str, explicit: str | None = None) -> str:
    """Absolute path of ``name`` (``explicit`` first, then PATH, then /usr/sbin)."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        msg = f"The {name} binary {explicit!r} does not exist or is not executable."
        raise StackError(msg)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        msg = (
            f"The {name} binary was not found on PATH or in /usr/sbin; install it "
            f"(Debian: apt-get install {'redis-server' if 'redis' in name else name}) "
            f"or pass its path."
        )
        raise StackError(msg)
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port_range(count: int, *, start: int = 20000, stop: int = 60000) -> int:
    """First port ``p`` such that ``p .. p+count-1`` are all free on 127.0.0.1."""
    port = start
    while port + count < stop:
        busy = [p for p in range(port, port + count) if port_in_use(p)]
        if not busy:
            return port
        port = busy[-1] + 1
    msg = f"No {count} consecutive free ports between {start} and {stop} on 127.0.0.1."
    raise StackError(msg)


def http_get(port: int, path: str, *, timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


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
class RedisService:
    name: str
    port: int
    roles: list[str]
    policy: str
    maxmemory: str
    process: ManagedProcess
    state: str = "new"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "pid": self.process.pid,
            "roles": self.roles,
            "maxmemory_policy": self.policy,
            "state": self.state,
            "url": f"redis://127.0.0.1:{self.port}/0",
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


class LocalStack:
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
        self.redis_bin = ""
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
            if self.options.migrate:
                self._migrate()
            self._start_replicas()
            self._start_nginx()
        except BaseException:
            self.stop(quiet=True)
            raise
        self._started = True
        self.write_state()

    def _preflight(self) -> None:
        self.nginx_bin = find_binary("nginx", self.options.nginx_bin)
        self.redis_bin = find_binary("redis-server", self.options.redis_bin)
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
        if "daemon " not in conf.read_text():
            argv += ["-g", "daemon off;"]
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
        roles: dict[str, list[str]] = {}
        for role, service in self.spec.redis_services.items():
            roles.setdefault(service, []).append(role)
        for service, port in self.spec.local_redis_ports.items():
            cache_only = roles[service] == ["cache"]
            policy = "allkeys-lru" if cache_only else "noeviction"
            maxmemory = (
                self.spec.redis_maxmemory if cache_only else self.spec.redis_sessions_maxmemory
            )
            data = self.dir / "redis" / service
            data.mkdir(parents=True, exist_ok=True)
            argv = [
                self.redis_bin,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(data),
                "--maxmemory", maxmemory,
                "--maxmemory-policy", policy,
                "--daemonize", "no",
                "--loglevel", "warning",
            ]  # fmt: skip
            process = ManagedProcess(
                service, argv, log_path=self.log_dir / f"{service}.log", cwd=str(data)
            )
            redis = RedisService(service, port, sorted(roles[service]), policy, maxmemory, process)
            self.redis[service] = redis
            self._launch_redis(redis)

    def _launch_redis(self, redis: RedisService) -> None:
        redis.process.start()
        deadline = time.monotonic() + 10
        while True:
            if not redis.process.alive():
                redis.state = "failed"
                msg = (
                    f"redis-server {redis.name} on port {redis.port} exited with code "
                    f"{redis.process.returncode()}: {log_tail(redis.process.log_path or Path())}."
                )
                raise StackError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", redis.port), timeout=0.2),
            ):
                break
            if time.monotonic() > deadline:
                msg = f"redis-server {redis.name} did not listen on port {redis.port} within 10s."
                raise StackError(msg)
            time.sleep(0.05)
        redis.state = "running"

    # --- replicas --------------------------------------------------------------------------
    def replica_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec.app_environment)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env.setdefault("SQLITE_PATH", str(self.dir / "db.sqlite3"))
        # LLM breakers coordinate through Redis across the replicas (db 2 of the cache Redis).
        env.setdefault("ARENA_SCALE_BREAKER_REDIS_URL", self.spec.redis_url("cache", 2))
        env.update(self.options.env)
        env["ARENA_REPLICA_NAME"] = name
        env["ARENA_SCALE_DRAIN_FILE"] = str(self.run_dir / f"{name}.drain")
        return env

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
        # No rendered server config (a renderer set without deploy.server): same settings.
        chain = spec.chain
        argv += ["--config", str(self.conf_dir / "stack_gunicorn_hooks.py")]
        argv += ["--graceful-timeout", str(chain.server_graceful)]
        argv += ["--timeout", str(chain.worker_timeout)]
        argv += ["--keep-alive", str(chain.server_keepalive)]
        if server == "gunicorn":
            argv += ["--worker-class", "gthread", "--workers", str(spec.workers)]
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
            self.run_dir / f"{name}.drain",
        )

    def _migrate(self) -> None:
        first = self.spec.app_services[0]
        result = subprocess.run(
            [self.options.python, "-m", "django", "migrate", "--noinput"],
            env=self.replica_env(first),
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

    def _start_replicas(self) -> None:
        for name in self.spec.app_services:
            replica = self._make_replica(name)
            replica.drain_file.unlink(missing_ok=True)
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

    # --- replica actions -------------------------------------------------------------------
    def replica(self, name: str) -> Replica:
        try:
            return self.replicas[name]
        except KeyError:
            msg = f"No replica named {name!r}; expected one of {', '.join(self.replicas)}."
            raise StackError(msg) from None

    def stop_replica(self, name: str) -> str:
        """Graceful stop without touching nginx: drain file, wait ``drain_delay``, SIGTERM.

        The drain file makes the replica stop listening (its idle keep-alive connections
        close, requests in flight finish), so nginx's next connection to it is refused and
        goes to another replica before anything was sent: nothing is lost, a POST included,
        and no nginx reload closes a client's idle keep-alive connection.  Before that, it
        waits until another replica of each of its pools takes traffic.
        """
        with self._lock:
            replica = self.replica(name)
            self._wait_for_another_admitted(replica)
            replica.state = "draining"
            replica.drain_file.write_text("run_lb_stack\n")
            self.write_state()
            self._wait_drained(replica)
            replica.state = "stopping"
            self.write_state()
            outcome = replica.process.stop(self.spec.chain.server_graceful + 5)
            replica.state = "stopped"
            self.write_state()
            return outcome

    def start_replica(self, name: str) -> None:
        """Start (or restart) a replica and wait until it is ready.

        nginx sends it traffic as soon as it listens, unless nginx's passive health disabled
        it while it was down (``max_fails`` refused connections): then it rejoins after
        ``fail_timeout`` (:meth:`admitted` says whether).
        """
        with self._lock:
            replica = self.replica(name)
            if replica.process.alive():
                replica.process.stop(self.spec.chain.server_graceful + 5)
            replica.drain_file.unlink(missing_ok=True)
            replica.process.start()
            replica.state = "starting"
            self.write_state()
            self._wait_ready(replica)
            self.write_state()

    def restart_replica(self, name: str) -> None:
        self.stop_replica(name)
        self.start_replica(name)

    def _wait_drained(self, replica: Replica) -> None:
        """Wait ``drain_delay``, then until nginx closed its connections to ``replica``.

        The replica no longer listens and answers ``Connection: close``; nginx closes its idle
        upstream connections after its ``keepalive_timeout``.  Stopping the replica before that
        would close a connection nginx may be sending a request on.  Bounded by that timeout.
        """
        started = time.monotonic()
        time.sleep(self.options.drain_delay)
        deadline = started + max(
            self.options.drain_delay, self.spec.chain.nginx_keepalive_timeout + 2.0
        )
        while time.monotonic() < deadline and not self._stop_requested.is_set():
            if upstreams.established_connections(replica.port) == 0:
                return
            time.sleep(0.1)

    def _log_tail(self, name: str) -> str:
        path = self.conf_dir / "logs" / name
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - _LOG_TAIL))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def admitted(self, replica: Replica) -> bool:
        """Whether nginx sends ``replica`` traffic (as far as its logs can tell).

        True when nginx never disabled it (passive health, error log), or when the access log
        shows it answering after the last time it did; also once ``fail_timeout`` plus a margin
        passed with no traffic at all (nothing to lose then).
        """
        until = upstreams.disabled_until(
            self._log_tail("error.log"), replica.address, self.spec.fail_timeout
        )
        if until is None:
            return True
        disabled_at = until - self.spec.fail_timeout - 1.0
        if upstreams.served_since(self._log_tail("access.log"), replica.address, disabled_at + 1):
            return True
        return time.time() > until + _ADMIT_MARGIN

    def _pool_peers(self, replica: Replica) -> list[list[Replica]]:
        """For each nginx upstream serving ``replica``, the other replicas in it."""
        pools = []
        for members in (self.spec.api_members, self.spec.stream_members):
            names = {m.name for m in members}
            if replica.name in names:
                others = [r for r in self.replicas.values() if r is not replica and r.name in names]
                if others:
                    pools.append(others)
        return pools

    def _wait_for_another_admitted(self, replica: Replica) -> None:
        """Wait (bounded) until nginx sends traffic to every other ready replica of the pools
        of ``replica`` again, so that taking this one out never leaves a pool whose other
        members are all skipped by nginx's passive health (502 "no live upstreams")."""
        deadline = time.monotonic() + self.spec.fail_timeout + _ADMIT_MARGIN + 2
        while time.monotonic() < deadline and not self._stop_requested.is_set():
            if all(
                self.admitted(r)
                for others in self._pool_peers(replica)
                for r in others
                if r.state == "ready"
            ):
                return
            time.sleep(0.2)

    def kill_replica(self, name: str) -> None:
        """``kill -9`` the replica's whole process group (no drain, no nginx change)."""
        with self._lock:
            replica = self.replica(name)
            replica.process.kill()
            replica.state = "killed"
            self.write_state()

    def rolling_restart(self) -> None:
        """Restart every replica, one at a time, without an nginx reload (see stop_replica);
        done once nginx sends traffic to every replica again."""
        self.out("Rolling restart: " + ", ".join(self.replicas))
        for name in list(self.replicas):
            if self._stop_requested.is_set():
                return
            started = time.monotonic()
            self.restart_replica(name)
            self.out(f"  {name} restarted in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        deadline = started + self.spec.fail_timeout + _ADMIT_MARGIN + 2
        while time.monotonic() < deadline and not self._stop_requested.is_set():
            if all(self.admitted(r) for r in self.replicas.values() if r.state == "ready"):
                break
            time.sleep(0.2)
        self.out(f"  every replica back in nginx after {time.monotonic() - started:.1f}s")

    def stop_redis(self, name: str) -> None:
        with self._lock:
            redis = self._redis(name)
            redis.process.stop(5)
            redis.state = "stopped"
            self.write_state()

    def start_redis(self, name: str) -> None:
        with self._lock:
            redis = self._redis(name)
            self._launch_redis(redis)
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
                    replica.drain_file.write_text("run_lb_stack stop\n")
                replica.state = "draining"
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
                replica.drain_file.unlink(missing_ok=True)
            for redis in self.redis.values():
                redis.process.stop(5)
                redis.state = "stopped"
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
            "probe_paths": self.spec.probe_paths,
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
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )
