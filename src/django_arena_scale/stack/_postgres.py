"""PostgreSQL primaries, streaming replicas and PgBouncer on loopback, for the stack and tests.

``initdb``, ``postgres``, ``pg_basebackup`` and ``pgbouncer`` from the Debian packages
(``postgresql``, ``pgbouncer``), each on a 127.0.0.1 port, with its data in a directory of its
own.  Neither PostgreSQL nor PgBouncer runs as root: started by root, the servers run as the
``postgres`` system user the Debian package creates (``subprocess.Popen(user=...)``), and their
directories belong to it (so they live under the system's temporary directory, which that user
can reach, rather than under a state directory in ``/root``).

Each server runs in the foreground in a process group of its own, so :meth:`kill` is a crash
(SIGKILL to the postmaster and every backend at once) and :func:`kill_all` ends whatever is
left.  Unix sockets are off: everything speaks TCP on loopback.  The data is throwaway: it is
removed by :meth:`close`.

``manage.py run_lb_stack --postgres [--pgbouncer] [--read-replicas K]`` uses them through
:class:`~django_arena_scale.stack._database_tier.DatabaseTier`; the test fixtures use the
classes directly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django_arena_scale.stack._errors import StackError

__all__ = [
    "PgBouncer",
    "PostgresServer",
    "connect",
    "kill_all",
    "pg_binary",
    "pgbouncer_binary",
    "redact",
]

USER = "arena"
DBNAME = "arena"
START_TIMEOUT = 30.0

_groups: list[subprocess.Popen[bytes]] = []


def kill_all() -> None:
    """SIGKILL every server process group this process started and that still runs."""
    for proc in _groups:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def pg_binary(name: str, bin_dir: str | Path | None = None) -> str:
    """``initdb``, ``postgres``, ``pg_basebackup``: from ``bin_dir`` if given, else from PATH
    or Debian's versioned directory (the newest version)."""
    if bin_dir is not None:
        path = Path(bin_dir) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        msg = (
            f"The PostgreSQL program {name!r} was not found in {str(bin_dir)!r} "
            "(--pg-bin-dir); expected the directory of initdb and postgres, "
            "e.g. /usr/lib/postgresql/15/bin."
        )
        raise StackError(msg)
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    msg = (
        f"The PostgreSQL program {name!r} was not found on PATH or in "
        "/usr/lib/postgresql/*/bin; install it (Debian/Ubuntu: apt-get install -y postgresql)."
    )
    raise StackError(msg)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        msg = (
            "The pgbouncer binary was not found on PATH or in /usr/sbin; install it "
            "(Debian/Ubuntu: apt-get install -y pgbouncer)."
        )
        raise StackError(msg)
    return found


def redact(url: str) -> str:
    """``postgres://arena:secret@h:1/db`` -> ``postgres://arena:***@h:1/db``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, alive: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        if not alive() or time.monotonic() > deadline:
            msg = f"nothing listens on 127.0.0.1:{port}"
            raise StackError(msg)
        time.sleep(0.05)


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        msg = (
            "PostgreSQL refuses to run as root and the 'postgres' system user is missing "
            "(apt-get install -y postgresql creates it); or run as another user."
        )
        raise StackError(msg) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _private_dir(prefix: str, parent: Path | None) -> Path:
    run_as = _run_as()
    if parent is None or run_as:
        # The postgres user must reach the directory: not under a root-only parent.
        path = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if run_as:
        os.chown(path, run_as["user"], run_as["group"])
    path.chmod(0o700)
    return path


def _chown(*paths: Path) -> None:
    run_as = _run_as()
    if run_as:
        for path in paths:
            os.chown(path, run_as["user"], run_as["group"])


def _run(args: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        args, capture_output=True, timeout=timeout, env=env, check=False, **_run_as()
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
        msg = f"{what} failed (exit {result.returncode}):\n{output}"
        raise StackError(msg)


def connect(
    port: int, *, password: str, dbname: str = DBNAME, timeout: int = 2, **kwargs: Any
) -> Any:
    """A psycopg connection (autocommit) to the server or PgBouncer on ``port``."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency of any PostgreSQL app
        msg = "psycopg is not installed; pip install 'psycopg[binary]' (the app needs it too)."
        raise StackError(msg) from None
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=password,
        dbname=dbname,
        connect_timeout=timeout,
        autocommit=True,
        **kwargs,
    )


class _Group:
    """One foreground server in its own process group, with a log file."""

    name = "server"

    def __init__(
        self, root: Path, port: int | None, password: str, log_path: Path | None = None
    ) -> None:
        self.root = root
        self.port = port or _free_port()
        self.password = password
        self.log_path = log_path or root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_run_as(),
            )
        _groups.append(self.proc)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"postgres://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{DBNAME}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no shutdown of any kind."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # Backends are children of the postmaster, not of this process: wait until the
        # group is gone so that a restart on the same data directory finds no survivor.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)
        self.proc = None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
        """Ask the server to stop (``SIGINT``: PostgreSQL's fast shutdown), then kill it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()


class PostgresServer(_Group):
    """A throwaway PostgreSQL cluster (``initdb``) or a streaming replica of one.

    ``PostgresServer(password=...)`` initialises a primary with user ``arena`` (password
    authentication over TCP) and database ``arena``.  ``PostgresServer(primary=p)`` makes a
    hot standby of ``p`` with ``pg_basebackup -R`` (streaming replication).  ``stop()``/
    ``kill()`` and ``start()`` keep the port and the data, so clients configured with
    :attr:`url` reconnect.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        primary: PostgresServer | None = None,
        port: int | None = None,
        max_connections: int = 40,
        password: str | None = None,
        parent_dir: Path | None = None,
        log_path: Path | None = None,
        label: str | None = None,
        bin_dir: str | Path | None = None,
    ) -> None:
        if password is None:
            password = primary.password if primary is not None else secrets.token_urlsafe(18)
        super().__init__(_private_dir("arena-pg-", parent_dir), port, password, log_path)
        self.primary = primary
        self.max_connections = max_connections
        self.data = self.root / "data"
        self.label = label or ("postgres" if primary is None else "postgres-replica")
        self.bin_dir: str | Path | None = (
            bin_dir if bin_dir is not None or primary is None else primary.bin_dir
        )
        self._initialised = False

    @property
    def role(self) -> str:
        return "primary" if self.primary is None else "replica"

    def __repr__(self) -> str:
        return f"<PostgresServer {self.role} port={self.port}>"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "role": self.role,
            "port": self.port,
            "pid": self.pid,
            "url": redact(self.url),
            "max_connections": self.max_connections,
            "state": "running" if self.running else "stopped",
            "log": str(self.log_path),
        }

    def _initialise(self) -> None:
        if self.primary is None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            _chown(pwfile)
            try:
                _run(
                    [
                        pg_binary("initdb", self.bin_dir), "-D", str(self.data), "-U", USER,
                        f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync",
                    ],
                    "initdb",
                    timeout=60,
                )  # fmt: skip
            finally:
                pwfile.unlink()
        else:
            env = {**os.environ, "PGPASSWORD": self.password}
            _run(
                [
                    pg_binary("pg_basebackup", self.bin_dir),
                    "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", USER,
                    "-D", str(self.data), "-R", "-X", "stream",
                    "--checkpoint=fast", "--no-sync",
                ],
                f"pg_basebackup from {self.primary!r}",
                timeout=60,
                env=env,
            )  # fmt: skip
        self._initialised = True

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._initialise()
        self._spawn(
            [
                pg_binary("postgres", self.bin_dir), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=",
                "-c", f"max_connections={self.max_connections}",
                "-c", "shared_buffers=16MB",
                # Throwaway data: no fsync on a shared machine.  Commits still reach the
                # WAL before they return (synchronous_commit stays on), so what a client saw
                # committed survives kill(), a crash of the processes (not of the machine).
                "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "wal_level=replica", "-c", "max_wal_senders=5", "-c", "hot_standby=on",
                "-c", "wal_receiver_status_interval=1s",
                "-c", "wal_retrieve_retry_interval=500ms",
                "-c", "log_min_messages=warning",
            ]
        )  # fmt: skip
        try:
            self._wait_ready()
        except Exception:
            log = self.log()
            self.kill()
            msg = f"{self!r} did not start:\n{log}"
            raise StackError(msg) from None
        if self.primary is None and not self._database_exists():
            with connect(self.port, password=self.password, dbname="postgres") as conn:
                conn.execute(f"CREATE DATABASE {DBNAME}")
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        _wait_for_port(self.port, START_TIMEOUT, lambda: self.running)
        while True:
            try:
                with connect(self.port, password=self.password, dbname="postgres") as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.05)

    def _database_exists(self) -> bool:
        with connect(self.port, password=self.password, dbname="postgres") as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DBNAME]).fetchone()
            return row is not None

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until this replica has replayed everything its primary has written so far."""
        assert self.primary is not None, "only a replica replays"
        with connect(self.primary.port, password=self.password) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        target = row[0]
        deadline = time.monotonic() + timeout
        with connect(self.port, password=self.password) as conn:
            while True:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]
                ).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    msg = f"{self!r} did not replay up to {target} in {timeout}s"
                    raise TimeoutError(msg)
                time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class PgBouncer(_Group):
    """A real PgBouncer in front of ``server``, transaction pooling by default.

    The client URL (:attr:`url`) has the same user, password and database name as the server's;
    ``default_pool_size`` bounds the server connections PgBouncer opens.
    """

    name = "pgbouncer"

    def __init__(
        self,
        server: PostgresServer,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 10,
        max_client_conn: int = 200,
        query_wait_timeout: int = 5,
        port: int | None = None,
        parent_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(
            _private_dir("arena-pgbouncer-", parent_dir), port, server.password, log_path
        )
        self.query_wait_timeout = query_wait_timeout
        self.server = server
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.ini = self.root / "pgbouncer.ini"

    def __repr__(self) -> str:
        return f"<PgBouncer {self.pool_mode} port={self.port} -> {self.server!r}>"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": "pgbouncer",
            "port": self.port,
            "pid": self.pid,
            "url": redact(self.url),
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "query_wait_timeout": self.query_wait_timeout,
            "state": "running" if self.running else "stopped",
            "log": str(self.log_path),
        }

    def _write_config(self) -> None:
        userlist = self.root / "userlist.txt"
        userlist.write_text(f'"{USER}" "{self.password}"\n')
        userlist.chmod(0o600)
        self.ini.write_text(
            "[databases]\n"
            f"{DBNAME} = host=127.0.0.1 port={self.server.port} dbname={DBNAME}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\n"
            # A dead server is retried quickly, so a restart is noticed within a second.
            "server_login_retry = 1\n"
            "server_connect_timeout = 2\n"
            # How long a client waits for a server connection: with the server down, the
            # clients queued at that moment get an error after this many seconds.
            f"query_wait_timeout = {self.query_wait_timeout}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        _chown(userlist, self.ini)

    def start(self) -> PgBouncer:
        if not self.ini.exists():
            self._write_config()
        self._spawn([pgbouncer_binary(), str(self.ini)])
        try:
            _wait_for_port(self.port, START_TIMEOUT, lambda: self.running)
        except Exception:
            log = self.log()
            self.kill()
            msg = f"{self!r} did not start:\n{log}"
            raise StackError(msg) from None
        return self

    def close(self) -> None:
        self.stop(signal.SIGTERM)  # PgBouncer's immediate shutdown (SIGINT waits for clients)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
