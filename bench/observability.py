"""What metrics and request IDs cost per request.

Run: ``.venv/bin/python bench/observability.py [--rounds 6] [--duration 5] [--connections 8]``
or ``.venv/bin/python bench/observability.py --in-process [--rounds 6] [--requests 5000]``
or ``.venv/bin/python bench/observability.py --middleware [--rounds 3]``
or ``.venv/bin/python bench/observability.py --stack [--rounds 8] [--duration 5] [--replicas 2]``

Two gunicorn servers of the example project (gthread, ``--workers`` x ``--threads``), started
the same way with the package's metrics hooks (``on_starting``, ``child_exit``, ``on_exit``),
differing only in ``ARENA_BENCH_OBSERVABILITY`` (``bench/observability_settings.py``):

* **on**: the example as it ships: ``RequestIDMiddleware``, ``MetricsMiddleware`` (multiprocess
  mode, one ``PROMETHEUS_MULTIPROC_DIR``), the request-id log filter;
* **off**: those removed and ``ARENA_SCALE_METRICS = False``.

wrk loads ``/api/ping/`` (the trivial view, where a fixed per-request cost shows most) directly,
sending an ``X-Request-ID`` as nginx does.  Rounds alternate the order.  The figure is the
servers' own CPU time per request (user + system of master and workers, psutil), median over
rounds: ``on/off - 1`` is the per-request overhead (target: at most 3%); it is less disturbed
by other work on the machine than req/s, which is printed too (with p99).  Afterwards the
"on" server's own ``arena_http_requests_total`` is compared with what wrk counted.

``--in-process`` takes the network, the server and the other processes on the machine out of
the figure: one Python process per round builds two WSGI handlers of the example, with its
middleware and without the two measured, and calls them (``/api/ping/`` with an
``X-Request-ID``) in alternating batches of 100, reporting the CPU time per request of each.
Both run in the same process at the same time, so neither the machine's state nor the process's
memory layout (which moved separate processes by 10-20%) favours one; the overhead is the
median of the per-round ratios.

``--stack`` measures it where it is paid: two ``run_lb_stack`` stacks of the example (the
generated nginx and gunicorn configs, ``--replicas`` API replicas, nginx's per-client limits
lifted), one as it ships and one with ``ARENA_BENCH_OBSERVABILITY=off`` (or ``--variant
metrics`` / ``request_id``: only that one of the two), loaded through nginx in alternating
rounds.  It prints req/s, p99 and the CPU per request of each stack (nginx + API replicas +
Redis), with the per-round on/off ratios, and two overhead figures:

* **A/B**: the median of the per-round on/off CPU ratios, minus one;
* **added CPU / stack CPU**: the CPU the two middleware add per request, measured in-process in
  the same run (``--in-process``: two handlers in one process, steady to about a microsecond),
  divided by the "off" stack's CPU per request (always both middleware: for ``--variant`` an
  upper bound).  The round-to-round spread of a whole stack on a shared 2-CPU machine is
  several percent, larger than the target, so this is the figure that can confirm it; the A/B
  figure shows that nothing else (the servers, nginx) changes.

``--middleware`` times only what the two middleware add: one process calls a view that returns
a prebuilt response through no middleware, ``MetricsMiddleware``, ``RequestIDMiddleware`` and
both (multiprocess mode), 100,000 times each per round; the difference is the CPU they cost per
request, to set against a whole request's CPU from the server mode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench._load import cpu_seconds, served, wrk  # noqa: E402

from django_arena_scale.stack._host import free_port_range  # noqa: E402

PATH = "/api/ping/"
TOKEN = secrets.token_urlsafe(16)
HOOKS = (
    "from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401\n"
    "    child_exit,\n    on_exit,\n    on_starting,\n)\n"
)


@contextlib.contextmanager
def server(variant: str, workdir: Path, workers: int, threads: int) -> Iterator[tuple[int, int]]:
    port = free_port_range(1, start=27000 if variant == "on" else 27500)
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "example_project"),
                                           str(ROOT / "bench")]),
            "DJANGO_SETTINGS_MODULE": "observability_settings",
            "ARENA_BENCH_OBSERVABILITY": variant,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SQLITE_PATH": str(workdir / "db.sqlite3"),
            "ARENA_SCALE_STATUS_TOKEN": TOKEN,
            "ARENA_REPLICA_NAME": variant,
        }
    )  # fmt: skip
    if variant == "on":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics-on")
    hooks = workdir / "hooks.py"
    hooks.write_text(HOOKS)
    argv = [sys.executable, "-m", "gunicorn", "--config", str(hooks), "arena_project.wsgi"]
    argv += ["-k", "gthread", "-w", str(workers), "--threads", str(threads)]
    argv += ["-b", f"127.0.0.1:{port}", "--keep-alive", "75", "--log-level", "warning"]
    with served(
        argv,
        cwd=ROOT / "example_project",
        env=env,
        ready_url=f"http://127.0.0.1:{port}{PATH}",
        what=f"the {variant} server",
        log=workdir / f"{variant}.log",
    ) as proc:
        yield port, proc.pid


def counted(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    pattern = r'^arena_http_requests_total\{[^}]*route="api/ping/"[^}]*\} ([\d.e+]+)$'
    return round(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))


# One round of the in-process mode: two WSGI handlers in one process, the example's middleware
# and the same without the two measured, called in alternating batches; CPU time per request.
_IN_PROCESS = """
import io, sys, time
import django
django.setup()
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
REMOVED = {"django_arena_scale.requestid.RequestIDMiddleware",
           "django_arena_scale.metrics.MetricsMiddleware"}
full = list(settings.MIDDLEWARE)
assert REMOVED <= set(full), "the settings lack a measured middleware"
handlers = {"on": WSGIHandler()}
settings.MIDDLEWARE = [m for m in full if m not in REMOVED]
handlers["off"] = WSGIHandler()
settings.MIDDLEWARE = full
base = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/api/ping/", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1", "HTTP_X_REQUEST_ID": "bench-in-process",
    "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
}
seen = {}
def call(name):
    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO()
    response = handlers[name](environ, lambda status, headers, exc_info=None: seen.update(
        {name: any(k == "X-Request-ID" for k, _ in headers)}))
    b"".join(response)
    response.close()
for name in handlers:
    for _ in range(500):
        call(name)
assert seen == {"on": True, "off": False}, seen  # the two handlers differ as intended
count, batch = int(sys.argv[1]), 100
spent = {"on": 0.0, "off": 0.0}
for index in range(max(1, count // batch)):
    for name in ("on", "off") if index % 2 == 0 else ("off", "on"):
        start = time.process_time()
        for _ in range(batch):
            call(name)
        spent[name] += time.process_time() - start
requests = max(1, count // batch) * batch
print(spent["on"] / requests * 1e6, spent["off"] / requests * 1e6)
"""


_MIDDLEWARE = """
import sys, time
import django
django.setup()
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import resolve
from django_arena_scale.metrics import MetricsMiddleware
from django_arena_scale.requestid import RequestIDMiddleware
request = RequestFactory().get("/api/ping/", HTTP_X_REQUEST_ID="bench-middleware")
request.resolver_match = resolve("/api/ping/")
response = HttpResponse(b"{}")
def view(request):
    return response
chains = {
    "none": view,
    "metrics": MetricsMiddleware(view),
    "request_id": RequestIDMiddleware(view),
    "both": RequestIDMiddleware(MetricsMiddleware(view)),
}
count = 100_000
for round_ in range(int(sys.argv[1])):
    costs = {}
    for name, chain in chains.items():
        start = time.process_time()
        for _ in range(count):
            chain(request).close()
        costs[name] = (time.process_time() - start) / count * 1e6
    print(" ".join(f"{name}={value:.2f}" for name, value in costs.items()), flush=True)
"""


def _process_env() -> dict[str, str]:
    """The environment of one in-process or middleware measurement (the example's settings)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "example_project"), str(ROOT / "bench")]
        ),
        "DJANGO_SETTINGS_MODULE": "observability_settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }


def middleware(rounds: int) -> None:
    env = _process_env()
    with tempfile.TemporaryDirectory(prefix="arena-bench-obs-") as tmp:
        env["SQLITE_PATH"] = str(Path(tmp) / "db.sqlite3")
        env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        out = subprocess.run(
            [sys.executable, "-c", _MIDDLEWARE, str(rounds)],
            cwd=ROOT / "example_project", env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if out.returncode:
        raise SystemExit(out.stdout + out.stderr)
    rows = [dict(item.split("=") for item in line.split()) for line in out.stdout.splitlines()]
    for index, row in enumerate(rows, 1):
        print(f"round {index}: " + ", ".join(f"{k} {float(v):.2f} us" for k, v in row.items()))
    median = {k: statistics.median(float(r[k]) for r in rows) for k in rows[0]}
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; 100,000 calls per chain and round")  # fmt: skip
    for name in ("metrics", "request_id", "both"):
        print(f"{name:>10}: +{median[name] - median['none']:.2f} us CPU per request")


def in_process(rounds: int, requests: int, *, quiet: bool = False) -> tuple[float, float]:
    """CPU per request (on, off) through Django's WSGI handler in-process, medians."""
    env = {**_process_env(), "ARENA_BENCH_OBSERVABILITY": "on"}
    results: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="arena-bench-obs-") as tmp:
        env["SQLITE_PATH"] = str(Path(tmp) / "db.sqlite3")
        for index in range(rounds):
            directory = Path(tmp) / f"metrics-{index}"  # multiprocess mode, as under gunicorn
            directory.mkdir()
            out = subprocess.run(
                [sys.executable, "-c", _IN_PROCESS, str(requests)],
                cwd=ROOT / "example_project",
                env={**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode:
                raise SystemExit(out.stdout + out.stderr)
            on, off = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
            results["on"].append(on)
            results["off"].append(off)
            if not quiet:
                print(f"round {index + 1}: on {on:7.1f}  off {off:7.1f} us CPU/request "
                      f"(+{on - off:.1f})", flush=True)  # fmt: skip
    if quiet:
        return statistics.median(results["on"]), statistics.median(results["off"])
    ratios = [a / b for a, b in zip(results["on"], results["off"], strict=True)]
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; in-process WSGI, {rounds} rounds x "
          f"{requests} requests")  # fmt: skip
    print(f"CPU per request  on: {on:.1f} us  off: {off:.1f} us  "
          f"(+{on - off:.1f} us for metrics + request ids)")  # fmt: skip
    print(f"per round on/off: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(
        f"of the WSGI handler alone (median of per-round ratios): "
        f"{statistics.median(ratios) - 1:.1%}; the 3% target is against a whole request's CPU "
        "through the stack (--stack)"
    )
    return on, off


def through_stacks(args: argparse.Namespace) -> None:
    """Two generated stacks, with and without metrics and request ids, through nginx."""
    from bench._load import local_stack, stack_parts

    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one
    sides: dict[str, Any] = {}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    rps: dict[str, list[float]] = {"on": [], "off": []}
    p99: dict[str, list[float]] = {"on": [], "off": []}
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as running:
        for offset, variant in enumerate(("on", "off")):
            sides[variant] = running.enter_context(
                local_stack(
                    start=28000 + 100 * offset,
                    prefix=f"arena-bench-obs-{variant}-",
                    env={"ARENA_BENCH_OBSERVABILITY": args.variant if variant == "on" else "off"},
                    replicas=args.replicas,
                    settings_module="observability_settings",
                )
            )
        parts = {
            variant: [pid for pids in stack_parts(stack).values() for pid in pids]
            for variant, stack in sides.items()
        }
        urls = {variant: stack.url.rstrip("/") + PATH for variant, stack in sides.items()}
        for url in urls.values():  # warm every worker
            wrk(url, duration=2, connections=args.connections)
        for index in range(args.rounds):
            # One stack at a time, the order alternating: loaded together, the stack that got
            # less throughput paid more CPU per request (fewer requests per wake-up), which
            # took it still less: the two fed each other's differences.
            for variant in ("on", "off") if index % 2 == 0 else ("off", "on"):
                before = cpu_seconds(parts[variant])
                result = wrk(
                    urls[variant],
                    duration=args.duration,
                    connections=args.connections,
                    latency=True,
                )
                used = (cpu_seconds(parts[variant]) - before) / result.requests * 1e6
                cpu[variant].append(used)
                rps[variant].append(result.rps)
                p99[variant].append(result.p99_ms or 0.0)
                print(f"round {index + 1} {variant:>3}: {result.rps:8.0f} req/s  "
                      f"p99 {result.p99_ms:.2f} ms  stack CPU {used:.0f} us/request",
                      flush=True)  # fmt: skip
    print("in-process, what the two middleware add (two handlers per process) ...", flush=True)
    added_on, added_off = in_process(max(4, args.rounds), args.requests, quiet=True)
    load_after = os.getloadavg()[0]
    off_cpu = statistics.median(cpu["off"])
    ratios = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    added = added_on - added_off
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.replicas} API replicas per stack, "
          f"wrk -c {args.connections} through nginx, {args.rounds} rounds of "
          f"{args.duration:g}s; load average {load_before:.1f} before, "
          f"{load_after:.1f} after")  # fmt: skip
    for variant in ("on", "off"):
        print(f"{variant:>3}: {statistics.median(rps[variant]):6.0f} req/s  p99 "
              f"{statistics.median(p99[variant]):.1f} ms  stack CPU "
              f"{statistics.median(cpu[variant]):.0f} us/request")  # fmt: skip
    print(f"per round on/off stack CPU per request: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"A/B overhead (median of per-round ratios): {statistics.median(ratios) - 1:+.1%}")
    print(f"added CPU / stack CPU: {added_on:.1f} - {added_off:.1f} = {added:+.1f} us in-process, "
          f"/ {off_cpu:.0f} us per request of the stack without them = {added / off_cpu:+.1%} "
          "(target: at most 3%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--in-process", action="store_true", help="no server, no network")
    parser.add_argument("--requests", type=int, default=5000, help="per in-process round")
    parser.add_argument("--middleware", action="store_true", help="the middleware alone")
    parser.add_argument("--stack", action="store_true", help="two stacks through nginx")
    parser.add_argument("--replicas", type=int, default=2, help="API replicas per stack")
    parser.add_argument(
        "--variant",
        choices=("on", "metrics", "request_id"),
        default="on",
        help="--stack: what the measured stack keeps (both, or one of the two)",
    )
    args = parser.parse_args()
    if args.stack:
        through_stacks(args)
        return
    if args.middleware:
        middleware(args.rounds)
        return
    if args.in_process:
        in_process(args.rounds, args.requests)
        return
    rps: dict[str, list[float]] = {"on": [], "off": []}
    p99: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    sent = {"on": 0, "off": 0}
    with tempfile.TemporaryDirectory(prefix="arena-bench-obs-") as tmp:
        workdir = Path(tmp)
        migrate = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput"],
            cwd=ROOT / "example_project",
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "example_project"),
                                               str(ROOT / "bench")]),
                "DJANGO_SETTINGS_MODULE": "observability_settings",
                "SECRET_KEY": secrets.token_urlsafe(50),
                "SQLITE_PATH": str(workdir / "db.sqlite3"),
            },
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if migrate.returncode:
            raise SystemExit(migrate.stdout + migrate.stderr)
        with (
            server("on", workdir, args.workers, args.threads) as on,
            server("off", workdir, args.workers, args.threads) as off,
        ):
            ports = {"on": on[0], "off": off[0]}
            pids = {"on": on[1], "off": off[1]}
            for variant in ports:  # warm-up
                wrk(f"http://127.0.0.1:{ports[variant]}{PATH}", duration=2, connections=4)
            before = counted(ports["on"])
            for index in range(args.rounds):
                order = ("on", "off") if index % 2 == 0 else ("off", "on")
                for variant in order:
                    cpu_before = cpu_seconds([pids[variant]])
                    result = wrk(
                        f"http://127.0.0.1:{ports[variant]}{PATH}",
                        duration=args.duration,
                        connections=args.connections,
                        headers=[f"X-Request-ID: bench-{index}-{variant}"],
                        latency=True,
                    )
                    cpu_us = (cpu_seconds([pids[variant]]) - cpu_before) / result.requests * 1e6
                    cpu[variant].append(cpu_us)
                    rps[variant].append(result.rps)
                    p99[variant].append(result.p99_ms or 0.0)
                    sent[variant] += result.requests
                    print(f"round {index + 1} {variant:>3}: {result.rps:8.0f} req/s  "
                          f"p99 {result.p99_ms:.2f} ms  server CPU {cpu_us:.0f} us/request",
                          flush=True)  # fmt: skip
            after = counted(ports["on"])
    on_rps, off_rps = statistics.median(rps["on"]), statistics.median(rps["off"])
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; gthread {args.workers}x{args.threads}, "
          f"wrk -c {args.connections}, {args.rounds} rounds of {args.duration:g}s")  # fmt: skip
    print(f"GET {PATH}  on: {on_rps:.0f} req/s (p99 {statistics.median(p99['on']):.2f} ms)  "
          f"off: {off_rps:.0f} req/s (p99 {statistics.median(p99['off']):.2f} ms)")  # fmt: skip
    print(f"on/off req/s ratio: {on_rps / off_rps:.3f} (throughput overhead "
          f"{1 - on_rps / off_rps:.1%}; noisy on a shared machine)")  # fmt: skip
    on_cpu, off_cpu = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    print(f"server CPU per request  on: {on_cpu:.0f} us  off: {off_cpu:.0f} us  "
          f"overhead: {on_cpu / off_cpu - 1:.1%}  (target: at most 3%)")  # fmt: skip
    ratios = [a / b for a, b in zip(rps["on"], rps["off"], strict=True)]
    print(f"per round on/off req/s: {', '.join(f'{r:.3f}' for r in ratios)}")
    cpu_ratios = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    print(f"per round on/off CPU per request: {', '.join(f'{r:.3f}' for r in cpu_ratios)}")
    print(
        f"arena_http_requests_total on the 'on' server grew by {after - before}; wrk counted "
        f"{sent['on']} (wrk leaves out requests in flight when it stops; the server counts them)"
    )


if __name__ == "__main__":
    main()
