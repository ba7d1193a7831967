"""Real PostgreSQL 15 clusters, streaming replicas and PgBouncer for the tests.

No fakes: ``initdb``, ``postgres``, ``pg_basebackup`` and ``pgbouncer`` from the Debian
packages (``postgresql-15``, ``pgbouncer``), each on a free 127.0.0.1 port, in a temporary
directory removed afterwards.  Neither PostgreSQL nor PgBouncer runs as root: when the tests
run as root, the servers run as the ``postgres`` system user the Debian package creates
(``subprocess.Popen(user=...)``), and their directories belong to it.

Each server runs in the foreground in a process group of its own, so :meth:`kill` is a crash
(SIGKILL to the postmaster and every backend at once) and the interpreter-exit cleanup kills
whatever a failed test left behind.  Unix sockets are off: everything speaks TCP on loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_for_port

USER = "arena"
PASSWORD = "arena-test-password"
DBNAME = "arena"
START_TIMEOUT = 30.0

_groups: list[subprocess.Popen[bytes]] = []


def _kill_groups() -> None:
    for proc in _groups:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


atexit.register(_kill_groups)


def pg_binary(name: str) -> str:
    """``initdb``, ``postgres``, ``pg_basebackup``: from PATH or Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise RuntimeError(
        f"{name!r} is not installed; on Debian/Ubuntu run: apt-get install -y postgresql"
    )


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if found is None:
        raise RuntimeError(
            "'pgbouncer' is not installed; on Debian/Ubuntu run: apt-get install -y pgbouncer"
        )
    return found


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "the tests run as root and PostgreSQL refuses to: the 'postgres' user is missing "
            "(apt-get install -y postgresql creates it), or run the tests as another user"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    run_as = _run_as()
    if run_as:
        os.chown(path, run_as["user"], run_as["group"])
    path.chmod(0o700)
    return path


def _run(args: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        args, capture_output=True, timeout=timeout, env=env, check=False, **_run_as()
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{output}")


def connect(port: int, *, dbname: str = DBNAME, timeout: int = 2, **kwargs: Any) -> Any:
    """A psycopg connection (autocommit) to the server or PgBouncer on ``port``."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=PASSWORD,
        dbname=dbname,
        connect_timeout=timeout,
        autocommit=True,
        **kwargs,
    )


class _Group:
    """One foreground server in its own process group, with a log file."""

    name = "server"

    def __init__(self, root: Path, port: int | None) -> None:
        self.root = root
        self.port = port or free_port()
        self.log_path = root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str]) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_run_as()
            )
        _groups.append(self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no shutdown of any kind."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # Backends are children of the postmaster, not of this process: wait until the
        # group is gone so that a restart on the same data directory finds no survivor.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
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

    ``PostgresServer()`` initialises a primary with user ``arena`` (password authentication
    over TCP) and database ``arena``.  ``PostgresServer(primary=p)`` makes a hot standby of
    ``p`` with ``pg_basebackup -R`` (streaming replication).  ``stop()``/``kill()`` and
    ``start()`` keep the port and the data, so clients configured with :attr:`url` reconnect.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        primary: PostgresServer | None = None,
        port: int | None = None,
        max_connections: int = 40,
    ) -> None:
        super().__init__(_private_dir("arena-pg-"), port)
        self.primary = primary
        self.max_connections = max_connections
        self.data = self.root / "data"
        self._initialised = False

    @property
    def role(self) -> str:
        return "primary" if self.primary is None else "replica"

    @property
    def url(self) -> str:
        return f"postgres://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DBNAME}"

    def __repr__(self) -> str:
        return f"<PostgresServer {self.role} port={self.port}>"

    def _initialise(self) -> None:
        if self.primary is None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            run_as = _run_as()
            if run_as:
                os.chown(pwfile, run_as["user"], run_as["group"])
            _run(
                [
                    pg_binary("initdb"), "-D", str(self.data), "-U", USER,
                    f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync",
                ],
                "initdb",
                timeout=60,
            )  # fmt: skip
            pwfile.unlink()
        else:
            env = {**os.environ, "PGPASSWORD": PASSWORD}
            _run(
                [
                    pg_binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                    "-U", USER, "-D", str(self.data), "-R", "-X", "stream",
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
                pg_binary("postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=",
                "-c", f"max_connections={self.max_connections}",
                "-c", "shared_buffers=16MB",
                # Throwaway data: no fsync on a shared test machine.  Commits still reach the
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
            raise RuntimeError(f"{self!r} did not start:\n{log}") from None
        if self.primary is None and not self._database_exists():
            with connect(self.port, dbname="postgres") as conn:
                conn.execute(f"CREATE DATABASE {DBNAME}")
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        wait_for_port(self.port, timeout=START_TIMEOUT)
        while True:
            try:
                with connect(self.port, dbname="postgres") as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.05)

    def _database_exists(self) -> bool:
        with connect(self.port, dbname="postgres") as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DBNAME]).fetchone()
            return row is not None

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until this replica has replayed everything its primary has written so far."""
        assert self.primary is not None, "only a replica replays"
        with connect(self.primary.port) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        target = row[0]
        deadline = time.monotonic() + timeout
        with connect(self.port) as conn:
            while True:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]
                ).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self!r} did not replay up to {target} in {timeout}s")
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
    ) -> None:
        super().__init__(_private_dir("arena-pgbouncer-"), port)
        self.query_wait_timeout = query_wait_timeout
        self.server = server
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.ini = self.root / "pgbouncer.ini"

    @property
    def url(self) -> str:
        return f"postgres://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DBNAME}"

    def __repr__(self) -> str:
        return f"<PgBouncer {self.pool_mode} port={self.port} -> {self.server!r}>"

    def _write_config(self) -> None:
        userlist = self.root / "userlist.txt"
        userlist.write_text(f'"{USER}" "{PASSWORD}"\n')
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
        run_as = _run_as()
        if run_as:
            for path in (userlist, self.ini):
                os.chown(path, run_as["user"], run_as["group"])

    def start(self) -> PgBouncer:
        if not self.ini.exists():
            self._write_config()
        self._spawn([pgbouncer_binary(), str(self.ini)])
        try:
            wait_for_port(self.port, timeout=START_TIMEOUT)
        except Exception:
            log = self.log()
            self.kill()
            raise RuntimeError(f"{self!r} did not start:\n{log}") from None
        return self

    def close(self) -> None:
        self.stop(signal.SIGTERM)  # PgBouncer's immediate shutdown (SIGINT waits for clients)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
