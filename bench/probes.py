"""Probe benchmarks.  Run: ``.venv/bin/python bench/probes.py``.

Serves the example project with one real gunicorn (2 gthread workers x 4 threads) on
loopback, with a real redis-server for cache/sessions/channels and SQLite, and loads it with
``wrk`` (bounded duration; rounds interleaved, median reported).  Prints three ratios:

1. ``/live/`` and ``/health/`` (ProbeMiddleware, first in the full stack) vs the trivial
   ``JsonResponse`` view ``/api/ping/`` on the same server: target >= 1.5x.  ``/bare/``, a
   WSGI hello world that never enters Django (``bench/probes_wsgi.py``), is measured in the
   same rounds: its ratio is the ceiling for any Django path on this machine.
2. ``/ready/`` (database + Redis checks, default 1 s per-process cache with single flight) vs
   django-health-check 4.x (``HealthCheckView`` with its Database and Cache checks), same
   server and settings: target >= 3x.
3. ProbeMiddleware's cost on a normal request, measured in-process (no network noise): the
   example's WSGI handler with and without ProbeMiddleware serving ``/api/ping/``: target <= 2%.

A round in which one gunicorn worker served every connection (wrk holds its keep-alive
connections for the whole round, and one gthread worker can accept all of them) measures one
worker, not the server; such rounds are detected from the workers' CPU time and repeated.

Options: ``--duration S`` per wrk run (default 3), ``--rounds N`` (default 5),
``--connections C`` (default 16), ``--asgi`` (also measure gunicorn + UvicornWorker, info).

``--plot PATH.png`` runs a sweep instead: ``/live/``, ``/health/``, ``/ready/`` and
``/api/ping/`` on the same server, one wrk run of ``--point-duration`` seconds (default 2) per
path and wrk connection count of ``--concurrency`` (default 1,4,16,64), and plots req/s and
wrk's p99 latency against the connection count (needs matplotlib).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
ASGI_WORKER = "uvicorn_worker.UvicornWorker"
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project"), str(ROOT / "bench")]

from bench._load import wrk  # noqa: E402
from bench._plot import (  # noqa: E402
    Machine,
    Point,
    check_plot_path,
    parse_concurrency,
    print_points,
    write_plot,
)

from tests.servers import RedisServer, free_port, wait_for_port  # noqa: E402


def _env(redis_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "example_project"), str(ROOT / "bench")]
        ),
        "DJANGO_SETTINGS_MODULE": "probes_settings",
        "REDIS_URL": redis_url,
        "SQLITE_PATH": str(workdir / "db.sqlite3"),
        "LOG_LEVEL": "ERROR",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        **extra,
    }


class Server:
    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        *,
        asgi: bool = False,
        worker_class: str = "gthread",
    ) -> None:
        self.port = free_port()
        app, worker = "probes_wsgi:application", ["--worker-class", worker_class]
        if asgi:
            app, worker = "arena_project.asgi:application", ["--worker-class", ASGI_WORKER]
        self.log = open(workdir / f"gunicorn-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                app,
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                *worker,
                # gunicorn turns a "sync" worker with threads into gthread.
                *(["--threads", "4"] if worker_class != "sync" else []),
            ],
            cwd=ROOT / "example_project",
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=30)

    def worker_cpu(self) -> dict[int, float]:
        """User+system CPU seconds used so far by each gunicorn worker process (pid -> s)."""
        used = {}
        for child in psutil.Process(self.proc.pid).children():
            times = child.cpu_times()
            used[child.pid] = times.user + times.system
        return used

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def _status(url: str) -> int:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


class Samples:
    """req/s and server CPU microseconds per request, per path."""

    def __init__(self, paths: list[str]) -> None:
        self.rps: dict[str, list[float]] = {p: [] for p in paths}
        self.cpu_us: dict[str, list[float]] = {p: [] for p in paths}
        self.repeated: dict[str, int] = dict.fromkeys(paths, 0)
        self.skewed: dict[str, int] = dict.fromkeys(paths, 0)


#: A round in which one worker did less than this share of the work is repeated: wrk opens its
#: keep-alive connections at once and holds them for the whole round, and a gthread worker
#: whose poller wakes first can accept all of them, leaving the other worker idle.  Such a
#: round measures one worker, not the server (it halves req/s for whichever path it hits).
MIN_WORKER_SHARE = 0.2
MAX_TRIES = 6
#: Every load asks for JSON (django-health-check answers HTML otherwise).
ACCEPT_JSON = ["Accept: application/json"]


def _round(
    server: Server, path: str, *, duration: float, connections: int
) -> tuple[float, float, bool]:
    """(req/s, server CPU us per request, whether one worker held every connection)."""
    before = server.worker_cpu()
    rate, total = wrk(
        server.url(path),
        duration=duration,
        connections=connections,
        headers=ACCEPT_JSON,
    )
    after = server.worker_cpu()
    used = [after[pid] - before.get(pid, 0.0) for pid in after]
    skewed = len(used) > 1 and min(used) < MIN_WORKER_SHARE * sum(used)
    return rate, sum(used) / max(1, total) * 1e6, skewed


def measure(
    server: Server, paths: list[str], *, rounds: int, duration: float, connections: int
) -> Samples:
    """Rounds interleave the paths (order flipped every round).

    Besides wrk's req/s, the gunicorn workers' CPU time per request is recorded: on a machine
    shared with other jobs it is a steadier measure of a probe's cost than throughput.  A round
    in which one worker held every connection is repeated (up to ``MAX_TRIES`` times; counted
    and printed).
    """
    samples = Samples(paths)
    for path in paths:  # warm up: imports, pools, first check evaluation
        wrk(
            server.url(path),
            duration=1,
            connections=connections,
            headers=ACCEPT_JSON,
        )
    for i in range(rounds):
        for path in paths if i % 2 == 0 else list(reversed(paths)):
            for attempt in range(MAX_TRIES):
                rate, cpu_us, skewed = _round(
                    server, path, duration=duration, connections=connections
                )
                if not skewed:
                    break
                if attempt < MAX_TRIES - 1:
                    samples.repeated[path] += 1
                else:
                    samples.skewed[path] += 1
            samples.rps[path].append(rate)
            samples.cpu_us[path].append(cpu_us)
    return samples


def ratio(samples: Samples, path: str, baseline: str) -> float:
    """Median of the per-round req/s ratios: each pair ran back to back under the same load."""
    rps = samples.rps
    return statistics.median(a / b for a, b in zip(rps[path], rps[baseline], strict=True))


def cpu_ratio(samples: Samples, path: str, baseline: str) -> float:
    """How many more requests of ``path`` than of ``baseline`` one CPU second serves."""
    cpu = samples.cpu_us
    return statistics.median(b / a for a, b in zip(cpu[path], cpu[baseline], strict=True))


def median(samples: Samples, path: str) -> float:
    return statistics.median(samples.rps[path])


def cpu(samples: Samples, path: str) -> float:
    return statistics.median(samples.cpu_us[path])


def middleware_overhead(
    redis_url: str, workdir: Path, *, rounds: int
) -> tuple[float, float, float, float]:
    """/api/ping/ through the example's WSGI handler, in-process, thread CPU time.

    Returns the median seconds per request without ProbeMiddleware, the median per-round
    ratio with/without it, the same ratio for a do-nothing middleware (control: what any
    extra layer costs), and the middleware's own added seconds per pass-through call.
    """
    code = r"""
import gc, io, statistics, sys, time, timeit
import django
django.setup()
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory
from django_arena_scale.middleware import ProbeMiddleware


class PassThrough:
    # control: the cheapest possible extra middleware layer
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)


sys.modules["__main__"].PassThrough = PassThrough
PROBE = "django_arena_scale.middleware.ProbeMiddleware"
original = list(settings.MIDDLEWARE)
rest = [m for m in original if m != PROBE]
handlers = {}
variants = {"without": rest, "with": [PROBE, *rest], "control": ["__main__.PassThrough", *rest]}
for name, stack in variants.items():
    settings.MIDDLEWARE = stack
    handlers[name] = WSGIHandler()
settings.MIDDLEWARE = original
environ = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/api/ping/", "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1",
}


def run(handler, n):
    # thread CPU time, not wall time: other jobs on a shared machine do not inflate it
    t0 = time.thread_time()
    for _ in range(n):
        response = handler(dict(environ), lambda status, headers, exc=None: None)
        b"".join(response)
        response.close()
    return (time.thread_time() - t0) / n


for handler in handlers.values():
    run(handler, 1000)
gc.collect()
gc.disable()
samples = {name: [] for name in handlers}
for i in range(int(sys.argv[1])):
    names = list(handlers) if i % 2 == 0 else list(reversed(handlers))
    for name in names:
        samples[name].append(run(handlers[name], 1000))
gc.enable()
paired = statistics.median(a / b for a, b in zip(samples["with"], samples["without"]))
control = statistics.median(a / b for a, b in zip(samples["control"], samples["without"]))

# The middleware's own cost on a non-probe request, isolated from the rest of the stack.
request = RequestFactory().get("/api/ping/")
inner = lambda r: r
wrapped = ProbeMiddleware(inner)
n = 200000
bare = min(timeit.repeat(lambda: inner(request), number=n, repeat=7)) / n
through = min(timeit.repeat(lambda: wrapped(request), number=n, repeat=7)) / n
print(statistics.median(samples["without"]), paired, control, through - bare)
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(rounds)],
        env=_env(redis_url, workdir),
        cwd=ROOT / "example_project",
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), float(out[3])


#: The sweep's paths, with their plot labels.
SWEEP = {
    "/api/ping/": "/api/ping/ (trivial JsonResponse view)",
    "/live/": "/live/",
    "/health/": "/health/",
    "/ready/": "/ready/ (db + Redis checks, 1 s cache)",
}


def sweep(server: Server, concurrency: list[int], *, duration: float) -> dict[str, list[Point]]:
    """req/s and p99 per path and wrk connection count; paths interleave at every count.

    A run in which one gunicorn worker served every connection (see ``MIN_WORKER_SHARE``) is
    repeated up to twice when there are at least 4 connections (with fewer, one worker doing
    all the work is expected); the last try is kept either way.
    """
    series: dict[str, list[Point]] = {label: [] for label in SWEEP.values()}
    for path in SWEEP:
        wrk(server.url(path), duration=1, connections=4, headers=ACCEPT_JSON)
    for i, connections in enumerate(concurrency):
        paths = list(SWEEP) if i % 2 == 0 else list(reversed(SWEEP))
        for path in paths:
            for _ in range(3):
                before = server.worker_cpu()
                result = wrk(
                    server.url(path),
                    duration=duration,
                    connections=connections,
                    headers=ACCEPT_JSON,
                    latency=True,
                )
                after = server.worker_cpu()
                used = [after[pid] - before.get(pid, 0.0) for pid in after]
                skewed = len(used) > 1 and min(used) < MIN_WORKER_SHARE * sum(used)
                if connections < 4 or not skewed:
                    break
            series[SWEEP[path]].append((connections, result.rps, result.p99_ms))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--asgi", action="store_true", help="also measure under ASGI (info)")
    parser.add_argument(
        "--overhead-only", action="store_true", help="only the in-process middleware cost"
    )
    parser.add_argument(
        "--worker-class",
        default="gthread",
        choices=["gthread", "sync"],
        help="gunicorn worker class of the WSGI server (gthread: the generated API config; "
        "sync: gunicorn's default)",
    )
    parser.add_argument(
        "--per-round", action="store_true", help="also print every round's req/s and CPU/req"
    )
    parser.add_argument(
        "--plot", metavar="PATH.png", help="run the concurrency sweep and write this PNG"
    )
    parser.add_argument(
        "--concurrency",
        default="1,4,16,64",
        help="wrk connection counts of the --plot sweep (comma-separated)",
    )
    parser.add_argument(
        "--point-duration", type=float, default=2.0, help="seconds per wrk run in the sweep"
    )
    args = parser.parse_args()
    plot_path = check_plot_path(args.plot)
    concurrency = parse_concurrency(args.concurrency)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; on Debian/Ubuntu run: apt-get install -y wrk")
    opts = {"rounds": args.rounds, "duration": args.duration, "connections": args.connections}
    workdir = Path(tempfile.mkdtemp(prefix="arena-bench-"))
    redis = RedisServer().start()
    servers: list[Server] = []

    def start(asgi: bool = False, **extra: str) -> Server:
        server = Server(
            _env(redis.url, workdir, **extra), workdir, asgi=asgi, worker_class=args.worker_class
        )
        servers.append(server)
        for path in ("/live/", "/health/", "/ready/", "/api/ping/", "/ht/"):
            deadline = time.monotonic() + 30
            while _status(server.url(path)) != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{path} does not answer 200; see {workdir}")
                time.sleep(0.2)
        return server

    def stop(server: Server) -> None:
        server.stop()
        servers.remove(server)

    def line(label: str, s: Samples, path: str, base: str = "", note: str = "") -> None:
        text = f"{label:<34} {median(s, path):7.0f} req/s {cpu(s, path):7.0f} us CPU/req"
        if base:
            text += (
                f"  ratio {ratio(s, path, base):5.2f}x req/s, "
                f"{cpu_ratio(s, path, base):5.2f}x per CPU second  ({note})"
            )
        if s.repeated[path] or s.skewed[path]:
            text += (
                f"  [{s.repeated[path]} round(s) repeated, {s.skewed[path]} kept: one worker "
                "held every connection]"
            )
        print(text, flush=True)
        if args.per_round:
            rounds = zip(s.rps[path], s.cpu_us[path], strict=True)
            print("    rounds: " + ", ".join(f"{r:.0f} req/s {c:.0f} us" for r, c in rounds))

    try:
        print(
            f"# probes benchmark: gunicorn {args.worker_class} 2 workers"
            f"{' x 4 threads' if args.worker_class != 'sync' else ''}, wrk -t1 "
            f"-c{args.connections} -d{max(1, round(args.duration))}s, {args.rounds} "
            "interleaved rounds; req/s are medians, ratios are medians of per-round ratios"
        )
        # Other jobs on the machine inflate the server's share of every request and compress
        # the ratios: the load average says how quiet the run was.
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"# {os.cpu_count()} CPUs, load average {load} (1 / 5 / 15 min) at the start")
        if plot_path is not None:
            machine = Machine()
            series = sweep(start(), concurrency, duration=args.point_duration)
            print(f"# load average {machine.finish()} (1 / 5 / 15 min) at the end")
            print_points(series, rate="req/s")
            write_plot(
                plot_path,
                series,
                title=f"Probes: one gunicorn ({args.worker_class} 2 workers"
                f"{' x 4 threads' if args.worker_class != 'sync' else ''}), "
                f"wrk -t1, {max(1, round(args.point_duration))} s per point",
                machine=machine,
            )
            return
        if not args.overhead_only:
            server = start()
            s = measure(server, ["/api/ping/", "/live/", "/health/", "/bare/"], **opts)
            line("/api/ping/ (JsonResponse view)", s, "/api/ping/")
            for path in ("/live/", "/health/"):
                line(path, s, path, "/api/ping/", "target >= 1.5x")
            line("/bare/ (WSGI hello, no Django)", s, "/bare/", "/api/ping/", "info: the ceiling")
            s = measure(server, ["/ht/", "/ready/"], **opts)
            line("django-health-check 4 (db+cache)", s, "/ht/")
            line("/ready/ (db+redis, 1 s cache)", s, "/ready/", "/ht/", "target >= 3x")
            stop(server)

            server = start(ARENA_SCALE_CHECK_CACHE_TTL="0")
            s = measure(server, ["/ht/", "/ready/"], **opts)
            line("/ready/ with CHECK_CACHE_TTL=0", s, "/ready/", "/ht/", "info: single flight only")
            stop(server)

            if args.asgi:
                server = start(asgi=True)
                s = measure(server, ["/api/ping/", "/live/"], **opts)
                line("ASGI UvicornWorker /api/ping/", s, "/api/ping/")
                line("ASGI UvicornWorker /live/", s, "/live/", "/api/ping/", "info")
                stop(server)

        without, paired, control, added = middleware_overhead(
            redis.url, workdir, rounds=max(31, args.rounds * 6)
        )
        print(
            f"/api/ping/ in-process WSGI handler (thread CPU time, paired rounds): "
            f"{without * 1e6:.1f} us without ProbeMiddleware; with it {(paired - 1) * 100:+.2f}%"
            f" (a do-nothing middleware: {(control - 1) * 100:+.2f}%)"
        )
        print(
            f"ProbeMiddleware pass-through cost measured alone: {added * 1e9:.0f} ns per request "
            f"= {added / without * 100:.3f}% of a /api/ping/ request  (target <= 2%)"
        )
    finally:
        for server in list(servers):
            server.stop()
        redis.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
