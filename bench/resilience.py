"""Happy-path overhead of the llm_call guard, with Redis coordination on.

Run: .venv/bin/python bench/resilience.py   (starts its own redis-server on a free port)

Prints per-call times (best of several repeats) for a trivial function called bare, through
the guard (sync and async), through a bare ``pybreaker.CircuitBreaker.call()`` and through
``stamina.retry`` on the same function, plus the ratios.  Targets: guard overhead <= 20 us
sync and <= 30 us async per call.

``--plot PATH.png`` runs a sweep instead (needs matplotlib): N threads (``--concurrency``,
default 1,4,16,64) each POST chat completions over a kept-alive connection to a real local
HTTP server (tests/llm_server.py's ``FakeLLMServer``, in a process of its own on 127.0.0.1)
for ``--point-duration`` seconds (default 2), once through the guard (Redis coordination on)
and once bare, alternating; plots completed calls/s and the p99 call latency against N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import pybreaker  # noqa: E402
from bench._plot import (  # noqa: E402
    Machine,
    Point,
    check_plot_path,
    parse_concurrency,
    print_points,
    write_plot,
)

from django_arena_scale.resilience import llm_call  # noqa: E402
from django_arena_scale.resilience._registry import registry  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

NUMBER = 20_000
REPEAT = 7
SYNC_TARGET_US = 20.0
ASYNC_TARGET_US = 30.0


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def run_sync(fn: object) -> float:
    return timeit.timeit(fn, number=NUMBER) / NUMBER * 1e6  # type: ignore[arg-type]


def run_async(factory: object) -> float:
    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(NUMBER):
            await factory()  # type: ignore[operator]
        return (time.perf_counter() - started) / NUMBER * 1e6

    return asyncio.run(loop())


def interleaved(variants: dict[str, tuple[bool, object]]) -> dict[str, float]:
    """Best time per call of each variant; rounds alternate variants so load noise is shared."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(REPEAT):
        for name, (is_async, fn) in variants.items():
            best[name] = min(best[name], run_async(fn) if is_async else run_sync(fn))
    return best


# --- --plot: guarded HTTP calls against a local provider ------------------------------------
#: Starts the fake provider in its own process (no GIL shared with the client threads), prints
#: its port and serves until stdin closes.
SERVER_CODE = """
import sys
from tests import llm_server
# TCP_NODELAY on the server's connections: its handler writes the headers and the body in two
# sends, and Nagle's algorithm against the client's delayed ACK adds 40 ms to every response.
llm_server._Handler.disable_nagle_algorithm = True
# socketserver's listen backlog is 5: 64 threads connecting at once overflow it (resets).
llm_server._Server.request_queue_size = 256
server = llm_server.FakeLLMServer().start()
print(server.port, flush=True)
sys.stdin.read()
server.close()
"""
BODY = json.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
).encode()


def complete(conn: http.client.HTTPConnection) -> str:
    """One chat completion over ``conn`` (kept alive); raises on anything but 200."""
    conn.request(
        "POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"}
    )  # fmt: skip
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise ConnectionError(f"provider answered {response.status}")
    return str(json.loads(payload)["choices"][0]["message"]["content"])


def run_threads(
    call: Callable[[http.client.HTTPConnection], str], port: int, threads: int, duration: float
) -> Point:
    """``threads`` threads calling ``call`` in a loop for ``duration`` s: (threads, calls/s,
    p99 ms).  Each thread has its own connection, opened before the clock starts."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    gate = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[index]
        try:
            complete(conn)  # connect and warm before the clock starts
            gate.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                call(conn)
                mine.append((time.perf_counter() - t0) * 1000)
        except threading.BrokenBarrierError:
            pass  # another worker failed first
        except BaseException as exc:  # reported below: a failed call voids the point
            errors.append(exc)
            stop.set()
            gate.abort()
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: reported below
        gate.wait(timeout=60)
    started = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for thread in pool:
        thread.join(timeout=60)
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{threads} threads: a call failed: {errors[0]!r}")
    merged = sorted(x for mine in latencies for x in mine)
    p99 = merged[max(0, -(-len(merged) * 99 // 100) - 1)] if merged else None
    return (threads, len(merged) / elapsed, p99)


def sweep(redis_url: str, levels: list[int], duration: float) -> dict[str, list[Point]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        registry.configure(redis_url=redis_url)
        guarded = llm_call("bench-http", max_attempts=3, deadline=30)(complete)
        variants = {
            "through the llm_call guard (Redis coordination on)": guarded,
            "bare call": complete,
        }
        series: dict[str, list[Point]] = {label: [] for label in variants}
        for i, threads in enumerate(levels):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for label in order:
                series[label].append(run_threads(variants[label], port, threads, duration))
        registry.reset()
        return series
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def plot_main(args: argparse.Namespace) -> int:
    path = check_plot_path(args.plot)
    assert path is not None
    levels = parse_concurrency(args.concurrency)
    machine = Machine()
    print(f"load average {machine.start} (1 / 5 / 15 min) at the start", flush=True)
    with RedisServer() as redis_server:
        series = sweep(redis_server.url, levels, args.point_duration)
    print(f"load average {machine.finish()} (1 / 5 / 15 min) at the end")
    print_points(series, rate="calls/s")
    write_plot(
        path,
        series,
        title="Resilience: chat completions to a local HTTP provider (FakeLLMServer, own "
        f"process), N client threads, {args.point_duration:g} s per point",
        machine=machine,
        x_label="client threads (log scale)",
        rate_label="completed calls per second",
        latency_label="p99 call latency (ms)",
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--plot", metavar="PATH.png", help="run the concurrency sweep and write this PNG"
    )
    parser.add_argument(
        "--concurrency", default="1,4,16,64", help="client thread counts of the --plot sweep"
    )
    parser.add_argument("--point-duration", type=float, default=2.0, help="seconds per sweep point")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.plot is not None:
        return plot_main(args)
    import stamina  # only the comparison needs it

    with RedisServer() as redis_server:
        coordinator = registry.configure(redis_url=redis_server.url)
        guarded = llm_call("bench", max_attempts=3, deadline=30)(work)
        aguarded = llm_call("bench-async", max_attempts=3, deadline=30)(awork)
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
        stamina_sync = stamina.retry(on=ConnectionError, attempts=3)(work)
        stamina_async = stamina.retry(on=ConnectionError, attempts=3)(awork)
        guarded()  # first call: creates the breaker, first Redis refresh

        best = interleaved(
            {
                "bare": (False, work),
                "guard": (False, guarded),
                "pybreaker": (False, lambda: breaker.call(work)),
                "stamina": (False, stamina_sync),
                "abare": (True, awork),
                "aguard": (True, aguarded),
                "astamina": (True, stamina_async),
            }
        )
        bare, guard, pyb, stam = best["bare"], best["guard"], best["pybreaker"], best["stamina"]
        abare, aguard, astam = best["abare"], best["aguard"], best["astamina"]
        assert coordinator is not None
        refreshes = coordinator.refreshes
        registry.reset()

    sync_overhead = guard - bare
    async_overhead = aguard - abare
    print(
        f"per call, best of {REPEAT} interleaved rounds x {NUMBER} calls "
        f"(Redis coordination on, {refreshes} refreshes)"
    )
    print(f"  bare sync call                 {bare:8.2f} us")
    print(f"  llm_call guard (sync)          {guard:8.2f} us   overhead {sync_overhead:6.2f} us")
    print(f"  pybreaker CircuitBreaker.call  {pyb:8.2f} us")
    print(f"  stamina.retry (sync)           {stam:8.2f} us")
    print(f"  bare async call                {abare:8.2f} us")
    print(f"  llm_call guard (async)         {aguard:8.2f} us   overhead {async_overhead:6.2f} us")
    print(f"  stamina.retry (async)          {astam:8.2f} us")
    print(f"ratio guard / pybreaker call()   {guard / pyb:6.2f}")
    print(f"ratio guard / stamina (sync)     {guard / stam:6.2f}")
    print(f"ratio guard / stamina (async)    {aguard / astam:6.2f}")
    ok = sync_overhead <= SYNC_TARGET_US and async_overhead <= ASYNC_TARGET_US
    print(
        f"target: sync overhead <= {SYNC_TARGET_US:g} us, async <= {ASYNC_TARGET_US:g} us: "
        + ("MET" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
