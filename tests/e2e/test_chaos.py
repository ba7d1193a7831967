"""Chaos suite: each fault of the failure-containment list against real nginx, 3 replicas and Redis.

Per fault, requests are split in two classes and counted:

- ``bystander``: requests that do NOT need the failed part (another replica, no session, no
  provider).  They must all succeed: a fault is contained when nobody else notices it.
- ``needs``: requests that DO need the failed part.  They must fail fast with a clear status
  (a JSON 5xx from the application, never nginx's "no live upstreams" page, never a hang).

Clients keep their connections open and never retry (:class:`KeepAliveLoad`).  Every test
prints a table (``pytest -s``) and adds its figures to ``chaos.json`` in pytest's base temp
dir before asserting, so a failing run still reports what it measured.  Every step is bounded
in time; the ``stack`` fixture kills every process at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import BREAKER_RESET, Stack
from tests.e2e.helpers import (
    EXAMPLE,
    Call,
    KeepAliveLoad,
    KeepAliveStats,
    Outcome,
    SSEClient,
    check_posts,
    failure_cause,
    get_post_plan,
    login,
    pid_alive,
    stack_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: Another client address on loopback (nginx listens on 127.0.0.1; any 127/8 source reaches it).
OTHER_IP = "127.0.0.2"
#: A drained replica gets no new request this long after ``manage.py drain on`` returned.
DRAIN_WITHIN = 2.0
#: A request that needs a failed dependency must be answered (503) within this client timeout.
FAIL_FAST_TIMEOUT = 5.0


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    klass: str  # "bystander" (does not need the failed part), "needs", or "probe"/"abuse" (info)
    what: str
    sent: int
    failed: int
    max_ms: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChaosReport:
    path: Path
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        machine = {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
        data = {"machine": machine, "rows": [asdict(r) for r in self.rows]}
        self.path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def table(self, fault: str) -> None:
        rows = [r for r in self.rows if r.fault == fault]
        head = ("fault", "class", "requests", "sent", "failed", "max ms")
        lines = [head] + [
            (r.fault, r.klass, r.what, str(r.sent), str(r.failed), f"{r.max_ms:.0f}") for r in rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        print()
        for line in lines:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        for r in rows:
            if r.detail:
                print(f"  {r.what}: {json.dumps(r.detail, sort_keys=True, default=str)}")
        print(f"  (figures in {self.path})")


@pytest.fixture(scope="session")
def chaos_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosReport]:
    report = ChaosReport(tmp_path_factory.getbasetemp() / "chaos.json")
    yield report
    report.write()


@pytest.fixture
def chaos(stack: Stack) -> Iterator[Stack]:
    """The stack healed and with nginx's passive failure marks forgotten, before and after."""
    stack.heal()
    stack.reload_nginx()
    yield stack
    stack.heal()
    stack.reload_nginx()


# --- small clients --------------------------------------------------------------------------------


def timed(
    port: int,
    method: str,
    path: str,
    *,
    kind: str = "",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
    timeout: float = 10.0,
) -> tuple[Outcome, bytes]:
    """One request on a fresh connection; its outcome (never raises for a transport error)."""
    import http.client

    started = time.monotonic()
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        cause = failure_cause(exc, reused=False)
        return Outcome(
            kind, None, started, time.monotonic() - started, None, cause, None, False
        ), b""
    finally:
        conn.close()
    seconds = time.monotonic() - started
    return Outcome(kind, None, started, seconds, response.status, "", None, False), data


def in_parallel(fn: Callable[[int], Any], count: int, *, timeout: float = 60) -> list[Any]:
    """``fn(0..count-1)`` in threads started together; results in index order."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait(timeout=timeout)
        try:
            results[i] = fn(i)
        except Exception as exc:  # reported as the result, counted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results


def clear_json_error(status: int | None, body: bytes, want: frozenset[int]) -> bool:
    """An application's answer: a status in ``want`` with a JSON object body, no traceback."""
    if status not in want or b"Traceback" in body:
        return False
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def access_log(stack: Stack, prefix: str) -> dict[str, tuple[int, list[str]]]:
    """``tag=`` value -> (status, upstream addresses tried in order) from nginx's access log."""
    found: dict[str, tuple[int, list[str]]] = {}
    line_re = re.compile(
        r'"\w+ (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) .*? upstream=(?P<up>.*?) urt='
    )
    for line in (stack.dir / "conf" / "logs" / "access.log").read_text().splitlines():
        match = line_re.search(line)
        tag = re.search(r"[?&]tag=([\w-]+)", match.group("path")) if match else None
        if match and tag and tag.group(1).startswith(prefix):
            tried = [a.strip() for a in re.split(r"[,:]\s", match.group("up")) if a.strip()]
            found[tag.group(1)] = (int(match.group("status")), tried)
    return found


def names_by_address(stack: Stack) -> dict[str, str]:
    return {f"127.0.0.1:{port}": name for name, port in stack.replica_ports().items()}


def bystander_plan(*paths: str) -> Callable[[int, int], Call]:
    def plan(client: int, n: int) -> Call:
        path = paths[(client + n) % len(paths)]
        return Call(f"GET {path}", "GET", path)

    return plan


def add_load_rows(report: ChaosReport, fault: str, klass: str, stats: KeepAliveStats) -> None:
    for kind, row in stats.counts().items():
        failed = sum(row["failed"].values())
        detail = {"statuses": row["statuses"], "causes": row["failed"], "p50_ms": row["p50_ms"]}
        report.add(Row(fault, klass, kind, row["sent"], failed, row["max_ms"], detail))


def add_outcome_row(
    report: ChaosReport,
    fault: str,
    klass: str,
    what: str,
    outcomes: list[Outcome],
    failed: int,
    **detail: Any,
) -> None:
    statuses = Counter(o.status if o.status is not None else o.cause for o in outcomes)
    max_ms = max((o.seconds * 1000 for o in outcomes), default=0.0)
    detail = {"statuses": dict(statuses), **detail}
    report.add(Row(fault, klass, what, len(outcomes), failed, round(max_ms, 1), detail))


def ws_handshakes(port: int, count: int, room: str) -> tuple[list[Outcome], Counter[str]]:
    """``count`` WebSocket handshakes through nginx, all held open together (so least_conn
    spreads them), each asked which replica it is on."""
    outcomes: list[Outcome] = []
    seen: Counter[str] = Counter()
    with contextlib.ExitStack() as sockets:
        for i in range(count):
            started = time.monotonic()
            try:
                ws = sockets.enter_context(
                    connect(
                        f"ws://127.0.0.1:{port}/ws/chat/{room}-{i}/",
                        origin="http://127.0.0.1",
                        open_timeout=5,
                    )
                )
                ws.send(json.dumps({"message": "who am i"}))
                replica = json.loads(ws.recv(timeout=5))["replica"]
            except Exception as exc:
                seconds = time.monotonic() - started
                outcomes.append(
                    Outcome("WS", None, started, seconds, None, repr(exc)[:120], None, False)
                )
                continue
            seen[replica] += 1
            seconds = time.monotonic() - started
            outcomes.append(Outcome("WS", None, started, seconds, 101, "", replica, False))
    return outcomes, seen


def wait_provider_back(stack: Stack, timeout: float) -> dict[str, list[int | str]]:
    """On each replica directly, short healthy streams one at a time until one gets 200: an
    open LLM breaker lets one trial call through after its reset timeout (fast 503s before)."""
    seen: dict[str, list[int | str]] = {}
    deadline = time.monotonic() + timeout
    for name, port in stack.replica_ports().items():
        seen[name] = []
        while time.monotonic() < deadline:
            outcome, _ = timed(port, "GET", "/messages/stream/?tokens=1&delay=0")
            seen[name].append(outcome.status or outcome.cause)
            if outcome.status == 200:
                break
            time.sleep(0.3)
    return seen


def healthy_streams(stack: Stack, count: int, tag: str) -> tuple[list[Outcome], Counter[str]]:
    """``count`` concurrent healthy SSE streams through nginx (1 s each); where each ran."""

    def one(i: int) -> Outcome:
        started = time.monotonic()
        client = SSEClient(
            stack.port, f"/messages/stream/?tokens=20&delay=0.05&tag={tag}-{i}", timeout=10
        )
        try:
            events = client.read_all() if client.status == 200 else []
        finally:
            client.close()
        ok = client.status == 200 and bool(events) and events[-1].event == "done"
        cause = "" if ok else f"HTTP {client.status} last={events[-1].event if events else None}"
        return Outcome(
            "SSE", None, started, time.monotonic() - started, client.status, cause, None, False
        )

    results = in_parallel(one, count)
    outcomes = [
        r
        if isinstance(r, Outcome)
        else Outcome("SSE", None, 0, 0, None, repr(r)[:120], None, False)
        for r in results
    ]
    time.sleep(0.2)
    names = names_by_address(stack)
    spread = Counter(
        names.get(tried[-1], tried[-1]) for _, tried in access_log(stack, tag).values()
    )
    return outcomes, spread


# --- a. provider failures --------------------------------------------------------------------


def test_chaos_a_provider_failures_evict_nobody(chaos: Stack, chaos_report: ChaosReport) -> None:
    """12 stream requests whose provider call fails (fail=500, fail=503): each gets the app's own
    JSON 502/503 from ONE replica (never replayed); then WebSocket handshakes and healthy streams
    reach every replica, and API bystanders saw no failure."""
    fault = "a. provider failures"
    run = uuid.uuid4().hex[:8]
    names = names_by_address(chaos)

    def fail(i: int) -> tuple[Outcome, bytes]:
        mode = "fail=500" if i % 2 else "fail=503"
        return timed(
            chaos.port, "GET", f"/messages/stream/?tokens=3&delay=0&tag=fa{run}-{i}",
            kind=mode, headers={"X-Arena-Simulate": mode}, timeout=FAIL_FAST_TIMEOUT + 5,
        )  # fmt: skip

    bystanders = bystander_plan("/api/ping/", "/api/whoami/")
    with KeepAliveLoad(chaos.port, bystanders, name="a-bystanders", clients=2, duration=60) as load:
        time.sleep(0.5)
        failing = in_parallel(fail, 12)
        ws, ws_seen = ws_handshakes(chaos.port, 6, f"chaos-a-{run}")
        # Healthy streams need the provider: wait until the breaker those failures opened
        # let a trial call through (after BREAKER_RESET), then they must all work.
        trials = wait_provider_back(chaos, BREAKER_RESET + 10)
        sse, sse_spread = healthy_streams(chaos, 6, f"ha{run}")
        time.sleep(0.3)
    time.sleep(0.3)
    tried = access_log(chaos, f"fa{run}")
    attempts = Counter(names.get(a, a) for _, addrs in tried.values() for a in addrs)
    replayed = sorted(t for t, (_, addrs) in tried.items() if len(addrs) != 1)
    outcomes = [o for o, _ in failing]
    unclear = [
        (o.kind, o.status or o.cause, body[:80].decode(errors="replace"))
        for o, body in failing
        if not clear_json_error(o.status, body, frozenset({502, 503}))
    ]
    add_outcome_row(
        chaos_report, fault, "needs", "LLM stream, provider fails", outcomes, len(outcomes),
        unclear=unclear, attempts_per_replica=dict(attempts), replayed=len(replayed),
    )  # fmt: skip
    ws_failed = [o for o in ws if o.cause]
    add_outcome_row(
        chaos_report, fault, "bystander", "WS handshake (after)", ws, len(ws_failed),
        replicas=dict(ws_seen), errors=[o.cause for o in ws_failed][:3],
    )  # fmt: skip
    sse_failed = [o for o in sse if o.cause]
    add_outcome_row(
        chaos_report, fault, "bystander", "SSE healthy stream (after)", sse, len(sse_failed),
        replicas=dict(sse_spread), errors=[o.cause for o in sse_failed][:3],
        provider_trials_before=trials,
    )  # fmt: skip
    add_load_rows(chaos_report, fault, "bystander", load.stats)
    chaos_report.table(fault)

    assert len(outcomes) == 12
    assert unclear == [], "each failing LLM call must get the app's JSON 502/503"
    assert replayed == [], f"replayed on another replica: {[tried[t] for t in replayed]}"
    assert ws_failed == []
    assert sorted(ws_seen) == sorted(names.values()), "a stream replica left rotation (WS)"
    assert sse_failed == []
    assert sorted(sse_spread) == sorted(names.values()), "a stream replica left rotation (SSE)"
    assert load.stats.failed() == [], load.stats.causes()


# --- b. sessions Redis killed ------------------------------------------------------------------


def test_chaos_b_sessions_redis_killed(chaos: Stack, chaos_report: ChaosReport) -> None:
    """kill -9 of the sessions Redis: requests that need no session keep answering 200 through
    nginx; logins and session writes get a fast JSON 503; /ready/ probes through nginx (from
    127.0.0.1 and from another address) take no replica out; all recovers once Redis is back."""
    fault = "b. sessions Redis killed"
    names = sorted(chaos.replica_ports())
    cookie, csrf = login(chaos.replica_ports()["web-1"])
    sessions = next(r for r in chaos.state()["redis"] if "sessions" in r["roles"])
    plan = bystander_plan("/api/ping/", "/api/messages/?limit=5", "/live/", "/api/whoami/")
    session_headers = {"Cookie": cookie, "X-CSRFToken": csrf, "Content-Type": "application/json"}

    def needs(i: int) -> tuple[Outcome, bytes]:
        kind = ("login", "session POST")[i % 2]
        if kind == "login":
            body = json.dumps({"username": "demo", "password": "demo-password"}).encode()
            return timed(
                chaos.port, "POST", "/auth/login/", kind=kind, body=body,
                headers={"Content-Type": "application/json"}, timeout=FAIL_FAST_TIMEOUT,
            )  # fmt: skip
        body = json.dumps({"text": f"chaos-b {uuid.uuid4().hex}"}).encode()
        return timed(
            chaos.port, "POST", "/api/messages/", kind=kind, body=body,
            headers=session_headers, timeout=FAIL_FAST_TIMEOUT,
        )  # fmt: skip

    def probe(i: int) -> tuple[Outcome, bytes]:
        source = OTHER_IP if i % 2 else None
        return timed(
            chaos.port,
            "GET",
            "/ready/",
            kind=f"/ready/ from {source or '127.0.0.1'}",
            source=source,
        )

    with KeepAliveLoad(chaos.port, plan, name="b-bystanders", clients=3, duration=60) as load:
        time.sleep(0.5)
        os.kill(sessions["pid"], signal.SIGKILL)
        wait_until(lambda: not pid_alive(sessions["pid"]), 5, "sessions Redis gone")
        killed_at = time.monotonic()
        needed = in_parallel(needs, 8)
        probes = in_parallel(probe, 12)
        probed_at = time.monotonic()
        time.sleep(2.0)
        back_at = time.monotonic()
        chaos.act("start-redis", sessions["name"])
        recovered: list[tuple[Outcome, bytes]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = timed(
                chaos.port, "POST", "/auth/login/", kind="login after",
                body=json.dumps({"username": "demo", "password": "demo-password"}).encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            recovered.append(got)
            if got[0].status == 200:
                break
            time.sleep(0.5)
        time.sleep(0.5)
    stats = load.stats
    outcomes = [o for o, _ in needed]
    unclear = [
        (o.kind, o.status or o.cause, body[:80].decode(errors="replace"))
        for o, body in needed
        if not clear_json_error(o.status, body, frozenset({503}))
    ]
    probe_outcomes = [o for o, _ in probes]
    probe_statuses = Counter((o.kind, o.status or o.cause) for o in probe_outcomes)
    served_after_probes = stats.served(since=probed_at, until=back_at)
    add_load_rows(chaos_report, fault, "bystander", stats)
    add_outcome_row(
        chaos_report, fault, "needs", "login / session POST", outcomes,
        sum(1 for o in outcomes if o.status != 200), unclear=unclear,
    )  # fmt: skip
    add_outcome_row(
        chaos_report, fault, "probe", "/ready/ via nginx x12", probe_outcomes,
        sum(1 for o in probe_outcomes if o.cause),
        by_source={f"{k[0]} -> {k[1]}": v for k, v in probe_statuses.items()},
        replicas_serving_after_probes=dict(served_after_probes),
    )  # fmt: skip
    last = recovered[-1][0] if recovered else None
    chaos_report.add(
        Row(
            fault, "recovery", "login after Redis back", len(recovered),
            sum(1 for o, _ in recovered if o.status != 200),
            round((last.sent_at - back_at) * 1000 if last else 0),
            {
                "statuses": [o.status or o.cause for o, _ in recovered],
                "outage_s": round(back_at - killed_at, 1),
            },
        )
    )  # fmt: skip
    chaos_report.table(fault)

    assert stats.failed() == [], stats.causes()
    assert sorted(served_after_probes) == names, "a replica left rotation after the probes"
    assert unclear == [], "requests needing the session must get a JSON 503"
    assert not any(o.cause for o in probe_outcomes), probe_statuses
    refused = {o.status for o in probe_outcomes if o.kind.endswith(OTHER_IP)}
    assert refused == {403} or 403 not in refused, "probes from one address: all refused or none"
    assert last is not None
    assert last.status == 200, "login does not work again after Redis is back"
    cookie, csrf = login(chaos.port)
    body = json.dumps({"text": f"chaos-b after {uuid.uuid4().hex}"}).encode()
    headers = {"Cookie": cookie, "X-CSRFToken": csrf, "Content-Type": "application/json"}
    after, _ = timed(chaos.port, "POST", "/api/messages/", body=body, headers=headers)
    assert after.status == 201, "session writes do not work again after Redis is back"


# --- c. manage.py drain on / off -----------------------------------------------------------


def drain_command(stack: Stack, name: str, action: str) -> subprocess.CompletedProcess[str]:
    """``manage.py drain <action>`` with the replica's ARENA_SCALE_DRAIN_FILE."""
    env = {**stack_env(), "ARENA_SCALE_DRAIN_FILE": str(stack.drain_file(name))}
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "drain", action],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_chaos_c_drain_command_takes_replica_out(chaos: Stack, chaos_report: ChaosReport) -> None:
    """``manage.py drain on`` for web-2: within DRAIN_WITHIN seconds of the command returning no
    new request reaches it and keep-alive clients see no failure; after ``drain off`` it listens
    again (when nginx sends it traffic again depends on fail_timeout: reported)."""
    fault = "c. drain on/off"
    target = "web-2"
    plan = bystander_plan("/api/whoami/")
    back_after: float | None = None
    with KeepAliveLoad(chaos.port, plan, name="c-drain", clients=4, duration=60) as load:
        time.sleep(1.0)
        on_at = time.monotonic()
        on = drain_command(chaos, target, "on")
        on_done = time.monotonic()
        time.sleep(DRAIN_WITHIN + 2.0)
        off_at = time.monotonic()
        off = drain_command(chaos, target, "off")
        # Documented: without the drain file the replica listens again (its own port), and
        # nginx sends it requests again once its passive failure mark (fail_timeout) expires.
        deadline = time.monotonic() + 15
        listening_after: float | None = None
        while time.monotonic() < deadline and listening_after is None:
            probe, _ = timed(chaos.replica_ports()[target], "GET", "/ready/", timeout=2)
            if probe.status == 200:
                listening_after = time.monotonic() - off_at
            else:
                time.sleep(0.1)
        while time.monotonic() < deadline:
            back = [
                o.sent_at
                for o in load.stats.outcomes
                if o.replica == target and o.sent_at >= off_at
            ]
            if back:
                back_after = min(back) - off_at
                break
            time.sleep(0.1)
        time.sleep(0.5)
    stats = load.stats
    before = stats.served(until=on_at)
    during = stats.served(since=on_done + DRAIN_WITHIN, until=off_at)
    to_target = [
        o.sent_at - on_at
        for o in stats.outcomes
        if o.replica == target and on_at <= o.sent_at < off_at
    ]
    add_load_rows(chaos_report, fault, "bystander", stats)
    chaos_report.add(
        Row(
            fault, "drained", f"requests to {target} sent {DRAIN_WITHIN:g}s+ after drain on",
            sum(during.values()), during[target], 0.0,
            {
                "before": dict(before), "during": dict(during),
                "last_to_target_after_on_s": round(max(to_target), 2) if to_target else None,
                "drain_on_exit": on.returncode, "drain_on_s": round(on_done - on_at, 2),
                "drain_off_exit": off.returncode,
                "listening_after_off_s": (
                    round(listening_after, 2) if listening_after is not None else "not within 15 s"
                ),
                "back_after_off_s": (
                    round(back_after, 2) if back_after is not None else "not within 15 s"
                ),
            },
        )
    )  # fmt: skip
    chaos_report.table(fault)
    if listening_after is None:
        # drain off did not bring it back: restart it so the next test has 3 replicas.
        chaos.act("restart", target)

    assert on.returncode == 0, on.stderr
    assert off.returncode == 0, off.stderr
    assert before[target] > 0
    assert stats.failed() == [], stats.causes()
    assert listening_after is not None, f"{target} does not listen again after drain off"
    assert during[target] == 0, f"{target} still got requests while draining: {dict(during)}"
    assert sorted(during) == sorted(n for n in chaos.replica_ports() if n != target), (
        f"the other replicas did not carry the requests sent while {target} drained: {dict(during)}"
    )


# --- d. rolling restart (control action) under keep-alive GET + POST -----------------------


def test_chaos_d_rolling_restart_keepalive(chaos: Stack, chaos_report: ChaosReport) -> None:
    """run_lb_stack's rolling-restart action under keep-alive GETs and POSTs: 0 failed, no POST
    applied twice or applied but reported failed."""
    fault = "d. rolling restart"
    before = chaos.replica_pids()
    cookie, csrf = login(chaos.replica_ports()["web-1"])
    plan = get_post_plan(cookie, csrf, uuid.uuid4().hex[:8])
    with KeepAliveLoad(chaos.port, plan, name="d-rolling", clients=4, duration=170) as load:
        time.sleep(1.0)
        started = time.monotonic()
        chaos.act("rolling-restart")
        took = time.monotonic() - started
        time.sleep(1.0)
    stats = load.stats
    posts = check_posts(stats, chaos.database())
    add_load_rows(chaos_report, fault, "bystander", stats)
    chaos_report.add(
        Row(
            fault, "posts", "POST effects (DB)", posts.ok + posts.failed, posts.failed, 0.0,
            {
                "applied_twice": len(posts.applied_twice),
                "applied_but_reported_failed": len(posts.applied_but_reported_failed),
                "reported_ok_but_missing": len(posts.reported_ok_but_missing),
                "restart_s": round(took, 1),
                "connections_opened": stats.connections_opened,
            },
        )
    )  # fmt: skip
    chaos_report.table(fault)

    assert all(pid != before[n] for n, pid in chaos.replica_pids().items())
    assert stats.failed() == [], stats.causes()
    assert posts.ok > 0
    assert posts.applied_twice == []
    assert posts.applied_but_reported_failed == []
    assert posts.reported_ok_but_missing == []


# --- e. kill -9 of one replica under keep-alive load ------------------------------------------


def test_chaos_e_kill_9_one_replica_keepalive(chaos: Stack, chaos_report: ChaosReport) -> None:
    """kill -9 of web-2 under keep-alive GETs and POSTs: no GET fails (nginx retries them on
    another replica); a POST may fail only if it was in flight on web-2 (reported apart)."""
    fault = "e. kill -9 one replica"
    target = "web-2"
    address = f"127.0.0.1:{chaos.replica_ports()[target]}"
    cookie, csrf = login(chaos.replica_ports()["web-1"])
    run = uuid.uuid4().hex[:8]
    plan = get_post_plan(cookie, csrf, run)
    with KeepAliveLoad(chaos.port, plan, name="e-kill9", clients=4, duration=60) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        chaos.act("kill", target)
        time.sleep(3.0)
    time.sleep(0.3)
    stats = load.stats
    posts = check_posts(stats, chaos.database())
    tried = access_log(chaos, f"ka-{run}")
    failed_posts = stats.failed("POST /api/messages/")
    in_flight = [
        o for o in failed_posts if o.token in tried and tried[o.token][1][-1:] == [address]
    ]
    other_posts = [o for o in failed_posts if o not in in_flight]
    gets = stats.of("GET /api/whoami/")
    after = stats.served(since=killed_at + 0.5)
    add_outcome_row(
        chaos_report,
        fault,
        "bystander",
        "GET /api/whoami/",
        gets,
        len(stats.failed("GET /api/whoami/")),
    )
    posts_all = stats.of("POST /api/messages/")
    add_outcome_row(
        chaos_report, fault, "bystander", "POST not on the killed replica",
        [o for o in posts_all if o not in in_flight], len(other_posts),
        causes=dict(Counter(o.cause for o in other_posts)),
    )  # fmt: skip
    add_outcome_row(
        chaos_report, fault, "needs", "POST in flight on the killed replica",
        in_flight, len(in_flight),
        applied_but_reported_failed=len(posts.applied_but_reported_failed),
    )  # fmt: skip
    chaos_report.add(
        Row(
            fault, "posts", "POST effects (DB)", posts.ok + posts.failed, posts.failed, 0.0,
            {"applied_twice": len(posts.applied_twice), "served_after_kill": dict(after)},
        )
    )  # fmt: skip
    chaos_report.table(fault)

    assert stats.failed("GET /api/whoami/") == [], stats.causes("GET /api/whoami/")
    assert other_posts == [], [(o.token, o.cause, tried.get(o.token or "")) for o in other_posts]
    assert posts.applied_twice == []
    assert set(posts.applied_but_reported_failed) <= {o.token for o in in_flight}
    assert posts.reported_ok_but_missing == []
    assert after[target] == 0
    assert sorted(after) == sorted(n for n in chaos.replica_ports() if n != target)


# --- f. an abusive client ---------------------------------------------------------------------


def test_chaos_f_abusive_client(chaos: Stack, chaos_report: ChaosReport) -> None:
    """One address sends 1,000 rapid /ready/ + /status/ through nginx and floods failing LLM
    calls: no replica leaves rotation and clients at another address see no failure."""
    fault = "f. abusive client"
    names = sorted(chaos.replica_ports())
    run = uuid.uuid4().hex[:8]
    any_status = frozenset(range(100, 600))

    def probes(client: int, n: int) -> Call:
        path = "/ready/" if n % 2 else "/status/"
        return Call(f"abuse GET {path}", "GET", path)

    def llm_flood(client: int, n: int) -> Call:
        mode = "fail=500" if n % 2 else "fail=503"
        path = f"/messages/stream/?tokens=3&delay=0&tag=ff{run}-{client}-{n}"
        return Call(f"abuse LLM {mode}", "GET", path, headers={"X-Arena-Simulate": mode})

    bystanders = bystander_plan("/api/ping/", "/api/whoami/")
    with KeepAliveLoad(chaos.port, bystanders, name="f-bystanders", clients=2, duration=90) as load:
        time.sleep(0.5)
        abuse = KeepAliveLoad(
            chaos.port, probes, name="f-probes", clients=4, pause=0, duration=30,
            max_requests=1000, ok=any_status, source=OTHER_IP,
        )  # fmt: skip
        flood = KeepAliveLoad(
            chaos.port, llm_flood, name="f-llm", clients=4, pause=0, duration=15,
            max_requests=200, ok=any_status, source=OTHER_IP, timeout=FAIL_FAST_TIMEOUT + 5,
        )  # fmt: skip
        with abuse, flood:
            abuse.wait()
            flood.wait()
        flooded_at = time.monotonic()
        ws, ws_seen = ws_handshakes(chaos.port, 6, f"chaos-f-{run}")
        trials = wait_provider_back(chaos, BREAKER_RESET + 10)
        sse, sse_spread = healthy_streams(chaos, 6, f"hf{run}")
        after_at = time.monotonic()
        time.sleep(1.0)
    stats = load.stats
    for abuser in (abuse.stats, flood.stats):
        for kind, row in abuser.counts().items():
            chaos_report.add(
                Row(fault, "abuse", kind, row["sent"], sum(row["failed"].values()), row["max_ms"],
                    {"statuses": row["statuses"], "causes": row["failed"]})
            )  # fmt: skip
    ws_failed = [o for o in ws if o.cause]
    sse_failed = [o for o in sse if o.cause]
    add_outcome_row(
        chaos_report,
        fault,
        "bystander",
        "WS handshake (after)",
        ws,
        len(ws_failed),
        replicas=dict(ws_seen),
    )
    add_outcome_row(
        chaos_report,
        fault,
        "bystander",
        "SSE healthy stream (after)",
        sse,
        len(sse_failed),
        replicas=dict(sse_spread),
        provider_trials_before=trials,
    )
    add_load_rows(chaos_report, fault, "bystander", stats)
    chaos_report.table(fault)

    assert sum(len(a.outcomes) for a in (abuse.stats,)) == 1000
    assert not any(
        o.cause.startswith(("timeout", "reset", "refused")) for o in flood.stats.outcomes
    )
    assert stats.failed() == [], stats.causes()
    assert sorted(stats.served(since=flooded_at, until=after_at)) == names
    assert ws_failed == []
    assert sorted(ws_seen) == names, "a stream replica left rotation (WS)"
    assert sse_failed == []
    assert sorted(sse_spread) == names, "a stream replica left rotation (SSE)"
