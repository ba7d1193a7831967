"""Stack benchmarks: run ``.venv/bin/python bench/stack.py [which]``.

Each benchmark starts its own ``LocalStack`` (real redis-server, gunicorn replicas of the
example project, nginx on 127.0.0.1) in a temp dir and stops it afterwards:

- ``ratio``: requests/s of ``/api/ping/`` through nginx vs directly to the one replica behind
  it (same workers: the same replica); ``wrk``, rounds alternate the order; prints the ratio.
- ``streams``: concurrent SSE streams held by one ASGI replica (1 uvicorn worker) behind
  nginx; prints how many were held and the replica's RSS growth per stream (KiB).
- ``storm``: reconnect storm: new SSE streams accepted per second by one ASGI worker through
  the example's ASGI application (``wrk`` on a one-token stream, directly and through nginx).
  The example routes ``/messages/stream/`` through ``django_arena_scale.asgi.StreamRouter``
  (the async view on the event loop; host validation, SecurityMiddleware and
  XFrameOptionsMiddleware hooks inline; no session/auth/CSRF); ``/api/ping/`` in the same run
  is Django's full ASGI handler and middleware stack.
- ``live``: ``/live/`` p99 on a replica while every worker thread is busy on slow streams:
  a gthread replica (1 worker x 4 threads, WSGI streams hold threads) and a uvicorn replica
  (1 worker, 400 async streams).
- ``locust``: the load plan of bench/locustfile.py (baseline, ramp-up, sustained,
  streaming-focused), headless, per-endpoint req/s, p50/p95/p99 and error rate.

``--plot PATH.png`` (with ``ratio`` or ``streams``, one of them per run) sweeps
``--concurrency`` instead and plots it (needs matplotlib):

- ``ratio --plot``: req/s and wrk's p99 of ``/api/ping/`` through nginx and directly to the
  replica, against wrk connections (default 1,4,16,64; ``--point-duration`` s per point).
- ``streams --plot``: N SSE streams (default 10,100,1000,3000) opened at once through nginx
  to one ASGI replica: streams opened per second and the p99 time from connect to the first
  event, against N; each level starts from zero open streams.

Figures from one run on this machine are in docs/benchmarks/stack.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena_project.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one

from bench._load import local_stack, wrk  # noqa: E402
from bench._plot import (  # noqa: E402
    Machine,
    Point,
    check_plot_path,
    parse_concurrency,
    print_points,
    write_plot,
)

from django_arena_scale.stack._runner import (  # noqa: E402
    LocalStack,
    free_port_range,
    http_get,
)


@contextlib.contextmanager
def running_stack(**spec: Any) -> Iterator[LocalStack]:
    with local_stack(
        start=24000,
        prefix="arena-bench-stack-",
        env={"LOG_LEVEL": "ERROR"},
        redis_roles="shared",
        max_requests=0,
        **spec,
    ) as stack:
        yield stack


def rss_kib(pid: int) -> int:
    """Resident memory (KiB) of ``pid`` and all its descendants."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total // 1024


# --- ratio ------------------------------------------------------------------------------------
def bench_ratio(rounds: int) -> None:
    with running_stack(replicas=1, topology="single", workers=2, threads=4) as stack:
        replica = stack.replicas["web-1"]
        direct_url = f"http://127.0.0.1:{replica.port}/api/ping/"
        nginx_url = f"{stack.url}api/ping/"
        wrk(direct_url, duration=2, connections=32)
        wrk(nginx_url, duration=2, connections=32)
        direct, via = [], []
        for i in range(rounds):
            order = [(direct, direct_url), (via, nginx_url)]
            for sink, url in order if i % 2 == 0 else reversed(order):
                sink.append(wrk(url, duration=5, connections=32).rps)
    d, n = statistics.median(direct), statistics.median(via)
    print(
        f"ratio: /api/ping/ (1 replica, 2 WSGI workers x 4 threads, wrk -c32, {rounds} "
        f"rounds): direct {d:.0f} req/s, through nginx {n:.0f} req/s, nginx/direct = {n / d:.2f}"
    )


def sweep_ratio(concurrency: list[int], duration: float) -> dict[str, list[Point]]:
    """req/s and p99 of /api/ping/ direct and through nginx per wrk connection count; the
    order alternates at every count."""
    direct_label = "directly to the replica"
    nginx_label = "through nginx"
    series: dict[str, list[Point]] = {nginx_label: [], direct_label: []}
    with running_stack(replicas=1, topology="single", workers=2, threads=4) as stack:
        replica = stack.replicas["web-1"]
        urls = {
            direct_label: f"http://127.0.0.1:{replica.port}/api/ping/",
            nginx_label: f"{stack.url}api/ping/",
        }
        for url in urls.values():
            wrk(url, duration=1, connections=4)
        for i, connections in enumerate(concurrency):
            order = list(urls) if i % 2 == 0 else list(reversed(urls))
            for label in order:
                result = wrk(urls[label], duration=duration, connections=connections, latency=True)
                series[label].append((connections, result.rps, result.p99_ms))
    return series


# --- held streams -------------------------------------------------------------------------------
async def _open_streams(
    port: int,
    count: int,
    concurrency: int = 200,
    path: str = "/messages/stream/?tokens=10000&delay=10",
    first_event_ms: list[float] | None = None,
) -> list[Any]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(concurrency)
    held: list[Any] = []

    async def one() -> None:
        async with gate:
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 60)
                if b" 200 " not in status:
                    writer.close()
                    return
                # Wait for the first event: the stream is established end to end.
                while (await asyncio.wait_for(reader.readline(), 60)).strip() != b"":
                    pass
                await asyncio.wait_for(reader.readuntil(b"\n\n"), 60)
                if first_event_ms is not None:
                    first_event_ms.append((time.monotonic() - started) * 1000)
                held.append(writer)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                return

    await asyncio.gather(*(one() for _ in range(count)))
    return held


def bench_streams(count: int) -> None:
    spec = {
        "replicas": 1,
        "topology": "single",
        "app_server": "uvicorn",
        "workers": 1,
        "max_conns": count + 100,
        "stream_read_timeout": 600,
    }
    with running_stack(**spec) as stack:
        replica = stack.replicas["web-1"]
        assert replica.process.pid is not None

        async def run() -> tuple[int, int, int, float]:
            # Warm the replica (first requests import views, open Redis pools).
            warm = await _open_streams(stack.spec.local_port, 50)
            for writer in warm:
                writer.close()
            await asyncio.sleep(1.0)
            before = rss_kib(replica.process.pid)  # type: ignore[arg-type]
            started = time.monotonic()
            held = await _open_streams(stack.spec.local_port, count)
            took = time.monotonic() - started
            await asyncio.sleep(2.0)
            after = rss_kib(replica.process.pid)  # type: ignore[arg-type]
            for writer in held:
                writer.close()
            return len(held), before, after, took

        held, before, after, took = asyncio.run(run())
    per = (after - before) / max(held, 1)

    async def baseline(port: int, pid: int) -> tuple[int, float]:
        warm = await _open_streams(port, 50, path="/hold")
        for writer in warm:
            writer.close()
        await asyncio.sleep(1.0)
        start = rss_kib(pid)
        streams = await _open_streams(port, held, path="/hold")
        await asyncio.sleep(2.0)
        grown = rss_kib(pid) - start
        for writer in streams:
            writer.close()
        return len(streams), grown / max(len(streams), 1)

    with bare_server() as (port, pid):
        bare_held, bare_per = asyncio.run(baseline(port, pid))
    print(
        f"streams: one ASGI replica (1 uvicorn worker) behind nginx held {held}/{count} SSE "
        f"streams (opened in {took:.1f}s); replica RSS {before / 1024:.0f} -> "
        f"{after / 1024:.0f} MiB = {per:.1f} KiB per stream (target >= 10000 at <= 40 KiB: "
        f"{'met' if held >= 10_000 and per <= 40 else 'NOT met'}); baseline in the same run: "
        f"a bare "
        f"ASGI app on the same worker class held {bare_held} at {bare_per:.1f} KiB per stream "
        f"-> example/bare = {per / bare_per:.2f}"
    )


def p99(values: list[float]) -> float | None:
    """The 99th percentile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]


def sweep_streams(levels: list[int]) -> dict[str, list[Point]]:
    """For each N: open N SSE streams at once (200 connecting at a time, the others queue in
    the client) through nginx to one uvicorn replica, wait for each one's first event, close
    them all; rate = streams established / seconds to establish all of them."""
    spec = {
        "replicas": 1,
        "topology": "single",
        "app_server": "uvicorn",
        "workers": 1,
        "max_conns": max(levels) + 100,
        "stream_read_timeout": 600,
    }
    label = "SSE through nginx, 1 uvicorn worker"
    series: dict[str, list[Point]] = {label: []}
    with running_stack(**spec) as stack:
        port = stack.spec.local_port

        async def level(count: int) -> Point:
            times: list[float] = []
            started = time.monotonic()
            held = await _open_streams(port, count, first_event_ms=times)
            took = time.monotonic() - started
            for writer in held:
                writer.close()
            if len(held) < count:
                print(f"  streams: only {len(held)}/{count} streams established", flush=True)
            await asyncio.sleep(1.0)
            return (count, len(held) / took, p99(times))

        async def run() -> None:
            for writer in await _open_streams(port, 50):  # warm: imports, Redis pools
                writer.close()
            await asyncio.sleep(1.0)
            for count in levels:
                series[label].append(await level(count))

        asyncio.run(run())
    return series


# --- reconnect storm ----------------------------------------------------------------------------
async def bare_sse_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Baseline: a bare ASGI SSE endpoint (no Django) sending one token and ``done``."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send(
        {"type": "http.response.body", "body": b"event: token\ndata: {}\n\n", "more_body": True}
    )
    if scope["path"].startswith("/hold"):
        # Hold the stream open until the client leaves (the memory baseline).
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await send({"type": "http.response.body", "body": b"event: done\ndata: {}\n\n"})


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[int, int]]:
    port = free_port_range(1, start=25500)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "django_arena_scale.lifecycle.uvicorn.UvicornWorker",
            "--log-level", "warning", "bench.stack:bare_sse_app",
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if http_get(port, "/")[0] == 200:
                    break
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def bench_storm(duration: int, rounds: int = 3) -> None:
    spec = {"replicas": 1, "topology": "single", "app_server": "uvicorn", "workers": 1}
    directs, vias, pings, bares = [], [], [], []
    with running_stack(**spec) as stack:
        replica = stack.replicas["web-1"]
        path = "messages/stream/?tokens=1&delay=0"
        direct_url = f"http://127.0.0.1:{replica.port}/{path}"
        ping_url = f"http://127.0.0.1:{replica.port}/api/ping/"
        wrk(direct_url, duration=2, connections=64)
        for _ in range(rounds):
            directs.append(wrk(direct_url, duration=duration, connections=64).rps)
            vias.append(wrk(f"{stack.url}{path}", duration=duration, connections=64).rps)
            pings.append(wrk(ping_url, duration=duration, connections=64).rps)
    with bare_server() as (port, _):
        bare_url = f"http://127.0.0.1:{port}/"
        wrk(bare_url, duration=2, connections=64)
        for _ in range(rounds):
            bares.append(wrk(bare_url, duration=duration, connections=64).rps)
    direct, via = statistics.median(directs), statistics.median(vias)
    ping, bare = statistics.median(pings), statistics.median(bares)
    print(
        f"storm: one uvicorn worker, example ASGI app (stream path via StreamRouter), one-token "
        f"SSE streams (wrk -c64 {duration}s, median of {rounds}): {direct:.0f} new streams/s "
        f"direct (rounds: {', '.join(f'{x:.0f}' for x in directs)}), {via:.0f}/s through nginx "
        f"(same worker, Django's full handler: /api/ping/ {ping:.0f} req/s); "
        f"target >= 1000/s direct: {'met' if direct >= 1000 else 'NOT met'}; baseline in the "
        f"same run: a bare ASGI SSE app on the same worker class {bare:.0f}/s -> "
        f"example/bare = {direct / bare:.2f}"
    )


# --- /live/ under slow streams ------------------------------------------------------------------
def _live_p99(port: int, samples: int = 200, timeout: float = 5.0) -> tuple[float, float, int]:
    times, failed = [], 0
    for _ in range(samples):
        t0 = time.monotonic()
        try:
            status, _ = http_get(port, "/live/", timeout=timeout)
            if status != 200:
                failed += 1
        except OSError:
            failed += 1
        times.append((time.monotonic() - t0) * 1000)
        time.sleep(0.005)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99) - 1], failed


def bench_live() -> None:
    spec = {
        "replicas": 1,
        "topology": "split",
        "workers": 1,
        "threads": 4,
        "stream_replicas": 1,
        "stream_workers": 1,
    }
    with running_stack(**spec) as stack:
        web, stream = stack.replicas["web-1"], stack.replicas["stream-1"]

        async def hold(port: int, count: int) -> list[Any]:
            return await _open_streams(port, count, concurrency=count)

        async def run() -> dict[str, Any]:
            results: dict[str, Any] = {}
            idle_web = _live_p99(web.port, 100)
            held = await hold(web.port, 3)  # every thread but one waits on a slow stream
            partly_web = await asyncio.to_thread(_live_p99, web.port, 100, 2.0)
            for writer in held:
                writer.close()
            held = await hold(web.port, 4)
            busy_web = await asyncio.to_thread(_live_p99, web.port, 10, 2.0)
            for writer in held:
                writer.close()
            idle_stream = _live_p99(stream.port, 100)
            held = await hold(stream.port, 400)
            busy_stream = await asyncio.to_thread(_live_p99, stream.port, 200)
            results["wsgi"] = (idle_web, busy_web, partly_web)
            results["uvicorn"] = (idle_stream, busy_stream, len(held))
            for writer in held:
                writer.close()
            return results

        results = asyncio.run(run())
    (gi, gb, gp) = results["wsgi"]
    (ui, ub, n) = results["uvicorn"]
    print(
        f"live: WSGI replica (1 worker x 4 threads) idle p99 {gi[1]:.1f} ms; with 3 slow WSGI "
        f"streams (one thread free): p50 {gp[0]:.1f} ms p99 {gp[1]:.1f} ms, {gp[2]}/100 failed; "
        f"with 4 holding every thread: p50 {gb[0]:.0f} ms p99 {gb[1]:.0f} ms, "
        f"{gb[2]}/10 failed (2 s timeout)"
    )
    print(
        f"live: uvicorn replica (1 worker) idle p99 {ui[1]:.1f} ms; with {n} slow SSE "
        f"streams open: p50 {ub[0]:.1f} ms p99 {ub[1]:.1f} ms, {ub[2]}/200 failed"
    )


# --- locust -------------------------------------------------------------------------------------
SCENARIOS = ("baseline", "rampup", "sustained", "streaming")


def bench_locust(scenarios: list[str]) -> None:
    locust = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    spec = {
        "replicas": 2,
        "topology": "split",
        "workers": 1,
        "threads": 8,
        "stream_replicas": 1,
        "stream_workers": 1,
    }
    with running_stack(**spec) as stack, tempfile.TemporaryDirectory() as out:
        for scenario in scenarios:
            prefix = Path(out) / scenario
            env = dict(os.environ, ARENA_SCENARIO=scenario)
            subprocess.run(
                [
                    locust, "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
                    "--host", stack.url.rstrip("/"), "--csv", str(prefix),
                    "--only-summary", "--loglevel", "WARNING",
                ],
                env=env, capture_output=True, text=True, check=False, timeout=600,
            )  # fmt: skip
            print_locust(scenario, Path(f"{prefix}_stats.csv"))


def print_locust(scenario: str, path: Path) -> None:
    if not path.exists():
        print(f"locust {scenario}: no stats written")
        return
    print(f"locust {scenario}:")
    print(
        f"  {'endpoint':34} {'reqs':>6} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'err%':>6}"
    )
    with path.open() as handle:
        for row in csv.DictReader(handle):
            reqs = int(row["Request Count"])
            errors = int(row["Failure Count"])
            name = f"{row['Type']} {row['Name']}".strip()
            print(
                f"  {name[:34]:34} {reqs:>6} {float(row['Requests/s']):>7.1f} "
                f"{row['50%']:>6} {row['95%']:>6} {row['99%']:>6} "
                f"{100 * errors / max(reqs, 1):>5.1f}%"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*", default=["ratio", "streams", "storm", "live", "locust"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--plot", metavar="PATH.png", help="with ratio or streams: sweep and write this PNG"
    )
    parser.add_argument(
        "--concurrency",
        help="the --plot sweep's levels, comma-separated: wrk connections for ratio "
        "(default 1,4,16,64), streams opened at once for streams (default 10,100,1000,3000)",
    )
    parser.add_argument(
        "--point-duration", type=float, default=2.0, help="seconds per wrk run in the sweep"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, shared; python {sys.version.split()[0]}")
    if args.plot is not None:
        plot_sweep(args)
        return
    for which in args.which:
        if which == "ratio":
            bench_ratio(args.rounds)
        elif which == "streams":
            bench_streams(args.streams)
        elif which == "storm":
            bench_storm(args.duration, args.rounds)
        elif which == "live":
            bench_live()
        elif which == "locust":
            bench_locust(args.scenarios.split(","))
        else:
            raise SystemExit(
                f"unknown benchmark {which!r}; expected ratio, streams, storm, live, locust."
            )


def plot_sweep(args: argparse.Namespace) -> None:
    if args.which not in (["ratio"], ["streams"]):
        raise SystemExit(
            f"--plot takes exactly one of ratio, streams; got {' '.join(args.which) or 'none'}"
        )
    which = args.which[0]
    default = "1,4,16,64" if which == "ratio" else "10,100,1000,3000"
    levels = parse_concurrency(args.concurrency or default)
    path = check_plot_path(args.plot)
    assert path is not None
    machine = Machine()
    print(f"load average {machine.start} (1 / 5 / 15 min) at the start", flush=True)
    if which == "ratio":
        series = sweep_ratio(levels, args.point_duration)
        print(f"load average {machine.finish()} (1 / 5 / 15 min) at the end")
        print_points(series, rate="req/s")
        write_plot(
            path,
            series,
            title="Stack: /api/ping/ through nginx vs directly to the one replica behind it "
            f"(2 WSGI workers x 4 threads), wrk -t1, {max(1, round(args.point_duration))} s "
            "per point",
            machine=machine,
        )
    else:
        series = sweep_streams(levels)
        print(f"load average {machine.finish()} (1 / 5 / 15 min) at the end")
        print_points(series, rate="streams/s")
        write_plot(
            path,
            series,
            title="Streams: N SSE streams opened at once through nginx to one ASGI replica "
            "(1 uvicorn worker), 200 connecting at a time",
            machine=machine,
            x_label="SSE streams opened and held together (log scale)",
            rate_label="streams established per second",
            latency_label="p99 connect to first event (ms)",
        )


if __name__ == "__main__":
    main()
