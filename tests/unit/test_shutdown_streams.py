"""Drain-aware SSE streams and WebSocket consumers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from django_arena_scale.lifecycle import _streams as streams
from django_arena_scale.lifecycle._state import Lifecycle, reset_lifecycle


@pytest.fixture(autouse=True)
def lifecycle() -> Iterator[Lifecycle]:
    lc = reset_lifecycle()
    lc.mark_ready()
    yield lc
    reset_lifecycle()


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "DRAIN_POLL_INTERVAL", 0.01)


async def ticks(n: int, delay: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(delay)
        yield f"data: {i}\n\n".encode()


def test_reconnect_event_carries_retry_and_hint() -> None:
    """The reconnect event is an SSE event with ``retry:`` and a JSON reconnect hint."""
    text = streams.reconnect_event(retry_ms=1500).decode()
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    assert fields["event"] == "reconnect"
    assert fields["retry"] == "1500"
    assert json.loads(fields["data"])["reconnect"] is True
    assert text.endswith("\n\n")


def test_reconnect_event_default_retry_from_setting(settings: object) -> None:
    """Without ``retry_ms`` the event uses ARENA_SCALE_SSE_RECONNECT_MS."""
    settings.ARENA_SCALE_SSE_RECONNECT_MS = 2500  # type: ignore[attr-defined]
    assert b"retry: 2500\n" in streams.reconnect_event()


async def test_drain_aware_sse_relays_whole_source() -> None:
    """Without a drain the wrapper yields the source unchanged."""
    out = [c async for c in streams.drain_aware_sse(ticks(3), retry_ms=10)]
    assert out == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]


async def test_drain_aware_sse_ends_with_reconnect_on_drain(lifecycle: Lifecycle) -> None:
    """When the replica drains mid-stream the last chunk is the reconnect event."""
    out: list[bytes] = []
    async for chunk in streams.drain_aware_sse(ticks(1000, 0.005), retry_ms=10):
        out.append(chunk)
        if len(out) == 2:
            lifecycle.begin_drain()
    assert out[-1] == streams.reconnect_event(retry_ms=10)
    assert len(out) < 1000


async def test_drain_aware_sse_interrupts_a_waiting_source(lifecycle: Lifecycle) -> None:
    """A source blocked waiting for its next token is cancelled on drain."""
    cancelled = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield b"never"

    out: list[bytes] = []

    async def consume() -> None:
        async for chunk in streams.drain_aware_sse(stuck(), retry_ms=10):
            out.append(chunk)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    lifecycle.begin_drain()
    await asyncio.wait_for(task, 2)
    assert out == [b"data: first\n\n", streams.reconnect_event(retry_ms=10)]
    assert cancelled.is_set()


async def test_drain_aware_sse_other_cancellation_propagates() -> None:
    """Cancelling the response task (client gone) is not mistaken for a drain."""

    async def stuck() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await asyncio.sleep(60)
        yield b"never"

    out: list[bytes] = []

    async def consume() -> None:
        async for chunk in streams.drain_aware_sse(stuck(), retry_ms=10):
            out.append(chunk)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out == [b"data: first\n\n"]


async def test_drain_aware_sse_no_task_per_chunk() -> None:
    """Relaying a chunk creates no task (the watcher is the only extra task)."""
    before = len(asyncio.all_tasks())
    seen: list[int] = []
    async for _ in streams.drain_aware_sse(ticks(50), retry_ms=10):
        seen.append(len(asyncio.all_tasks()))
    assert max(seen) <= before + 1


async def test_drain_aware_sse_already_draining_sends_only_reconnect(
    lifecycle: Lifecycle,
) -> None:
    """A stream opened on a draining replica gets the reconnect event at once."""
    lifecycle.begin_drain()
    out = [c async for c in streams.drain_aware_sse(ticks(3), retry_ms=10)]
    assert out == [streams.reconnect_event(retry_ms=10)]


async def test_drain_aware_sse_follows_the_drain_file(tmp_path: object) -> None:
    """The drain file (manage.py drain on) ends streams like begin_drain() does."""
    path = f"{tmp_path}/drain"
    lc = reset_lifecycle(Lifecycle(drain_file=path))
    lc.mark_ready()
    out: list[bytes] = []
    async for chunk in streams.drain_aware_sse(ticks(1000, 0.005), retry_ms=10):
        out.append(chunk)
        if len(out) == 2:
            with open(path, "w"):
                pass
    assert out[-1] == streams.reconnect_event(retry_ms=10)


async def test_drain_aware_sse_client_disconnect_closes_source() -> None:
    """Closing the wrapper (client went away) closes the source generator."""
    closed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    gen = streams.drain_aware_sse(source(), retry_ms=10)
    await gen.__anext__()
    await gen.aclose()
    assert closed.is_set()


async def test_drained_wakes_every_waiter_once(lifecycle: Lifecycle) -> None:
    """All streams waiting on one loop are woken by a single drain."""
    first, second = streams.drained(), streams.drained()
    lifecycle.begin_drain()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert first is not second


async def test_drained_is_done_at_once_when_already_draining(lifecycle: Lifecycle) -> None:
    """A waiter created on a draining replica is already done."""
    lifecycle.begin_drain()
    assert streams.drained().done()


async def test_drained_future_renews_after_drain_off(lifecycle: Lifecycle) -> None:
    """After ``drain off`` a new stream is not ended by the old drain."""
    lifecycle.begin_drain()
    await asyncio.wait_for(streams.drained(), 1)
    lifecycle.end_drain()
    assert not streams.drained().done()


async def test_drained_watcher_stops_when_nobody_waits() -> None:
    """The poller task ends once its waiters are gone (an idle replica polls nothing)."""
    waiter = streams.drained()
    watcher = streams._watchers[asyncio.get_running_loop()]
    waiter.cancel()
    del waiter
    assert watcher.task is not None
    await asyncio.wait_for(watcher.task, 1)


def test_drain_aware_sse_sync_ends_with_reconnect(lifecycle: Lifecycle) -> None:
    """The WSGI flavour checks the lifecycle between chunks."""
    out: list[bytes] = []
    for chunk in streams.drain_aware_sse_sync(
        (b"data: %d\n\n" % i for i in range(100)), retry_ms=7
    ):
        out.append(chunk)
        if len(out) == 3:
            lifecycle.begin_drain()
    assert out[-1] == streams.reconnect_event(retry_ms=7)
    assert len(out) == 4


def test_drain_aware_sse_sync_relays_whole_source() -> None:
    """Without a drain the sync wrapper yields everything."""
    assert list(streams.drain_aware_sse_sync([b"a", b"b"], retry_ms=7)) == [b"a", b"b"]


class _FakeBase:
    """Stands in for channels' AsyncWebsocketConsumer (pure mixin logic, no server)."""

    def __init__(self) -> None:
        self.closed_with: int | None = None
        self.disconnected = False

    async def websocket_connect(self, message: dict[str, object]) -> None:
        pass

    async def websocket_disconnect(self, message: dict[str, object]) -> None:
        self.disconnected = True

    async def close(self, code: int | None = None) -> None:
        self.closed_with = code


class _Consumer(streams.DrainAwareConsumerMixin, _FakeBase):
    pass


async def test_consumer_mixin_closes_with_1012_on_drain(lifecycle: Lifecycle) -> None:
    """A connected consumer is closed with code 1012 when the replica drains."""
    consumer = _Consumer()
    await consumer.websocket_connect({"type": "websocket.connect"})
    lifecycle.begin_drain()
    assert consumer._drain_task is not None
    await asyncio.wait_for(consumer._drain_task, 1)
    assert consumer.closed_with == 1012


async def test_consumer_mixin_disconnect_cancels_watch() -> None:
    """A client that leaves first does not leave a watcher task behind."""
    consumer = _Consumer()
    await consumer.websocket_connect({"type": "websocket.connect"})
    await consumer.websocket_disconnect({"type": "websocket.disconnect"})
    task = consumer._drain_task
    assert task is not None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert consumer.closed_with is None
