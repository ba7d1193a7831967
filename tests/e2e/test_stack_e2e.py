"""The load-balanced stack end to end: real nginx, redis-server and 3 replicas of example_project.

Each test prints its counts: requests sent, failed, latency p50/p95/p99.  Tests run in file
order; destructive ones (kill, stop, rolling restart, Redis outage) come last and the
``healthy`` fixture repairs the stack before each test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import STATUS_TOKEN, Stack
from tests.e2e.helpers import (
    KeepAliveLoad,
    Load,
    LoadStats,
    SSEClient,
    SSEEvent,
    check_posts,
    get_json,
    get_post_plan,
    login,
    percentile,
    request,
)
from tests.example_db import use_sqlite

pytestmark = pytest.mark.e2e


def get_and_post_plan(cookie: str, csrf: str) -> Any:
    def plan(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        if n % 2:
            body = json.dumps({"text": f"load message {n}"}).encode()
            headers = {
                "Cookie": cookie,
                "X-CSRFToken": csrf,
                "Content-Type": "application/json",
            }
            return "POST", "/api/messages/", body, headers
        return "GET", "/api/whoami/", None, {"Cookie": cookie}

    return plan


def upstream_of(stack: Stack, tag: str) -> dict[str, str]:
    """Map the ``tag=`` query value of logged requests to the replica address that served it."""
    found: dict[str, str] = {}
    log = stack.dir / "conf" / "logs" / "access.log"
    pattern = re.compile(r"tag=(?P<tag>[\w-]+).*upstream=(?P<up>[\d.:, ]+?) urt=")
    for line in log.read_text().splitlines():
        match = pattern.search(line)
        if match and match.group("tag").startswith(tag):
            found[match.group("tag")] = match.group("up").split(",")[-1].strip()
    return found


# --- a. sessions ------------------------------------------------------------------------------
def test_a0_stack_json_records_postgres_behind_pgbouncer(healthy: Stack) -> None:
    """The stack runs the example on its own PostgreSQL through PgBouncer: stack.json lists
    both (passwords redacted), every replica's DATABASE_URL is PgBouncer's, and the database
    behind it is migrated (the demo user exists)."""
    state = healthy.state()
    if use_sqlite():  # ARENA_TEST_SQLITE=1: the state directory's SQLite file
        assert (state.get("databases"), state.get("pgbouncer")) == ([], None)
        assert healthy.database() == healthy.dir / "db.sqlite3"
        return
    import psycopg

    databases = [(d["name"], d["role"], d["state"]) for d in state["databases"]]
    assert databases == [("postgres", "primary", "running")]
    bouncer = state["pgbouncer"]
    assert (bouncer["state"], bouncer["pool_mode"]) == ("running", "transaction")
    url = healthy.database()
    assert isinstance(url, str)
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert password not in json.dumps(state)
    assert ":***@" in state["databases"][0]["url"]
    for replica in state["replicas"]:
        raw = Path(f"/proc/{replica['pid']}/environ").read_bytes().split(b"\0")
        env = dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)
        assert f"127.0.0.1:{bouncer['port']}/" in env["DATABASE_URL"], replica["name"]
        assert env["DATABASE_PGBOUNCER"] == "1", replica["name"]
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*) FROM auth_user WHERE username = 'demo'").fetchone()
    assert row == (1,)


def test_a_session_from_replica_1_is_valid_everywhere(healthy: Stack) -> None:
    """A session created through web-1 authenticates on every replica, directly and via nginx."""
    ports = healthy.replica_ports()
    cookie, _ = login(ports["web-1"])
    stats = LoadStats("a-sessions")
    for name, port in ports.items():
        started = time.monotonic()
        status, body = get_json(port, "/api/whoami/", headers={"Cookie": cookie})
        stats.record(time.monotonic() - started, status, body and body.get("replica"))
        assert (status, body["user"], body["replica"]) == (200, "demo", name)
    seen: Counter[str] = Counter()
    for _ in range(4 * len(ports)):
        started = time.monotonic()
        status, body = get_json(healthy.port, "/api/whoami/", headers={"Cookie": cookie})
        stats.record(time.monotonic() - started, status, body and body.get("replica"))
        assert (status, body["user"]) == (200, "demo")
        seen[body["replica"]] += 1
    stats.report()
    print(f"[a-sessions] via nginx served by {dict(seen)}")
    assert set(seen) == set(ports)


# --- b. WebSockets across replicas -----------------------------------------------------------
#: The example chat's per-connection message limit (example_project/arena/consumers.py).
CHAT_RATE, CHAT_BURST = 5.0, 10


def test_b_websocket_message_crosses_replicas(healthy: Stack) -> None:
    """A client on replica A (through nginx) receives what a client on replica B sends."""
    ports = healthy.replica_ports()
    room = f"e2e-b-{uuid.uuid4().hex[:8]}"
    origin = "http://127.0.0.1"
    stats = LoadStats("b-websocket")
    with connect(f"ws://127.0.0.1:{healthy.port}/ws/chat/{room}/", origin=origin) as client_a:
        client_a.send(json.dumps({"message": "who am i"}))
        replica_a = json.loads(client_a.recv(timeout=10))["replica"]
        replica_b = next(name for name in ports if name != replica_a)
        with connect(f"ws://127.0.0.1:{ports[replica_b]}/ws/chat/{room}/", origin=origin) as b:
            for i in range(20):
                if i >= CHAT_BURST - 1:
                    # Within the chat's per-connection limit (a flood is closed with 1008).
                    time.sleep(1.05 / CHAT_RATE)
                text = f"hello {i} from {replica_b}"
                started = time.monotonic()
                b.send(json.dumps({"message": text}))
                while True:
                    got = json.loads(client_a.recv(timeout=10))
                    if got.get("message") == text:
                        break
                stats.record(time.monotonic() - started, 200, got["replica"])
                assert (got["from_replica"], got["replica"]) == (replica_b, replica_a)
    stats.report()
    print(f"[b-websocket] A={replica_a} (via nginx) B={replica_b} (direct)")
    assert len(stats.latencies) == 20


# --- c. SSE is not buffered ------------------------------------------------------------------
def _first_event_delays(port: int, runs: int, path: str) -> tuple[list[float], list[float]]:
    firsts, rests = [], []
    for _ in range(runs):
        client = SSEClient(port, path)
        try:
            events = client.read_all()
        finally:
            client.close()
        tokens = [e for e in events if e.event == "token"]
        assert events[-1].event == "done", events[-3:]
        firsts.append(tokens[0].at - client.started)
        rests.append(events[-1].at - tokens[0].at)
    return firsts, rests


def test_c_sse_through_nginx_is_unbuffered(healthy: Stack) -> None:
    """The first event arrives via nginx < 200 ms after a direct client gets it, mid-stream."""
    path = "/messages/stream/?tokens=20&delay=0.1"
    direct_first, _ = _first_event_delays(healthy.replica_ports()["web-1"], 3, path)
    nginx_first, nginx_rest = _first_event_delays(healthy.port, 5, path)
    extra_ms = [(n - min(direct_first)) * 1000 for n in nginx_first]
    ms = [x * 1000 for x in nginx_first]
    print(
        f"[c-sse] runs=5 failed=0 first event direct "
        f"p50={percentile(direct_first, 50) * 1000:.0f}ms via nginx p50={percentile(ms, 50):.0f}ms "
        f"p95={percentile(ms, 95):.0f}ms p99={percentile(ms, 99):.0f}ms; nginx extra "
        f"max={max(extra_ms):.0f}ms; stream went on {min(nginx_rest):.2f}s after it"
    )
    assert max(extra_ms) < 200
    # 19 more tokens 0.1 s apart were still to come: the view was streaming.
    assert min(nginx_rest) > 1.5


# --- d. least_conn spreads streams ------------------------------------------------------------
def test_d_least_conn_spreads_30_streams(healthy: Stack) -> None:
    """30 concurrent SSE streams through nginx land within one of 10 per replica."""
    tag = f"d{uuid.uuid4().hex[:8]}"
    results: dict[int, list[SSEEvent]] = {}
    errors: list[str] = []
    barrier = threading.Barrier(30)

    def stream(i: int) -> None:
        barrier.wait()
        try:
            client = SSEClient(
                healthy.port, f"/messages/stream/?tokens=40&delay=0.05&tag={tag}-{i}"
            )
            results[i] = client.read_all()
            client.close()
        except Exception as exc:
            errors.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    time.sleep(0.3)
    by_address = Counter(upstream_of(healthy, tag).values())
    names = {f"127.0.0.1:{port}": name for name, port in healthy.replica_ports().items()}
    spread = {names.get(a, a): n for a, n in by_address.items()}
    print(f"[d-least-conn] streams=30 failed={len(errors)} spread={spread}")
    assert errors == []
    assert all(events[-1].event == "done" for events in results.values())
    assert sorted(spread) == sorted(names.values())
    assert all(abs(n - 10) <= 1 for n in spread.values())


# --- i. rate limits ---------------------------------------------------------------------------
def test_i_auth_rate_limited_probes_never(healthy: Stack) -> None:
    """/auth/ beyond 5 r/s + burst 10 gets 429; 300 fast probe requests get none."""
    # 40 requests at once (a GET is answered 405 without hashing a password, so the app's own
    # speed does not pace the client below the limit).
    statuses: list[int] = []
    barrier = threading.Barrier(40)

    def hit() -> None:
        barrier.wait()
        statuses.append(request(healthy.port, "GET", "/auth/login/")[0])

    threads = [threading.Thread(target=hit) for _ in range(40)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    probes: Counter[int] = Counter()
    latencies = []
    for i in range(300):
        path = ("/live/", "/ready/", "/health/")[i % 3]
        t0 = time.monotonic()
        status, _, _ = request(healthy.port, "GET", path)
        latencies.append((time.monotonic() - t0) * 1000)
        probes[status] += 1
    allowed = 1 + 10 + 5 * elapsed
    print(
        f"[i-rate-limit] auth sent=40 in {elapsed:.2f}s statuses={dict(Counter(statuses))} "
        f"(limit admits ~{allowed:.0f}); probes sent=300 statuses={dict(probes)} "
        f"p50={percentile(latencies, 50):.1f}ms p99={percentile(latencies, 99):.1f}ms"
    )
    assert len(statuses) == 40
    assert statuses.count(405) >= 10
    assert statuses.count(429) > 0
    assert statuses.count(429) >= 40 - allowed - 1
    assert set(statuses) <= {405, 429}
    assert probes == Counter({200: 300})


# --- e. kill -9 -------------------------------------------------------------------------------
def test_e_kill_9_one_replica_under_get_load(healthy: Stack) -> None:
    """kill -9 of web-2 during GETs: zero failures, its share moves to the others."""
    plan = lambda n: ("GET", "/api/whoami/", None, {})  # noqa: E731
    with Load(healthy.port, plan, name="e-kill9", threads=4, pause=0.01) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        healthy.act("kill", "web-2")
        time.sleep(3.0)
    stats = load.stats
    before, after = stats.share(until=killed_at), stats.share(since=killed_at + 0.5)
    stats.report()
    print(f"[e-kill9] share before={dict(before)} after={dict(after)}")
    assert stats.failures == []
    assert before["web-2"] > 0
    assert after["web-2"] == 0
    assert after["web-1"] > before["web-1"] * 0.5
    assert after["web-3"] > before["web-3"] * 0.5


# --- f. graceful stop -------------------------------------------------------------------------
def test_f_graceful_stop_under_get_post_and_sse(healthy: Stack) -> None:
    """Stopping web-3 gracefully: zero failed GET/POSTs, its SSE clients get the reconnect event."""
    ports = healthy.replica_ports()
    cookie, csrf = login(ports["web-1"])
    tag = f"f{uuid.uuid4().hex[:8]}"
    streams: dict[int, SSEClient] = {}
    events: dict[int, list[SSEEvent]] = {}

    def read(i: int) -> None:
        client = SSEClient(healthy.port, f"/messages/stream/?tokens=400&delay=0.05&tag={tag}-{i}")
        streams[i] = client
        # The test closes the streams still open once the stop is over.
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError, AttributeError):
            client.read_all()
        events[i] = client.events

    readers = [threading.Thread(target=read, args=(i,)) for i in range(9)]
    with Load(healthy.port, get_and_post_plan(cookie, csrf), name="f-graceful", threads=4) as load:
        for reader in readers:
            reader.start()
            time.sleep(0.05)
        time.sleep(1.5)
        stopped_at = time.monotonic()
        healthy.act("stop", "web-3")
        stop_seconds = time.monotonic() - stopped_at
        time.sleep(1.5)
    for client in streams.values():
        client.close()
    for reader in readers:
        reader.join(timeout=30)
    time.sleep(0.3)
    served = upstream_of(healthy, tag)
    on_web3 = {i for i in range(9) if served.get(f"{tag}-{i}") == f"127.0.0.1:{ports['web-3']}"}
    reconnected = {i for i, evs in events.items() if evs and evs[-1].event == "reconnect"}
    stats = load.stats
    stats.report()
    print(
        f"[f-graceful] stop took {stop_seconds:.1f}s; POSTs={stats.statuses[201]}; SSE streams=9 "
        f"on web-3={sorted(on_web3)} got reconnect={sorted(reconnected)} "
        f"retry={[events[i][-1].retry for i in sorted(reconnected)]}"
    )
    assert stats.failures == []
    assert stats.statuses[201] > 0
    assert on_web3, "least_conn put no stream on web-3"
    assert reconnected == on_web3
    assert all(events[i][-1].retry for i in reconnected)


def test_f_graceful_stop_keepalive_clients(healthy: Stack) -> None:
    """Stopping web-3 under clients that keep their connections open and never retry:
    zero failed GET/POSTs, no POST applied twice or applied but reported failed."""
    cookie, csrf = login(healthy.replica_ports()["web-1"])
    run = uuid.uuid4().hex[:8]
    plan = get_post_plan(cookie, csrf, run)
    with KeepAliveLoad(healthy.port, plan, name="f-graceful-ka", clients=4, duration=60) as load:
        time.sleep(1.5)
        stopped_at = time.monotonic()
        healthy.act("stop", "web-3")
        stop_seconds = time.monotonic() - stopped_at
        time.sleep(1.5)
    stats = load.stats
    stats.report()
    posts = check_posts(stats, healthy.database())
    print(f"[f-graceful-ka] stop took {stop_seconds:.1f}s; {posts.line()}")
    print(f"[f-graceful-ka] served before={dict(stats.served(until=stopped_at))}")
    assert stats.failed() == [], stats.causes()
    assert posts.ok > 0
    assert stats.served(until=stopped_at)["web-3"] > 0
    assert posts.applied_twice == []
    assert posts.applied_but_reported_failed == []
    assert posts.reported_ok_but_missing == []


# --- g. rolling restart -----------------------------------------------------------------------
def test_g_rolling_restart_sighup_under_load(healthy: Stack) -> None:
    """SIGHUP to run_lb_stack restarts every replica one by one with zero failed requests."""
    ports = healthy.replica_ports()
    before = healthy.replica_pids()
    cookie, csrf = login(ports["web-1"])
    with Load(healthy.port, get_and_post_plan(cookie, csrf), name="g-rolling", threads=4) as load:
        time.sleep(1.0)
        started = time.monotonic()
        os.kill(healthy.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 150
        while True:
            state = healthy.state()["replicas"]
            if all(r["pid"] != before[r["name"]] and r["state"] == "ready" for r in state):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        took = time.monotonic() - started
        time.sleep(1.5)
    stats = load.stats
    stats.report()
    seen: Counter[str] = Counter()
    for _ in range(12):
        status, body = get_json(healthy.port, "/api/whoami/")
        assert status == 200
        seen[body["replica"]] += 1
    direct = {name: get_json(port, "/api/whoami/")[1]["replica"] for name, port in ports.items()}
    print(f"[g-rolling] restart of {len(ports)} took {took:.1f}s; after: via nginx {dict(seen)}")
    assert stats.failures == []
    assert direct == {name: name for name in ports}
    assert set(seen) == set(ports)


def test_g_rolling_restart_sighup_keepalive_clients(healthy: Stack) -> None:
    """SIGHUP rolling restart under keep-alive clients that never retry, GETs and POSTs:
    zero failed requests, no POST applied twice (each POST's unique text is counted in the DB)."""
    before = healthy.replica_pids()
    cookie, csrf = login(healthy.replica_ports()["web-1"])
    run = uuid.uuid4().hex[:8]
    plan = get_post_plan(cookie, csrf, run)
    with KeepAliveLoad(healthy.port, plan, name="g-rolling-ka", clients=4, duration=170) as load:
        time.sleep(1.0)
        started = time.monotonic()
        os.kill(healthy.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 150
        while True:
            state = healthy.state()["replicas"]
            if all(r["pid"] != before[r["name"]] and r["state"] == "ready" for r in state):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        took = time.monotonic() - started
        time.sleep(1.5)
    stats = load.stats
    stats.report()
    posts = check_posts(stats, healthy.database())
    print(f"[g-rolling-ka] restart took {took:.1f}s; {posts.line()}")
    if stats.failed():
        print(f"[g-rolling-ka] first failures: {[(o.kind, o.cause) for o in stats.failed()[:5]]}")
    assert stats.failed() == [], stats.causes()
    assert posts.ok > 0
    assert posts.applied_twice == []
    assert posts.applied_but_reported_failed == []
    assert posts.reported_ok_but_missing == []


# --- h. Redis outage --------------------------------------------------------------------------
def _redis_failing(port: int) -> list[str]:
    """Names of the Redis checks that /status/ reports as failing on one replica."""
    body = get_json(port, "/status/", headers={"Authorization": f"Bearer {STATUS_TOKEN}"})[1]
    checks = (body or {}).get("checks", {})
    return sorted(
        name
        for name, entries in checks.items()
        if name.startswith("redis:") and any(e.get("status") == "fail" for e in entries)
    )


def test_h_redis_outage_and_recovery(healthy: Stack) -> None:
    """Redis down: every replica stays ready (a dependency every replica shares must not take
    them all out) while /status/ names the failing Redis check within 1 s; /live/ 200; LLM
    breakers work without Redis; back: /status/ clean again and sessions work."""
    ports = healthy.replica_ports()
    pids = healthy.replica_pids()
    redis_names = [r["name"] for r in healthy.state()["redis"]]
    for name in redis_names:
        healthy.act("stop-redis", name)
    seen = _poll_all_status(ports, failing=True, timeout=5)
    failing = {name: _redis_failing(port) for name, port in ports.items()}
    probes: Counter[tuple[str, int]] = Counter()
    probe_ms: list[float] = []
    for _ in range(10):
        for port in ports.values():
            for path in ("/live/", "/ready/"):
                t0 = time.monotonic()
                status, _, _ = request(port, "GET", path)
                probe_ms.append((time.monotonic() - t0) * 1000)
                probes[path, status] += 1
        time.sleep(0.05)
    # LLM calls still go through local breakers: failures open web-1's breaker without Redis.
    llm_ms: list[float] = []
    llm_statuses: Counter[int] = Counter()
    for _ in range(8):
        t0 = time.monotonic()
        status, _, _ = request(
            ports["web-1"], "GET", "/messages/stream/?tokens=3&delay=0",
            headers={"X-Arena-Simulate": "fail=503"},
        )  # fmt: skip
        llm_ms.append((time.monotonic() - t0) * 1000)
        llm_statuses[status] += 1
    status_body = get_json(
        ports["web-1"], "/status/", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
    )[1]
    breakers = (status_body or {}).get("breakers", {})
    for name in redis_names:
        healthy.act("start-redis", name)
    clean = _poll_all_status(ports, failing=False, timeout=15)
    cookie, _ = login(healthy.port)
    users = {
        n: get_json(p, "/api/whoami/", headers={"Cookie": cookie})[1]["user"]
        for n, p in ports.items()
    }
    print(
        f"[h-redis] /status/ names the failing Redis check after "
        f"{json.dumps({k: round(v, 3) for k, v in seen.items()})}s: {failing}; "
        f"probes sent={sum(probes.values())} statuses={dict(probes)} "
        f"p50={percentile(probe_ms, 50):.1f}ms p99={percentile(probe_ms, 99):.1f}ms; "
        f"/status/ clean after {json.dumps({k: round(v, 3) for k, v in clean.items()})}s; "
        f"LLM calls sent=8 statuses={dict(llm_statuses)} p50={percentile(llm_ms, 50):.0f}ms "
        f"p99={percentile(llm_ms, 99):.0f}ms breakers="
        f"{ {k: v.get('state') for k, v in breakers.items()} }"
    )
    assert sorted(seen) == sorted(ports)
    assert max(seen.values()) < 1.0
    assert all(failing.values()), failing
    assert probes == Counter({("/live/", 200): 10 * len(ports), ("/ready/", 200): 10 * len(ports)})
    assert breakers["simulator"]["state"] == "open"
    assert breakers["simulator"]["status"] == "warn"
    assert set(llm_statuses) <= {502, 503, 504}
    assert sorted(clean) == sorted(ports)
    assert users == dict.fromkeys(ports, "demo")
    assert healthy.replica_pids() == pids


def _poll_all_status(ports: dict[str, int], *, failing: bool, timeout: float) -> dict[str, float]:
    """Seconds until each replica's /status/ reports a failing Redis check (or none)."""
    started = time.monotonic()
    pending = dict(ports)
    reached: dict[str, float] = {}
    while pending and time.monotonic() - started < timeout:
        for name, port in list(pending.items()):
            try:
                now_failing = bool(_redis_failing(port))
            except OSError:
                continue
            if now_failing == failing:
                reached[name] = time.monotonic() - started
                del pending[name]
        time.sleep(0.02)
    return reached
