"""The session + database endpoints through nginx with PostgreSQL: direct vs PgBouncer.

Run: ``.venv/bin/python bench/database.py [--rounds 3] [--duration 6] [--connections 32]``

Two local stacks (``LocalStack`` with ``postgres=True``: nginx, Redis, ``--replicas`` gthread
replicas and a throwaway PostgreSQL primary each), identical but for the database path:

* **direct**: the replicas connect to PostgreSQL itself (``DATABASE_URL`` = the primary);
* **PgBouncer**: through PgBouncer in transaction mode (``DATABASE_PGBOUNCER=1``).

``CONN_MAX_AGE`` is the example's default (0: a connection per request) unless
``--conn-max-age`` says otherwise.  Endpoints, with a logged-in session: ``/api/whoami/``
(session from Redis + the user row) and ``/api/messages/?limit=20`` (session + user + a read).
Both stacks run for the whole bench; rounds alternate which goes first, and the medians are
printed with p99 latency (wrk stops the bench on any non-2xx answer) and the peak of the
primary's client backends seen during the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena_project.settings")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one

from bench._load import local_stack, wrk  # noqa: E402
from bench.throughput import DEMO, login  # noqa: E402

from django_arena_scale.stack import _postgres as postgres  # noqa: E402
from django_arena_scale.stack._runner import LocalStack  # noqa: E402

ENDPOINTS = (
    ("session + user", "/api/whoami/"),
    ("session + db read", "/api/messages/?limit=20"),
)


@contextlib.contextmanager
def pg_stack(
    *, pgbouncer: bool, replicas: int, start: int, env: dict[str, str]
) -> Iterator[LocalStack]:
    env = {"ARENA_DEMO_USER": DEMO["username"], "ARENA_DEMO_PASSWORD": DEMO["password"], **env}
    with local_stack(
        start=start,
        prefix="arena-bench-database-",
        env=env,
        options={"postgres": True},
        topology="single",
        app_server="gunicorn",
        replicas=replicas,
        pgbouncer=pgbouncer,
    ) as stack:
        yield stack


@contextlib.contextmanager
def backends_peak(stack: LocalStack) -> Iterator[list[int]]:
    """Sample the primary's client backends every 20 ms; the list holds the peak (minus the
    sampler's own connection) when the block ends."""
    assert stack.database is not None
    assert stack.database.primary is not None
    primary = stack.database.primary
    peak = [0]
    done = threading.Event()
    conn = postgres.connect(primary.port, password=primary.password)

    def sample() -> None:
        while not done.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            ).fetchone()
            peak[0] = max(peak[0], int(row[0]) - 1)
            done.wait(0.02)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--conn-max-age", default="0", help="the replicas' CONN_MAX_AGE")
    args = parser.parse_args()

    env = {"CONN_MAX_AGE": args.conn_max_age}
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    with (
        pg_stack(pgbouncer=False, replicas=args.replicas, start=25000, env=env) as direct,
        pg_stack(pgbouncer=True, replicas=args.replicas, start=25100, env=env) as pooled,
    ):
        stacks = {"direct": direct, "PgBouncer": pooled}
        cookies = {side: login(stack.url.rstrip("/")) for side, stack in stacks.items()}
        for side, stack in stacks.items():  # warm every worker's imports and pools
            for _, path in ENDPOINTS:
                wrk(stack.url.rstrip("/") + path, duration=2, connections=args.connections,
                    headers=[f"Cookie: {cookies[side]}"])  # fmt: skip
        for i in range(args.rounds):
            sides = list(stacks.items())
            for side, stack in sides if i % 2 == 0 else reversed(sides):
                for name, path in ENDPOINTS:
                    with backends_peak(stack) as peak:
                        result = wrk(
                            stack.url.rstrip("/") + path,
                            duration=args.duration,
                            connections=args.connections,
                            headers=[f"Cookie: {cookies[side]}"],
                            latency=True,
                        )
                    results.setdefault((side, name), []).append(
                        (result.rps, result.p99_ms or float("nan"), peak[0])
                    )

    print(
        f"database: wrk -t1 -c{args.connections} -d{args.duration}s through nginx, median of "
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs; {args.replicas} gthread "
        f"replicas per stack, CONN_MAX_AGE={args.conn_max_age}"
    )
    print(f"{'endpoint':<20}{'database':<11}{'req/s':>8}{'p99 ms':>8}{'peak backends':>15}")
    for name, _ in ENDPOINTS:
        for side in ("direct", "PgBouncer"):
            rows = results[(side, name)]
            print(
                f"{name:<20}{side:<11}{statistics.median(r[0] for r in rows):>8,.0f}"
                f"{statistics.median(r[1] for r in rows):>8.1f}{max(r[2] for r in rows):>15}"
            )


if __name__ == "__main__":
    main()
