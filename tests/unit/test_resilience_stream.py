"""The guard on generators and async generators: retry only before the first chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_arena_scale.resilience import (
    FirstChunkTimeout,
    IdleTimeout,
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
    llm_call,
    llm_test_mode,
)
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import FakeClock, isolated_registry


class Overloaded(Exception):
    status_code = 529


def _drain(stream: Iterator[str], into: list[str]) -> list[str]:
    for token in stream:
        into.append(token)
    return []


async def _adrain(stream: AsyncIterator[str], into: list[str]) -> None:
    async for token in stream:
        into.append(token)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with isolated_registry(fake):
        yield fake


def test_stream_retried_before_first_chunk(clock: FakeClock) -> None:
    """A stream failing before its first chunk is retried; tokens arrive once each."""
    opened = 0

    @llm_call("s", clock=clock, sleep=clock.sleep)
    def stream() -> Iterator[str]:
        nonlocal opened
        opened += 1
        if opened == 1:
            raise Overloaded
        yield from ["a", "b", "c"]

    assert list(stream()) == ["a", "b", "c"]
    assert opened == 2


def test_stream_never_restarted_after_chunk(clock: FakeClock) -> None:
    """A failure after a chunk reached the caller raises StreamInterrupted, no restart."""
    opened = 0

    @llm_call("s", clock=clock, sleep=clock.sleep, max_attempts=5)
    def stream() -> Iterator[str]:
        nonlocal opened
        opened += 1
        yield "a"
        yield "b"
        raise Overloaded

    received: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        received.extend(_drain(stream(), received))
    assert (received, opened, info.value.chunks) == (["a", "b"], 1, 2)
    assert isinstance(info.value.__cause__, Overloaded)


def test_stream_mid_error_counts_once(clock: FakeClock) -> None:
    """A mid-stream provider error counts exactly one failure against the breaker."""

    @llm_call("s", clock=clock)
    def stream() -> Iterator[str]:
        yield "a"
        raise Overloaded

    with pytest.raises(StreamInterrupted):
        list(stream())
    breaker = get_breaker("s")
    assert (breaker.counters.failures, breaker.fail_counter) == (1, 1)


def test_stream_consumer_close_neutral(clock: FakeClock) -> None:
    """A consumer closing the stream early (client disconnect) is neutral."""

    @llm_call("s", clock=clock)
    def stream() -> Iterator[str]:
        yield from "abcdef"

    iterator = stream()
    next(iterator)
    iterator.close()  # type: ignore[attr-defined]
    breaker = get_breaker("s")
    assert (breaker.counters.neutral, breaker.counters.successes) == (1, 0)


def test_stream_success_recorded_at_end(clock: FakeClock) -> None:
    """A complete stream records one success."""

    @llm_call("s", clock=clock)
    def stream() -> Iterator[str]:
        yield from "ab"

    list(stream())
    assert get_breaker("s").counters.successes == 1


def test_stream_empty(clock: FakeClock) -> None:
    """An empty stream yields nothing and counts as a success."""

    @llm_call("s", clock=clock)
    def stream() -> Iterator[str]:
        yield from ()

    assert list(stream()) == []


def test_stream_fallback_before_first_chunk(clock: FakeClock) -> None:
    """An open breaker sends the stream to the fallback target."""
    get_breaker("s").trip(30)

    @llm_call("s", clock=clock, fallbacks=["t"])
    def stream() -> Iterator[str]:
        yield "x"

    assert list(stream()) == ["x"]


def test_stream_open_breaker(clock: FakeClock) -> None:
    """A stream on an open breaker without fallback raises ProviderUnavailable on iteration."""
    get_breaker("s").trip(30)

    @llm_call("s", clock=clock)
    def stream() -> Iterator[str]:
        yield "x"

    with pytest.raises(ProviderUnavailable):
        next(stream())


def test_stream_sync_late_first_chunk_is_timeout(clock: FakeClock) -> None:
    """A sync stream whose first chunk arrives after first_chunk_timeout is retried."""
    opened = 0

    @llm_call("s", clock=clock, sleep=clock.sleep, first_chunk_timeout=1, max_attempts=2)
    def stream() -> Iterator[str]:
        nonlocal opened
        opened += 1
        if opened == 1:
            clock.advance(2)
        yield "x"

    assert list(stream()) == ["x"]
    assert opened == 2


def test_stream_sync_idle_timeout(clock: FakeClock) -> None:
    """A sync stream silent longer than idle_timeout between chunks is interrupted."""

    @llm_call("s", clock=clock, idle_timeout=1)
    def stream() -> Iterator[str]:
        yield "a"
        clock.advance(5)
        yield "b"

    with pytest.raises(StreamInterrupted) as info:
        list(stream())
    assert isinstance(info.value.__cause__, IdleTimeout)


async def test_stream_async_first_chunk_timeout_retried() -> None:
    """An async stream with no first chunk in time is cut and retried."""
    opened = 0

    @llm_call("s", first_chunk_timeout=0.05, max_attempts=2, backoff_initial=0)
    async def stream() -> AsyncIterator[str]:
        nonlocal opened
        opened += 1
        if opened == 1:
            await asyncio.sleep(5)
        yield "x"
        yield "y"

    with isolated_registry():
        assert [t async for t in stream()] == ["x", "y"]
    assert opened == 2


async def test_stream_async_first_chunk_timeout_exhausted() -> None:
    """When every attempt misses the first-chunk deadline, the cause is FirstChunkTimeout."""

    @llm_call("s", first_chunk_timeout=0.02, max_attempts=2, backoff_initial=0)
    async def stream() -> AsyncIterator[str]:
        await asyncio.sleep(5)
        yield "x"

    with isolated_registry(), pytest.raises(RetriesExhausted) as info:
        [t async for t in stream()]
    assert isinstance(info.value.__cause__, FirstChunkTimeout)


async def test_stream_async_idle_timeout() -> None:
    """An async stream stalled mid-way raises StreamInterrupted (IdleTimeout cause)."""

    @llm_call("s", idle_timeout=0.05)
    async def stream() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(5)
        yield "b"

    received: list[str] = []
    with isolated_registry(), pytest.raises(StreamInterrupted) as info:
        await _adrain(stream(), received)
    assert received == ["a"]
    assert isinstance(info.value.__cause__, IdleTimeout)


async def test_stream_async_mid_error_not_restarted() -> None:
    """An async stream breaking after k chunks is not restarted."""
    opened = 0

    @llm_call("s", max_attempts=3)
    async def stream() -> AsyncIterator[str]:
        nonlocal opened
        opened += 1
        yield "a"
        raise Overloaded

    with isolated_registry(), pytest.raises(StreamInterrupted):
        [t async for t in stream()]
    assert opened == 1


async def test_stream_async_cancel_neutral() -> None:
    """Cancelling the consumer task mid-stream is neutral for the breaker."""
    first = asyncio.Event()

    @llm_call("s", failure_threshold=1)
    async def stream() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(10)
        yield "b"

    async def consume() -> None:
        async for _ in stream():
            first.set()

    with isolated_registry():
        task = asyncio.ensure_future(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        breaker = get_breaker("s")
        assert (breaker.state, breaker.counters.neutral) == ("closed", 1)


@given(
    failures_before_first=st.integers(0, 3),
    break_at=st.none() | st.integers(1, 6),
    length=st.integers(1, 6),
)
@settings(max_examples=60, deadline=None)
def test_stream_tokens_never_duplicated_or_missing(
    failures_before_first: int, break_at: int | None, length: int
) -> None:
    """Whatever fails when, the caller gets a prefix of the answer, each token once."""
    answer = [f"t{i}" for i in range(length)]
    opened = 0

    @llm_call("prop", max_attempts=4)
    def stream() -> Iterator[str]:
        nonlocal opened
        opened += 1
        if opened <= failures_before_first:
            raise Overloaded
        for index, token in enumerate(answer):
            if break_at is not None and index == break_at:
                raise Overloaded
            yield token

    received: list[str] = []
    with isolated_registry(), llm_test_mode(attempts=4):
        try:
            _drain(stream(), received)
        except StreamInterrupted:
            assert break_at is not None
            assert break_at < length
    complete = break_at is None or break_at >= length
    assert received == (answer if complete else answer[:break_at])
    assert opened == failures_before_first + 1  # never restarted after a chunk
