"""Run the example project under a real gunicorn or uvicorn on a free loopback port.

Used by the example project's integration tests (and usable by e2e tests and benchmarks).  The
server process runs with ``cwd=example_project`` and the django_arena_scale the tests import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.example_db import ExampleDatabase
from tests.servers import _started, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "example_project"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
TEST_SECRET_KEY = "tests-only-example-secret-not-for-production-0123456789"


def example_env(db: ExampleDatabase | Path, **extra: str) -> dict[str, str]:
    """Environment for an example-project process: its own settings and database (an
    :class:`~tests.example_db.ExampleDatabase`, PostgreSQL unless opted out, or a SQLite file)."""
    import django_arena_scale

    env = dict(os.environ)
    env.update(
        # The django_arena_scale this test process imports (the installed wheel under tox, the
        # source tree otherwise), not whatever else a PYTHONPATH names.
        PYTHONPATH=str(Path(django_arena_scale.__file__).resolve().parents[1]),
        DJANGO_SETTINGS_MODULE="arena_project.settings",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        ARENA_DEMO_USER=DEMO_USER,
        ARENA_DEMO_PASSWORD=DEMO_PASSWORD,
        PYTHONUNBUFFERED="1",
        # DEBUG is off: the example refuses to start without a SECRET_KEY, and honours the
        # X-Arena-Simulate header only when fault injection is switched on.
        SECRET_KEY=os.environ.get("SECRET_KEY") or TEST_SECRET_KEY,
        ARENA_EXAMPLE_FAULT_INJECTION="1",
    )
    for name in (
        "REDIS_URL", "SESSION_REDIS_URL", "CHANNEL_REDIS_URL",
        "DATABASE_URL", "DATABASE_REPLICA_URLS", "DATABASE_PGBOUNCER", "SQLITE_PATH",
    ):  # fmt: skip
        env.pop(name, None)
    env.update(db.env() if isinstance(db, ExampleDatabase) else {"SQLITE_PATH": str(db)})
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` (creates the demo user) for the database named in ``env``."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=EXAMPLE_DIR,
        env=env,
        check=True,
        timeout=120,
    )


def start_gunicorn(
    args: Sequence[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """``python -m gunicorn <args>`` in the example project, output to ``log_path``, in a
    session of its own: :func:`stop_group` then stops the master and every worker it forked."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *args],
            cwd=EXAMPLE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(
    proc: subprocess.Popen[bytes], *, signum: int = signal.SIGKILL, grace: float = 30.0
) -> None:
    """Send ``signum`` to the process group of ``proc`` (see :func:`start_gunicorn`); if the
    master has not exited within ``grace`` seconds, kill the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _gunicorn_args(port: int, workers: int = 1, threads: int = 8) -> list[str]:
    import gunicorn

    args = [
        sys.executable, "-m", "gunicorn", "arena_project.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
        "--graceful-timeout", "5", "--log-level", "warning",
    ]  # fmt: skip
    # gunicorn >= 25 opens a control socket at one fixed path: parallel servers would collide.
    if int(gunicorn.__version__.split(".")[0]) >= 25:
        args.append("--no-control-socket")
    return args


def _uvicorn_args(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "arena_project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "off", "--log-level", "warning", "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip


class ExampleServer:
    """One example-project server process (``kind`` is ``"gunicorn"`` or ``"uvicorn"``)."""

    def __init__(
        self, kind: str, env: dict[str, str], log_path: Path, *, workers: int = 1, threads: int = 8
    ) -> None:
        if kind not in {"gunicorn", "uvicorn"}:
            msg = f"kind should be 'gunicorn' or 'uvicorn', got {kind!r}."
            raise ValueError(msg)
        self.kind = kind
        self.workers = workers
        self.threads = threads
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ExampleServer {self.kind} port={self.port}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ExampleServer:
        args = (
            _gunicorn_args(self.port, self.workers, self.threads)
            if self.kind == "gunicorn"
            else _uvicorn_args(self.port)
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=EXAMPLE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        _started.append(self.proc)
        try:
            wait_for_port(self.port, timeout=timeout)
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self!r} did not start:\n{self.log()}") from None
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/api/ping/").status_code == 200:
                        return
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    msg = f"{self!r} did not answer /api/ping/ within {timeout}s."
                    raise TimeoutError(msg)
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> ExampleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def login(client: httpx.Client) -> str:
    """Log the demo user in through ``client``; return the CSRF token for unsafe requests."""
    response = client.post("/auth/login/", json={"username": DEMO_USER, "password": DEMO_PASSWORD})
    response.raise_for_status()
    token: str = response.json()["csrf_token"]
    return token
