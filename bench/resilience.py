"""Happy-path overhead of the llm_call guard, with Redis coordination on.

Run: .venv/bin/python bench/resilience.py   (starts its own redis-server on a free port)

Prints per-call times (best of several repeats) for a trivial function called bare, through
the guard (sync and async), through a bare ``pybreaker.CircuitBreaker.call()`` and through
``stamina.retry`` on the same function, plus the ratios.  Targets: guard overhead <= 20 us
sync and <= 30 us async per call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import pybreaker  # noqa: E402
import stamina  # noqa: E402

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


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
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
