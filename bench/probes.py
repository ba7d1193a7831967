"""Probe benchmarks (issue 2, Performance).  Run: ``/work/venv/bin/python bench/probes.py``.

Serves the example project with one real gunicorn (2 gthread workers x 4 threads) on
loopback, with a real redis-server for cache/sessions/channels and SQLite, and loads it with
``wrk`` (bounded duration; rounds interleaved, median reported).  Prints three ratios:

1. ``/live/`` and ``/health/`` (ProbeMiddleware, first in the full stack) vs the trivial
   ``JsonResponse`` view ``/api/ping/`` on the same server: target >= 1.5x.
2. ``/ready/`` (database + Redis checks, default 1 s per-process cache with single flight) vs
   django-health-check 4.x (``HealthCheckView`` with its Database and Cache checks), same
   server and settings: target >= 3x.
3. ProbeMiddleware's cost on a normal request, measured in-process (no network noise): the
   example's WSGI handler with and without ProbeMiddleware serving ``/api/ping/``: target <= 2%.

Options: ``--duration S`` per wrk run (default 4), ``--rounds N`` (default 3),
``--connections C`` (default 16).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project"), str(ROOT / "bench")]

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
        **extra,
    }


class Server:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / f"gunicorn-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "arena_project.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--env",
                "DJANGO_SETTINGS_MODULE=probes_settings",
            ],
            cwd=ROOT / "example_project",
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=30)

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


def wrk(url: str, *, duration: float, connections: int) -> float:
    """Requests/s reported by wrk; fails if any answer was not 2xx/3xx."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "-H",
            "Accept: application/json",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"cannot parse wrk output for {url}:\n{out}")
    return float(match.group(1))


def measure(
    server: Server, paths: list[str], *, rounds: int, duration: float, connections: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {p: [] for p in paths}
    for path in paths:  # warm up: imports, pools, first check evaluation
        wrk(server.url(path), duration=1, connections=connections)
    for _ in range(rounds):
        for path in paths:
            samples[path].append(wrk(server.url(path), duration=duration, connections=connections))
    return {p: statistics.median(v) for p, v in samples.items()}


def middleware_overhead(redis_url: str, workdir: Path, *, rounds: int) -> tuple[float, float]:
    """Median seconds per /api/ping/ through the WSGI handler without and with the middleware."""
    code = r"""
import io, statistics, sys, time
import django
django.setup()
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

def handler(with_probe):
    mw = list(settings.MIDDLEWARE)
    if not with_probe:
        mw.remove("django_arena_scale.middleware.ProbeMiddleware")
    settings.MIDDLEWARE = mw
    return WSGIHandler()

environ = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/api/ping/", "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1",
}
original = list(settings.MIDDLEWARE)
handlers = {}
for with_probe in (False, True):
    settings.MIDDLEWARE = original
    handlers[with_probe] = handler(with_probe)

def run(h, n):
    t0 = time.perf_counter()
    for _ in range(n):
        b"".join(h(dict(environ), lambda s, hdrs, exc=None: None))
    return (time.perf_counter() - t0) / n

for h in handlers.values():
    run(h, 500)
samples = {False: [], True: []}
for _ in range(int(sys.argv[1])):
    for with_probe in (False, True):
        samples[with_probe].append(run(handlers[with_probe], 3000))
print(statistics.median(samples[False]), statistics.median(samples[True]))
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
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; on Debian/Ubuntu run: apt-get install -y wrk")
    opts = {"rounds": args.rounds, "duration": args.duration, "connections": args.connections}
    workdir = Path(tempfile.mkdtemp(prefix="arena-bench-"))
    redis = RedisServer().start()
    servers: list[Server] = []
    try:
        server = Server(_env(redis.url, workdir), workdir)
        servers.append(server)
        for path in ("/live/", "/health/", "/ready/", "/api/ping/", "/ht/"):
            deadline = time.monotonic() + 20
            while _status(server.url(path)) != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{path} does not answer 200; see {workdir}")
                time.sleep(0.2)

        print(
            "# probes benchmark: gunicorn gthread 2x4, wrk -t2 "
            f"-c{args.connections} -d{args.duration}s, {args.rounds} rounds (median)"
        )
        rps = measure(server, ["/api/ping/", "/live/", "/health/"], **opts)
        print(f"/api/ping/ (JsonResponse view)  {rps['/api/ping/']:9.0f} req/s")
        for path in ("/live/", "/health/"):
            ratio = rps[path] / rps["/api/ping/"]
            print(f"{path:<31} {rps[path]:9.0f} req/s  ratio {ratio:.2f}x  (target >= 1.5x)")

        rps = measure(server, ["/ht/", "/ready/"], **opts)
        ratio = rps["/ready/"] / rps["/ht/"]
        print(f"django-health-check 4 (db+cache) {rps['/ht/']:9.0f} req/s")
        print(
            f"/ready/ (db+redis, cached 1 s)  {rps['/ready/']:9.0f} req/s  "
            f"ratio {ratio:.2f}x  (target >= 3x)"
        )

        server.stop()
        servers.remove(server)
        uncached = Server(_env(redis.url, workdir, ARENA_SCALE_CHECK_CACHE_TTL="0"), workdir)
        servers.append(uncached)
        rps_uncached = measure(uncached, ["/ready/"], **opts)["/ready/"]
        print(
            f"/ready/ with ARENA_SCALE_CHECK_CACHE_TTL=0 (info) {rps_uncached:9.0f} req/s  "
            f"ratio {rps_uncached / rps['/ht/']:.2f}x vs django-health-check"
        )

        without, with_probe = middleware_overhead(
            redis.url, workdir, rounds=max(5, args.rounds * 3)
        )
        cost = (with_probe - without) / without
        print(
            f"/api/ping/ in-process: {without * 1e6:.1f} us without, {with_probe * 1e6:.1f} us "
            f"with ProbeMiddleware  cost {cost * 100:+.2f}%  (target <= 2%)"
        )
    finally:
        for server in servers:
            server.stop()
        redis.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
