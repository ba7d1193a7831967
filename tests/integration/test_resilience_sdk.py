"""The real openai SDK (max_retries=0) through the guard, against a scripted local provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from django_arena_scale.resilience import (
    DeadlineExceeded,
    ProviderUnavailable,
    RetriesExhausted,
    StreamInterrupted,
    Target,
    current_attempt_timeout,
    llm_call,
)
from django_arena_scale.resilience._registry import get_breaker
from tests.llm_server import (
    TOKENS,
    FakeClock,
    FakeLLMServer,
    broken_stream,
    isolated_registry,
    ok,
    reset,
    slow,
    sse_error,
    status,
)

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    with isolated_registry(fake):
        yield fake


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    try:
        yield sdk
    finally:
        sdk.close()


@pytest.fixture
async def aclient(server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def complete_fn(client: openai.OpenAI, clock: FakeClock, **options: Any) -> Any:
    @llm_call("openai", clock=clock, sleep=clock.sleep, random=lambda: 0.5, **options)
    def complete() -> str:
        response = client.chat.completions.create(
            model="fake", messages=MESSAGES, timeout=current_attempt_timeout()
        )
        return str(response.choices[0].message.content)

    return complete


def stream_fn(client: openai.OpenAI, clock: FakeClock, **options: Any) -> Any:
    @llm_call("openai", clock=clock, sleep=clock.sleep, random=lambda: 0.5, **options)
    def stream() -> Iterator[str]:
        chunks = client.chat.completions.create(
            model="fake", messages=MESSAGES, stream=True, timeout=current_attempt_timeout()
        )
        with chunks:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    return stream


def test_sdk_429_retry_after_honoured(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A 429 with Retry-After: 2 is retried after exactly 2 s; two HTTP attempts."""
    server.script(status(429, retry_after="2"), ok())
    assert complete_fn(client, clock, max_attempts=3)() == "".join(TOKENS)
    assert (server.attempts, clock.sleeps) == (2, [2.0])


def test_sdk_retry_after_ms_honoured(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """retry-after-ms from the provider sets the wait."""
    server.script(status(429, retry_after_ms="1500"), ok())
    complete_fn(client, clock)()
    assert clock.sleeps == [1.5]


def test_sdk_500_503_backoff(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """500 then 503 are retried with jittered exponential backoff."""
    server.script(status(500), status(503), ok())
    assert complete_fn(client, clock, max_attempts=3, backoff_initial=1)() == "".join(TOKENS)
    assert (server.attempts, clock.sleeps) == (3, [0.5, 1.0])


def test_sdk_connection_reset_retried(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A connection reset before any byte is a retryable connection error."""
    server.script(reset(), ok())
    assert complete_fn(client, clock)() == "".join(TOKENS)
    assert server.attempts == 2


def test_sdk_slow_first_byte_times_out_and_retries(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A slow provider hits the per-attempt timeout handed to the SDK, then is retried."""
    server.script(slow(1.0), ok())
    assert complete_fn(client, clock, attempt_timeout=0.2)() == "".join(TOKENS)
    assert server.attempts == 2


def test_sdk_bad_request_not_retried(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A 400 is raised as the SDK's BadRequestError after one HTTP attempt."""
    server.script(status(400))
    with pytest.raises(openai.BadRequestError):
        complete_fn(client, clock, max_attempts=3)()
    assert server.attempts == 1


def test_sdk_exhausted_retries(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """Persistent 503s exhaust max_attempts; the SDK error is the cause."""
    server.script(status(503))
    with pytest.raises(RetriesExhausted) as info:
        complete_fn(client, clock, max_attempts=3)()
    assert server.attempts == 3
    assert isinstance(info.value.__cause__, openai.InternalServerError)


def test_sdk_breaker_stops_http_attempts(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """Once the breaker opens, calls are refused without reaching the provider."""
    server.script(status(503))
    complete = complete_fn(client, clock, max_attempts=1, failure_threshold=2)
    for _ in range(2):
        with pytest.raises(RetriesExhausted):
            complete()
    with pytest.raises(ProviderUnavailable):
        complete()
    assert server.attempts == 2


def test_sdk_fallback_to_other_deployment(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """Retries exhausted on the primary deployment move the call to the backup deployment."""
    server.script(status(503))
    with FakeLLMServer() as backup_server:
        backup = openai.OpenAI(base_url=backup_server.base_url, api_key="test", max_retries=0)
        try:

            @llm_call(
                "openai",
                clock=clock,
                sleep=clock.sleep,
                max_attempts=2,
                fallbacks=[Target("openai", key="backup", kwargs={"sdk": backup})],
            )
            def complete(sdk: openai.OpenAI) -> str:
                response = sdk.chat.completions.create(
                    model="fake", messages=MESSAGES, timeout=current_attempt_timeout()
                )
                return str(response.choices[0].message.content)

            assert complete(sdk=client) == "".join(TOKENS)
            assert (server.attempts, backup_server.attempts) == (2, 1)
        finally:
            backup.close()


def test_sdk_stream_retried_before_first_chunk(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A stream failing with 503 is retried; every token arrives exactly once."""
    server.script(status(503), ok())
    assert list(stream_fn(client, clock)()) == TOKENS
    assert server.attempts == 2


def test_sdk_stream_reset_before_first_chunk(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A stream whose connection resets before any chunk is retried."""
    server.script(reset(), ok())
    assert list(stream_fn(client, clock)()) == TOKENS


def test_sdk_stream_break_after_k_chunks(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """A stream breaking after 3 chunks raises StreamInterrupted; no restart, no duplicates."""
    server.script(broken_stream(3), ok())
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        received.extend(_drain(stream_fn(client, clock, max_attempts=3)(), received))
    assert (received, server.attempts, info.value.chunks) == (TOKENS[:3], 1, 3)
    assert get_breaker("openai").counters.failures == 1


def test_sdk_stream_error_event_mid_stream(
    server: FakeLLMServer, client: openai.OpenAI, clock: FakeClock
) -> None:
    """An SSE error frame after 2 chunks is a typed StreamInterrupted (SDK error as cause)."""
    server.script(sse_error(2))
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        received.extend(_drain(stream_fn(client, clock)(), received))
    assert received == TOKENS[:2]
    assert isinstance(info.value.__cause__, openai.APIError)


def test_sdk_deadline_bound(server: FakeLLMServer, client: openai.OpenAI) -> None:
    """A provider that never answers in time cannot hold a call much past its deadline."""
    server.script(slow(3.0))

    @llm_call("openai", deadline=0.6, max_attempts=10, backoff_initial=0.05, min_attempt_time=0.1)
    def complete() -> Any:
        return client.chat.completions.create(
            model="fake", messages=MESSAGES, timeout=current_attempt_timeout()
        )

    with isolated_registry():
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            complete()
        elapsed = time.monotonic() - started
    assert elapsed < 0.6 + 0.5  # generous: the machine may be loaded


async def test_sdk_async_stream_retry(server: FakeLLMServer, aclient: openai.AsyncOpenAI) -> None:
    """AsyncOpenAI streams through an async-generator guard: retried before the first chunk."""
    server.script(reset(), status(529), ok())

    @llm_call("openai", max_attempts=3, backoff_initial=0.01)
    async def stream() -> AsyncIterator[str]:
        chunks = await aclient.chat.completions.create(
            model="fake", messages=MESSAGES, stream=True, timeout=current_attempt_timeout()
        )
        async with chunks:
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    with isolated_registry():
        assert [token async for token in stream()] == TOKENS
    assert server.attempts == 3


async def test_sdk_async_first_chunk_timeout(
    server: FakeLLMServer, aclient: openai.AsyncOpenAI
) -> None:
    """A slow first byte trips first_chunk_timeout; the retry gets the whole stream."""
    server.script(slow(1.0), ok())

    @llm_call("openai", first_chunk_timeout=0.2, backoff_initial=0.01)
    async def stream() -> AsyncIterator[str]:
        chunks = await aclient.chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        async with chunks:
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    with isolated_registry():
        assert [token async for token in stream()] == TOKENS
    assert server.attempts == 2


async def test_sdk_async_cancel_is_neutral(
    server: FakeLLMServer, aclient: openai.AsyncOpenAI
) -> None:
    """Cancelling a pending SDK call (client went away) is not held against the provider."""
    server.script(slow(1.0))

    @llm_call("openai", failure_threshold=1)
    async def complete() -> Any:
        return await aclient.chat.completions.create(model="fake", messages=MESSAGES)

    with isolated_registry():
        task = asyncio.ensure_future(complete())
        while server.attempts == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        breaker = get_breaker("openai")
        assert (breaker.state, breaker.counters.failures, breaker.counters.neutral) == (
            "closed",
            0,
            1,
        )


def _drain(stream: Iterator[str], into: list[str]) -> list[str]:
    for token in stream:
        into.append(token)
    return []
