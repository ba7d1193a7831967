"""The example project's simulated provider goes through the llm_call guard."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from django_arena_scale.resilience import llm_test_mode
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import isolated_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_project"))

from arena import llm


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with isolated_registry():
        yield


async def _collect(stream: AsyncIterator[str]) -> list[str]:
    return [token async for token in stream]


def _tokens(count: int) -> list[str]:
    return [llm.token_at(i) for i in range(count)]


async def test_example_llm_healthy_stream() -> None:
    """A healthy simulation streams every token once."""
    assert await _collect(llm.stream_tokens(5, delay=0)) == _tokens(5)


async def test_example_llm_transient_failure_retried() -> None:
    """fail_attempts=1: the first attempt fails, the guard's retry gets the whole stream."""
    sim = llm.Simulation.parse("fail=503;fail_attempts=1")
    assert await _collect(llm.stream_tokens(4, delay=0, simulation=sim)) == _tokens(4)
    assert get_breaker("simulator").counters.retries == 1


async def test_example_llm_fallback_to_backup() -> None:
    """A failing primary deployment falls back to a healthy backup deployment."""
    sim = llm.Simulation.parse("fail=500;backup=ok")
    with llm_test_mode(attempts=2):
        tokens = await _collect(llm.stream_tokens(3, delay=0, simulation=sim))
    assert tokens == _tokens(3)
    assert get_breaker("simulator").counters.fallbacks == 1


async def test_example_llm_429_keeps_retry_after() -> None:
    """A persistent 429 surfaces as SimulatedLLMError(429) with the provider's Retry-After."""
    sim = llm.Simulation.parse("fail=429;retry_after=3")
    with pytest.raises(llm.SimulatedLLMError) as info:
        await _collect(llm.stream_tokens(3, delay=0, simulation=sim))
    assert (info.value.status, info.value.retry_after) == (429, 3.0)


async def test_example_llm_break_after_not_restarted() -> None:
    """A break after k tokens is an error after exactly k tokens (no restart, no duplicates)."""
    sim = llm.Simulation.parse("break_after=2")
    received: list[str] = []
    with pytest.raises(llm.SimulatedLLMError) as info:
        await _drain(llm.stream_tokens(5, delay=0, simulation=sim), received)
    assert (received, info.value.after) == (_tokens(2), 2)


async def test_example_llm_open_breaker_is_503() -> None:
    """With both deployments' breakers open, the simulator answers 503 with a retry delay."""
    get_breaker("simulator").trip(20)
    get_breaker("simulator:backup").trip(10)
    with pytest.raises(llm.SimulatedLLMError) as info:
        await _collect(llm.stream_tokens(3, delay=0))
    assert (info.value.status, info.value.retry_after) == (503, pytest.approx(10, abs=0.5))


async def _drain(stream: AsyncIterator[str], into: list[str]) -> None:
    async for token in stream:
        into.append(token)
