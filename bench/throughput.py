"""What the generated stack costs against the same app run by hand.

Run: ``.venv/bin/python bench/throughput.py [--rounds 3] [--duration 8] [--connections 32]``

In one run, on the same CPUs, against the same Redis and the same database:

* **stack**: ``run_lb_stack``'s ``LocalStack`` with the generated nginx and gunicorn configs and
  the spec's defaults (``--replicas``, 2 by default); nginx's per-IP limits are lifted, since one
  client (wrk) drives all the load;
* **by hand**: ``gunicorn arena_project.wsgi -w <cpus>`` (sync workers), direct, with the
  environment of one stack replica.

``--set FIELD=VALUE`` changes a DeploymentSpec field of the stack; ``--variant
FIELD=VALUE,...`` (repeatable) adds another stack with those fields, measured in the same
interleaved rounds, so two server layouts are compared on the same machine at the same time.

Endpoints: ``/api/ping/`` (trivial view), ``/api/whoami/`` with a logged-in session (session +
user load) and ``/api/messages/`` (a database read).  Rounds alternate the order; the medians are
printed with p99 latency, the RSS of each replica and of the by-hand server, and the ratios
stack / by hand (the target is at least 0.9 for every endpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena_project.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one

from bench._load import (  # noqa: E402
    cpu_seconds,
    local_stack,
    process_tree,
    served,
    stack_parts,
    wrk,
)

from django_arena_scale.stack._runner import (  # noqa: E402
    LocalStack,
    free_port_range,
)

DEMO = {"username": "bench", "password": secrets.token_urlsafe(16)}
ENDPOINTS = (
    ("ping", "/api/ping/", False),
    ("session + user", "/api/whoami/", True),
    ("db read", "/api/messages/?limit=20", False),
)


@contextlib.contextmanager
def generated_stack(
    replicas: int, fields: dict[str, Any], *, start: int = 25000
) -> Iterator[LocalStack]:
    env = {"ARENA_DEMO_USER": DEMO["username"], "ARENA_DEMO_PASSWORD": DEMO["password"]}
    with local_stack(
        start=start, prefix="arena-bench-throughput-", env=env, replicas=replicas, **fields
    ) as stack:
        yield stack


@contextlib.contextmanager
def by_hand(env: dict[str, str], workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``gunicorn arena_project.wsgi -w N`` (sync workers), as a user runs it by hand."""
    port = free_port_range(1, start=26000)
    env = {k: v for k, v in env.items() if k != "ARENA_SCALE_DRAIN_FILE"}
    env["ARENA_REPLICA_NAME"] = "by-hand"
    argv = [sys.executable, "-m", "gunicorn", "arena_project.wsgi", "-w", str(workers)]
    argv += ["-b", f"127.0.0.1:{port}"]
    with served(
        argv,
        cwd=ROOT / "example_project",
        env=env,
        ready_url=f"http://127.0.0.1:{port}/api/ping/",
        what="the by-hand gunicorn",
    ) as proc:
        yield port, proc


def login(base_url: str) -> str:
    """Log the bench user in; returns the Cookie header (sessions live in the shared Redis)."""
    request = urllib.request.Request(
        f"{base_url}/auth/login/",
        data=json.dumps(DEMO).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
    return "; ".join(c.split(";", 1)[0] for c in cookies)


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process tree in MiB.  RSS counts every shared page once per process; PSS
    splits shared pages between the processes that map them (preloaded workers share the
    imported code with their master), so PSS is what the tree really occupies."""
    import psutil

    rss = pss = 0.0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def parse_sets(values: list[str]) -> dict[str, Any]:
    """``--set workers=2 --set threads=4``: DeploymentSpec fields for the stack."""
    fields: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE, e.g. workers=2")
        try:
            fields[name] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name] = raw
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="by hand")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a DeploymentSpec field of the stack (repeatable), e.g. --set workers=2",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="FIELD=VALUE[,FIELD=VALUE]",
        help="one more stack with these fields besides --set, measured in the same rounds "
        "(repeatable), e.g. --variant workers=1,threads=8",
    )
    args = parser.parse_args()
    overrides = parse_sets(args.set)
    variants = {f"stack {v}": {**overrides, **parse_sets(v.split(","))} for v in args.variant}

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    #: (endpoint, part) -> CPU microseconds per request, one entry per round
    cpu: dict[tuple[str, str], list[float]] = {}
    memory: dict[str, tuple[float, float]] = {}
    load_before = os.getloadavg()
    with contextlib.ExitStack() as running:
        # "replicas" is the stack's size (--replicas), not a DeploymentSpec field to pass on.
        replicas = int(overrides.pop("replicas", args.replicas))
        stack = running.enter_context(generated_stack(replicas, overrides))
        stacks = {"stack": stack}
        for offset, (side, fields) in enumerate(variants.items(), start=1):
            size = int(fields.pop("replicas", replicas))
            stacks[side] = running.enter_context(
                generated_stack(size, fields, start=25000 + 100 * offset)
            )
        api = stack.spec.web_names[0]
        port, hand = running.enter_context(by_hand(stack.replica_env(api), args.workers))
        urls = {side: s.url.rstrip("/") for side, s in stacks.items()}
        urls["by hand"] = f"http://127.0.0.1:{port}"
        parts = {side: stack_parts(s) for side, s in stacks.items()}
        parts["by hand"] = {"server": [hand.pid], "redis": parts["stack"]["redis"]}
        # Each stack keeps its sessions in its own Redis; by hand shares the first stack's.
        cookies = {side: login(url) for side, url in urls.items() if side != "by hand"}
        cookies["by hand"] = cookies["stack"]
        for side, base in urls.items():  # warm every worker's imports and pools
            for _, path, session in ENDPOINTS:
                headers = [f"Cookie: {cookies[side]}"] if session else []
                wrk(base + path, duration=2, connections=args.connections, headers=headers)
        for i in range(args.rounds):
            sides = list(urls.items())
            for side, base in sides if i % 2 == 0 else reversed(sides):
                for name, path, session in ENDPOINTS:
                    headers = [f"Cookie: {cookies[side]}"] if session else []
                    before = {part: cpu_seconds(p) for part, p in parts[side].items()}
                    result = wrk(
                        base + path,
                        duration=args.duration,
                        connections=args.connections,
                        headers=headers,
                        latency=True,
                    )
                    results.setdefault((side, name), []).append(
                        (result.rps, result.p99_ms or float("nan"))
                    )
                    for part, pids in parts[side].items():
                        used = cpu_seconds(pids) - before[part]
                        cpu.setdefault((name, f"{side}: {part}"), []).append(
                            used / max(1, result.requests) * 1e6
                        )
        for side, s in stacks.items():
            for name, replica in s.replicas.items():
                if replica.process.pid:
                    key = name if side == "stack" else f"{side} {name}"
                    memory[key] = memory_mib(replica.process.pid)
        memory["by hand"] = memory_mib(hand.pid)
    load_after = os.getloadavg()

    cpus = os.cpu_count() or 1
    spec_note = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
    print(
        f"throughput: wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds} "
        f"interleaved rounds, {cpus} CPUs; stack = {replicas} replicas behind nginx "
        f"(generated configs, spec {spec_note}), by hand = gunicorn -w {args.workers} sync, "
        f"direct; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    for side in stacks:
        print(f"{side}:")
        print(f"{'endpoint':<16}{'by hand req/s':>14}{'p99 ms':>8}{'stack req/s':>13}"
              f"{'p99 ms':>8}{'ratio':>7}{'stack req/s/CPU':>17}")  # fmt: skip
        for name, _, _ in ENDPOINTS:
            hand_rps = statistics.median(r for r, _ in results[("by hand", name)])
            hand_p99 = statistics.median(p for _, p in results[("by hand", name)])
            stack_rps = statistics.median(r for r, _ in results[(side, name)])
            stack_p99 = statistics.median(p for _, p in results[(side, name)])
            print(
                f"{name:<16}{hand_rps:>14,.0f}{hand_p99:>8.1f}{stack_rps:>13,.0f}"
                f"{stack_p99:>8.1f}{stack_rps / hand_rps:>7.2f}{stack_rps / cpus:>17,.0f}"
            )
    print("CPU per request (us, median of rounds; wrk's own CPU not included):")
    for name, _, _ in ENDPOINTS:
        row = {part: statistics.median(v) for (n, part), v in cpu.items() if n == name}
        print(f"  {name:<16}" + ", ".join(f"{part} {us:,.0f}" for part, us in row.items()))
    print(
        "memory (MiB, process tree, RSS / PSS): "
        + ", ".join(f"{k} {rss:.0f} / {pss:.0f}" for k, (rss, pss) in memory.items())
    )


if __name__ == "__main__":
    main()
