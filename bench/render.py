"""Render benchmark.  Run: ``.venv/bin/python bench/render.py``.

Renders every file of the compose target (compose, nginx, server configs, deploy.sh, k8s/,
Dockerfile, OPERATIONS.md) plus the local variant for N=500 replicas, building a fresh
DeploymentSpec each time (validation and derived numbers included), and prints the median
time against the same render for N=10 measured in the same run.  Target: N=500 under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from django_arena_scale.deploy import render_all  # noqa: E402
from django_arena_scale.deploy._spec import DeploymentSpec  # noqa: E402

TARGET_SECONDS = 1.0


def render_every_file(replicas: int) -> int:
    """One full render of both targets; returns the bytes produced."""
    size = 0
    for target in ("compose", "local"):
        spec = DeploymentSpec(replicas=replicas, target=target)
        size += sum(len(text) for text in render_all(spec).files.values())
    return size


def measure(replicas: int, rounds: int) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(rounds):
        start = time.perf_counter()
        size = render_every_file(replicas)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    render_every_file(10)  # imports and first-call costs out of the measurement
    small, small_size = measure(10, args.rounds)
    large, large_size = measure(500, args.rounds)
    print(f"N=10:  {small * 1000:8.1f} ms  ({small_size / 1024:.0f} KiB, median of {args.rounds})")
    print(f"N=500: {large * 1000:8.1f} ms  ({large_size / 1024:.0f} KiB, median of {args.rounds})")
    print(f"ratio N=500 / N=10: {large / small:.1f}x")
    verdict = "PASS" if large < TARGET_SECONDS else "FAIL"
    print(f"target N=500 < {TARGET_SECONDS:.0f} s: {verdict}")
    return 0 if large < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
