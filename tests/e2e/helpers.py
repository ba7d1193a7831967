"""Helpers shared by the e2e tests and the stack integration tests (run inside replicas too)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_project"


def hang_forever() -> None:
    """A warm-up that never ends: the replica stays STARTING (used by a bad-input test)."""
    threading.Event().wait()


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    # The replicas import django_arena_scale from where this test process does (the installed
    # wheel under tox, the source tree otherwise).
    import django_arena_scale

    package_root = Path(django_arena_scale.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), str(ROOT), str(EXAMPLE)])
    env["DJANGO_SETTINGS_MODULE"] = "arena_project.settings"
    env.pop("DJANGO_DEBUG", None)
    return env


def stack_command(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLE / "manage.py"), "run_lb_stack", *args]


def run_stack(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run run_lb_stack to completion (for the failure cases) and return its result."""
    return subprocess.run(
        stack_command(*args),
        cwd=EXAMPLE,
        env=stack_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stack_pids(state_dir: Path) -> list[int]:
    path = state_dir / "stack.json"
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    pids = [r["pid"] for r in state["replicas"] + state["redis"]]
    pids.append(state.get("nginx_pid"))
    pids.append((state.get("prometheus") or {}).get("pid"))
    # --postgres: the primary, its streaming replicas and PgBouncer.
    pids += [s.get("pid") for s in [*state.get("databases", []), state.get("pgbouncer") or {}]]
    return [p for p in pids if p]


def stop_stack(proc: subprocess.Popen[Any], state_dir: Path) -> list[int]:
    """Stop a ``run_lb_stack`` process (SIGTERM, then SIGKILL after 90 s) and kill every
    process of its stack still alive; return those leftovers (a test asserts there are none)."""
    pids = stack_pids(state_dir)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    leftovers = [p for p in pids + stack_pids(state_dir) if pid_alive(p)]
    for pid in leftovers:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {timeout}s")


# --- HTTP, load and SSE clients (stdlib only, so the counts are ours, not a library's) -------


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (``Connection: close``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def get_json(port: int, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path, **kwargs)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LoadStats:
    """Counts of one bounded load: sent, failed, latencies, who served what and when."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    served: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sent(self) -> int:
        return len(self.latencies) + len(self.failures)

    def record(
        self, seconds: float, status: int | None, replica: str | None, error: str = ""
    ) -> None:
        with self.lock:
            if error:
                self.failures.append(error)
                return
            self.latencies.append(seconds)
            assert status is not None
            self.statuses[status] += 1
            if replica:
                self.served.append((time.monotonic(), replica))

    def share(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(r for t, r in self.served if since <= t < until)

    def summary(self) -> str:
        ms = [x * 1000 for x in self.latencies]
        return (
            f"[{self.name}] sent={self.sent} failed={len(self.failures)} "
            f"statuses={dict(sorted(self.statuses.items()))} "
            f"p50={percentile(ms, 50):.1f}ms p95={percentile(ms, 95):.1f}ms "
            f"p99={percentile(ms, 99):.1f}ms max={max(ms, default=float('nan')):.1f}ms"
        )

    def report(self) -> None:
        print(self.summary())
        if self.failures:
            print(f"[{self.name}] first failures: {self.failures[:5]}")


Plan = Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]


class Load:
    """``threads`` clients, each sending one request at a time (fresh connection each) with a
    pause of ``pause`` seconds, until stopped: a bounded load (at most threads/pause r/s).

    A response counts as failed when the request raised or its status is not in ``ok``.
    """

    def __init__(
        self,
        port: int,
        plan: Plan,
        *,
        name: str,
        threads: int = 4,
        pause: float = 0.01,
        ok: frozenset[int] = frozenset({200, 201}),
    ) -> None:
        self.port = port
        self.plan = plan
        self.stats = LoadStats(name)
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]
        self.pause = pause
        self.ok = ok
        self._stop = threading.Event()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        return self.stats

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            method, path, body, headers = self.plan(index * 1_000_000 + n)
            n += 1
            started = time.monotonic()
            try:
                status, _, data = request(self.port, method, path, body=body, headers=headers)
            except (OSError, http.client.HTTPException) as exc:
                self.stats.record(0, None, None, f"{method} {path}: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.monotonic() - started
            if status not in self.ok:
                self.stats.record(0, None, None, f"{method} {path}: HTTP {status} {data[:120]!r}")
                continue
            replica = None
            if data.startswith(b"{"):
                with contextlib.suppress(ValueError, AttributeError):
                    replica = json.loads(data).get("replica")
            self.stats.record(elapsed, status, replica)
            self._stop.wait(self.pause)


@dataclass
class SSEEvent:
    at: float
    event: str
    data: str
    retry: int | None = None


class SSEClient:
    """Reads an SSE response line by line, stamping each event with its arrival time."""

    def __init__(self, port: int, path: str, *, timeout: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.started = time.monotonic()
        self.conn.request("GET", path, headers={"Host": "127.0.0.1", "Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.events: list[SSEEvent] = []

    def __iter__(self) -> Iterator[SSEEvent]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return
            text = line.decode().rstrip("\r\n")
            if text == "":
                if fields:
                    retry = fields.get("retry")
                    event = SSEEvent(
                        time.monotonic(),
                        fields.get("event", "message"),
                        fields.get("data", ""),
                        int(retry) if retry else None,
                    )
                    self.events.append(event)
                    yield event
                fields = {}
                continue
            if text.startswith(":"):
                continue
            key, _, value = text.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value

    def read_all(self) -> list[SSEEvent]:
        for _ in self:
            pass
        return self.events

    def close(self) -> None:
        self.conn.close()


DEMO = {"username": "demo", "password": "demo-password"}


def login(port: int) -> tuple[str, str]:
    """Log the demo user in on ``port``; returns (Cookie header, CSRF token)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/auth/login/",
            body=json.dumps(DEMO),
            headers={"Host": "127.0.0.1", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        cookies = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    finally:
        conn.close()
    return "; ".join(cookies), str(body["csrf_token"])


# --- keep-alive clients: persistent connections, never a retry ---------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a keep-alive plan; ``token`` marks a POST whose effect is checked later."""

    kind: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None


@dataclass
class Outcome:
    """What one request got: ``cause`` is empty when it succeeded."""

    kind: str
    token: str | None
    sent_at: float
    seconds: float
    status: int | None
    cause: str
    replica: str | None
    reused: bool


def failure_cause(exc: BaseException, *, reused: bool) -> str:
    """A short name for why a request on a kept-alive (``reused``) or fresh connection failed."""
    if isinstance(exc, http.client.RemoteDisconnected):
        name = "remote-disconnected"
    elif isinstance(exc, http.client.BadStatusLine):
        name = "empty-reply"
    elif isinstance(exc, TimeoutError):
        name = "timeout"
    elif isinstance(exc, ConnectionRefusedError):
        name = "refused"
    elif isinstance(exc, ConnectionResetError):
        name = "reset"
    elif isinstance(exc, BrokenPipeError):
        name = "broken-pipe"
    else:
        name = type(exc).__name__
    return f"{name}{' (reused conn)' if reused else ''}"


@dataclass
class KeepAliveStats:
    """Per-kind counts of a keep-alive load: sent, ok, failed by cause, latencies, POST tokens."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    connections_opened: int = 0
    closed_by_server: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def kinds(self) -> list[str]:
        return sorted({o.kind for o in self.outcomes})

    def of(self, kind: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if kind is None or o.kind == kind]

    def failed(self, kind: str | None = None) -> list[Outcome]:
        return [o for o in self.of(kind) if o.cause]

    def causes(self, kind: str | None = None) -> Counter[str]:
        return Counter(o.cause for o in self.failed(kind))

    def max_ms(self, kind: str | None = None) -> float:
        return max((o.seconds * 1000 for o in self.of(kind)), default=0.0)

    def tokens(self, *, ok: bool) -> list[str]:
        return [o.token for o in self.outcomes if o.token and (not o.cause) == ok]

    def served(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Replicas that answered requests *sent* in [since, until)."""
        return Counter(o.replica for o in self.outcomes if o.replica and since <= o.sent_at < until)

    def counts(self) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {}
        for kind in self.kinds():
            outcomes = self.of(kind)
            table[kind] = {
                "sent": len(outcomes),
                "ok": sum(1 for o in outcomes if not o.cause),
                "failed": dict(self.causes(kind)),
                "statuses": dict(Counter(o.status for o in outcomes if o.status is not None)),
                "max_ms": round(self.max_ms(kind), 1),
                "p50_ms": round(percentile([o.seconds * 1000 for o in outcomes], 50), 1),
            }
        return table

    def report(self) -> None:
        print(
            f"[{self.name}] connections opened={self.connections_opened} "
            f"closed by server (announced)={self.closed_by_server}"
        )
        for kind, row in self.counts().items():
            print(
                f"[{self.name}] {kind}: sent={row['sent']} ok={row['ok']} failed={row['failed']} "
                f"statuses={row['statuses']} p50={row['p50_ms']}ms max={row['max_ms']}ms"
            )


KeepAlivePlan = Callable[[int, int], Call]


class KeepAliveLoad:
    """``clients`` threads, each with ONE persistent HTTP/1.1 connection to ``port`` that it
    reuses for request after request, as a browser or a client pool does.

    Never a retry and never a silent reconnect: a request that raises (reset, empty reply,
    remote disconnect on the reused connection, timeout) or gets a status outside ``ok``
    counts as failed; only then does the client open a new connection and go on with the
    next request.  A response that announces ``Connection: close`` is an orderly end: the
    client opens a new connection for its next request and counts it (``closed_by_server``).

    Bounded: stops after ``duration`` seconds, after ``max_requests`` requests in all, or
    at :meth:`stop`, whichever comes first.  ``plan(client, n)`` gives the n-th request of a
    client.  ``source`` binds the client side (e.g. ``127.0.0.2`` to be another client IP).
    """

    def __init__(
        self,
        port: int,
        plan: KeepAlivePlan,
        *,
        name: str,
        clients: int = 4,
        pause: float = 0.01,
        duration: float = 60.0,
        max_requests: int = 20_000,
        timeout: float = 10.0,
        ok: frozenset[int] = frozenset({200, 201}),
        source: str | None = None,
    ) -> None:
        self.port = port
        self.plan = plan
        self.stats = KeepAliveStats(name)
        self.pause = pause
        self.duration = duration
        self.max_requests = max_requests
        self.timeout = timeout
        self.ok = ok
        self.source = source
        self._budget = threading.Semaphore(max_requests)
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    def __enter__(self) -> KeepAliveLoad:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> KeepAliveStats:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout + 5)
        return self.stats

    def wait(self) -> KeepAliveStats:
        """Wait until the duration or the request budget is used up."""
        for thread in self.threads:
            thread.join(timeout=self.duration + self.timeout + 5)
        return self.stop()

    def _connect(self) -> http.client.HTTPConnection:
        source = (self.source, 0) if self.source else None
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=self.timeout, source_address=source
        )
        conn.connect()
        with self.stats.lock:
            self.stats.connections_opened += 1
        return conn

    def _run(self, client: int) -> None:
        deadline = self.started + self.duration
        conn: http.client.HTTPConnection | None = None
        reused = False
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if not self._budget.acquire(blocking=False):
                    return
                call = self.plan(client, n)
                n += 1
                sent_at = time.monotonic()
                try:
                    if conn is None:
                        conn, reused = self._connect(), False
                    headers = {"Host": "127.0.0.1", **call.headers}
                    conn.request(call.method, call.path, body=call.body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    seconds = time.monotonic() - sent_at
                    cause = failure_cause(exc, reused=reused)
                    self.stats.add(
                        Outcome(call.kind, call.token, sent_at, seconds, None, cause, None, reused)
                    )
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                seconds = time.monotonic() - sent_at
                replica = None
                if data.startswith(b"{"):
                    with contextlib.suppress(ValueError, AttributeError):
                        replica = json.loads(data).get("replica")
                cause = "" if response.status in self.ok else f"HTTP {response.status}"
                self.stats.add(
                    Outcome(
                        call.kind, call.token, sent_at, seconds, response.status, cause,
                        replica, reused,
                    )
                )  # fmt: skip
                if response.will_close or cause:
                    with self.stats.lock:
                        self.stats.closed_by_server += int(response.will_close)
                    conn.close()
                    conn = None
                else:
                    reused = True
                self._stop.wait(self.pause)
        finally:
            if conn is not None:
                conn.close()


def stack_database(state_dir: Path) -> Path | str:
    """Where a run_lb_stack's example keeps its data: the ``DATABASE_URL`` its replicas were
    given (``--postgres``; stack.json has it with the password redacted), else its SQLite file."""
    state = json.loads((state_dir / "stack.json").read_text())
    if not state.get("databases"):
        return state_dir / "db.sqlite3"
    for replica in state["replicas"]:
        with contextlib.suppress(OSError, TypeError):
            environ = Path(f"/proc/{replica['pid']}/environ").read_bytes().split(b"\0")
            for item in environ:
                if item.startswith(b"DATABASE_URL="):
                    return item.decode().partition("=")[2]
    msg = f"no running replica of the stack in {state_dir} has a DATABASE_URL"
    raise AssertionError(msg)


def posts_applied(db: Path | str, tokens: list[str]) -> Counter[str]:
    """How many Message rows carry each token (the POST body's unique text), read from the
    stack's database (:func:`stack_database`: a PostgreSQL URL or a SQLite file)."""
    query = "SELECT text FROM arena_message WHERE text LIKE 'ka-%'"
    wanted = set(tokens)
    found: Counter[str] = Counter()
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db, connect_timeout=10) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import sqlite3

        lite = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=20)
        try:
            rows = lite.execute(query).fetchall()
        finally:
            lite.close()
    for (text,) in rows:
        if text in wanted:
            found[text] += 1
    return found


@dataclass
class PostCheck:
    """Each POST's effect against what its client was told."""

    ok: int
    failed: int
    applied_twice: list[str]
    applied_but_reported_failed: list[str]
    reported_ok_but_missing: list[str]

    def line(self) -> str:
        return (
            f"POSTs ok={self.ok} failed={self.failed} applied twice={len(self.applied_twice)} "
            f"applied but reported failed={len(self.applied_but_reported_failed)} "
            f"reported ok but missing={len(self.reported_ok_but_missing)}"
        )


def check_posts(stats: KeepAliveStats, db: Path | str) -> PostCheck:
    ok, failed = stats.tokens(ok=True), stats.tokens(ok=False)
    applied = posts_applied(db, ok + failed)
    return PostCheck(
        ok=len(ok),
        failed=len(failed),
        applied_twice=sorted(t for t, n in applied.items() if n > 1),
        applied_but_reported_failed=sorted(t for t in failed if applied[t]),
        reported_ok_but_missing=sorted(t for t in ok if not applied[t]),
    )


def get_post_plan(cookie: str, csrf: str, run: str, *, get_path: str = "/api/whoami/") -> Any:
    """Alternate GET ``get_path`` and a POST /api/messages/ whose text is a unique token
    (``ka-<run>-<client>-<n>``, also in the query string so nginx's access log names it)."""

    def plan(client: int, n: int) -> Call:
        if n % 2:
            token = f"ka-{run}-{client}-{n}"
            return Call(
                "POST /api/messages/",
                "POST",
                f"/api/messages/?tag={token}",
                json.dumps({"text": token}).encode(),
                {"Cookie": cookie, "X-CSRFToken": csrf, "Content-Type": "application/json"},
                token,
            )
        return Call(f"GET {get_path}", "GET", get_path, None, {"Cookie": cookie})

    return plan
