"""What recycling a worker (gunicorn ``max_requests``) costs in the generated server config.

Run: ``.venv/bin/python bench/recycling.py [--rounds 3] [--duration 8] [--max-requests 0,1000]``

A ``run_lb_stack`` of the example (one API replica) renders the gunicorn config; the script then
starts one more gunicorn per ``--max-requests`` value from that same config (jitter 0), each on
its own port with the replica's environment, and loads ``/api/ping/`` on each directly with wrk,
round after round (the order alternating).  Per server and round it prints req/s, the CPU per
request of the whole process tree (master, workers, and the workers it reaped) and how many
workers were recycled (gunicorn's "Autorestarting worker" lines).  At the end, for every value
but 0, the extra CPU one recycling costs: (its CPU - its requests x the CPU per request without
recycling, measured in the same rounds) / recycled workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena_project.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one

from bench._load import cpu_seconds, local_stack, served, wrk  # noqa: E402

from django_arena_scale.stack._host import free_port_range  # noqa: E402

PATH = "/api/ping/"
RECYCLED = "Autorestarting worker"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-requests", default="0,1000", help="comma-separated values")
    args = parser.parse_args()
    try:
        values = [int(v) for v in args.max_requests.split(",")]
    except ValueError:
        msg = f"--max-requests {args.max_requests!r}: expected integers, e.g. 0,1000"
        raise SystemExit(msg) from None
    if 0 not in values:
        values.insert(0, 0)  # the baseline every other value is measured against

    rows: dict[int, list[tuple[float, float, int, float, int]]] = {v: [] for v in values}
    with contextlib.ExitStack() as running:
        stack = running.enter_context(
            local_stack(start=25000, prefix="arena-bench-recycling-", env={}, replicas=1)
        )
        name = stack.spec.web_names[0]
        env = stack.replica_env(name)
        env.pop("ARENA_SCALE_DRAIN_FILE", None)
        config = stack.conf_dir / "gunicorn.conf.py"
        base = free_port_range(len(values), start=26300)
        servers: dict[int, tuple[str, int, Path]] = {}
        for offset, value in enumerate(values):
            port = base + offset
            log = stack.dir / f"recycling-{value}.log"
            server_env = dict(env)
            server_env["PROMETHEUS_MULTIPROC_DIR"] = str(stack.dir / f"metrics-recycling-{value}")
            argv = [sys.executable, "-m", "gunicorn", "--config", str(config)]
            argv += ["--max-requests", str(value), "--max-requests-jitter", "0"]
            argv += ["--bind", f"127.0.0.1:{port}", stack.spec.wsgi_app]
            proc = running.enter_context(
                served(
                    argv,
                    cwd=ROOT / "example_project",
                    env=server_env,
                    ready_url=f"http://127.0.0.1:{port}{PATH}",
                    what=f"gunicorn --max-requests {value}",
                    log=log,
                )
            )
            servers[value] = (f"http://127.0.0.1:{port}{PATH}", proc.pid, log)
        for url, _, _ in servers.values():
            wrk(url, duration=2, connections=args.connections)
        for index in range(args.rounds):
            order = list(servers.items())
            for value, (url, pid, log) in order if index % 2 == 0 else reversed(order):
                recycled_before = log.read_text(errors="replace").count(RECYCLED)
                cpu_before = cpu_seconds([pid])
                result = wrk(url, duration=args.duration, connections=args.connections)
                used = cpu_seconds([pid]) - cpu_before
                recycled = log.read_text(errors="replace").count(RECYCLED) - recycled_before
                per_request = used / max(1, result.requests) * 1e6
                rows[value].append((result.rps, per_request, recycled, used, result.requests))
                print(f"round {index + 1} max_requests {value:>6}: {result.rps:7.0f} req/s  "
                      f"{per_request:5.0f} us CPU/request  {recycled} recycled",
                      flush=True)  # fmt: skip

    baseline = statistics.median(r[1] for r in rows[0])
    print()
    print(f"gunicorn with the generated config, wrk -c{args.connections} on {PATH} directly, "
          f"{args.rounds} rounds of {args.duration}s, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for value, results in rows.items():
        rps = statistics.median(r[0] for r in results)
        per_request = statistics.median(r[1] for r in results)
        line = f"max_requests {value:>6}: {rps:7.0f} req/s  {per_request:5.0f} us CPU/request"
        recycled = sum(r[2] for r in results)
        if value and recycled:
            extra = sum(r[3] - r[4] * baseline / 1e6 for r in results) / recycled
            line += f"  {recycled} recycled, {extra * 1000:.0f} ms CPU per recycling"
        print(line)


if __name__ == "__main__":
    main()
