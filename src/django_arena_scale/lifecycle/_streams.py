"""Long-lived responses that end cleanly when the replica drains.

* :func:`drain_aware_sse` wraps an async iterator of SSE chunks: when the replica enters
  DRAINING it stops the source and sends one last event with ``retry:`` (the
  ``ARENA_SCALE_SSE_RECONNECT_MS`` setting) and a reconnect hint, so the browser's
  ``EventSource`` reconnects - through the load balancer, to another replica.
  :func:`drain_aware_sse_sync` does the same for a WSGI (sync) iterator, between chunks.
* :class:`DrainAwareConsumerMixin` closes a Channels WebSocket consumer with code 1012
  ("service restart") when the replica drains.

One watcher task per event loop polls the lifecycle (``begin_drain()`` or the drain file), so
ten thousand open streams cost one ``stat`` every ``DRAIN_POLL_INTERVAL`` seconds, not ten
thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from django_arena_scale.lifecycle._state import State, get_lifecycle

#: Seconds between two lifecycle checks of the per-loop watcher.
DRAIN_POLL_INTERVAL = 0.1

#: WebSocket close code for "service restart": the client should reconnect.
WS_CLOSE_SERVICE_RESTART = 1012


def is_draining() -> bool:
    return get_lifecycle().state is State.DRAINING


def _metrics() -> Any:
    """The metrics recorder once something enabled it in this process (else None)."""
    return sys.modules.get("django_arena_scale.metrics._prom")


class _Watcher:
    """Per event loop: one task polls the lifecycle while streams or waiters exist.

    On drain it wakes every :func:`drained` future and interrupts each stream that is waiting
    for its source by cancelling the waiting task with a marker: no task or future per chunk,
    so a relayed chunk costs about as much as a plain ``async for``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: weakref.WeakSet[asyncio.Future[None]] = weakref.WeakSet()
        #: Tasks parked in ``await source.__anext__()`` inside :func:`drain_aware_sse`.
        self.blocked: set[asyncio.Task[Any]] = set()
        #: Tasks this watcher cancelled for the drain (told apart from other cancellations).
        self.drain_cancelled: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.streams = 0
        self.draining = False
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._watch(), name="arena-drain-watcher")

    def waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if is_draining():
            future.set_result(None)
            return future
        self.waiters.add(future)
        self.ensure_running()
        return future

    async def _watch(self) -> None:
        # Runs only while someone streams or waits: an idle replica polls nothing.
        while self.waiters or self.streams:
            self.draining = is_draining()
            if self.draining:
                for future in list(self.waiters):
                    if not future.done():
                        future.set_result(None)
                self.waiters.clear()
                for task in list(self.blocked):
                    self.blocked.discard(task)
                    self.drain_cancelled.add(task)
                    task.cancel(_DRAIN_CANCEL)
            await asyncio.sleep(DRAIN_POLL_INTERVAL)
        self.draining = False

    def cancelled_by_drain(self, task: asyncio.Task[Any]) -> bool:
        if task not in self.drain_cancelled:
            return False
        self.drain_cancelled.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True


_DRAIN_CANCEL = "django-arena-scale: replica draining"

_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher] = (
    weakref.WeakKeyDictionary()
)


def _watcher() -> _Watcher:
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        watcher = _watchers[loop] = _Watcher(loop)
    return watcher


def drained() -> asyncio.Future[None]:
    """A new future of the running loop that completes when this process enters DRAINING.

    Each caller gets its own future (done at once if the replica already drains); one watcher
    task per loop polls the lifecycle for all of them.
    """
    return _watcher().waiter()


def reconnect_event(*, retry_ms: int | None = None, reason: str = "draining") -> bytes:
    """The last SSE event a draining replica sends: ``event: reconnect`` plus ``retry:``."""
    if retry_ms is None:
        retry_ms = _reconnect_ms()
    data = json.dumps({"reconnect": True, "reason": reason, "retry_ms": retry_ms})
    return f"event: reconnect\nretry: {retry_ms}\ndata: {data}\n\n".encode()


def _reconnect_ms() -> int:
    from django_arena_scale._conf import conf

    return conf.SSE_RECONNECT_MS


async def drain_aware_sse(
    source: AsyncIterable[Any], *, retry_ms: int | None = None
) -> AsyncIterator[Any]:
    """Relay ``source`` until it ends or the replica drains, then send the reconnect event.

    Use as ``StreamingHttpResponse(drain_aware_sse(events()), content_type="text/event-stream")``.
    A source waiting for its next token is interrupted (``CancelledError`` at its ``await``),
    so the reconnect event goes out within ``DRAIN_POLL_INTERVAL`` of the drain.
    """
    iterator = source.__aiter__()
    metrics = _metrics()
    if is_draining():
        await _aclose(iterator)
        if metrics is not None:
            metrics.drain_event("sse_reconnect")
        yield reconnect_event(retry_ms=retry_ms)
        return
    task = asyncio.current_task()
    watcher = _watcher()
    watcher.streams += 1
    watcher.ensure_running()
    if metrics is not None:
        metrics.stream_opened()
    try:
        while not watcher.draining:
            if task is not None:
                watcher.blocked.add(task)
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if task is None or not watcher.cancelled_by_drain(task):
                    raise
                break
            finally:
                if task is not None:
                    watcher.blocked.discard(task)
            yield chunk
        await _aclose(iterator)
        if metrics is not None:
            metrics.drain_event("sse_reconnect")
        yield reconnect_event(retry_ms=retry_ms)
    finally:
        watcher.streams -= 1
        if metrics is not None:
            metrics.stream_closed()
        await _aclose(iterator)


async def _aclose(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(RuntimeError, StopAsyncIteration):
            await aclose()


def drain_aware_sse_sync(source: Iterable[Any], *, retry_ms: int | None = None) -> Iterator[Any]:
    """The WSGI flavour: checks the lifecycle before each chunk of a sync iterator.

    A chunk the source is blocked on is not interrupted, so sync streams should yield at least
    every second or two (a keep-alive comment will do).
    """
    iterator = iter(source)
    metrics = _metrics()
    if metrics is not None:
        metrics.stream_opened()
    try:
        while True:
            if is_draining():
                if metrics is not None:
                    metrics.drain_event("sse_reconnect")
                yield reconnect_event(retry_ms=retry_ms)
                return
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            yield chunk
    finally:
        if metrics is not None:
            metrics.stream_closed()
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


class DrainAwareConsumerMixin:
    """Close a Channels WebSocket consumer with 1012 when the replica drains.

    Put it before the consumer base class::

        class ChatConsumer(DrainAwareConsumerMixin, AsyncWebsocketConsumer): ...

    A client that connects while the replica is already draining is closed at once.
    """

    drain_close_code = WS_CLOSE_SERVICE_RESTART
    _drain_task: asyncio.Task[None] | None = None
    _counted: Any = None

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        metrics = _metrics()
        if metrics is not None and self._counted is None:
            self._counted = metrics
            metrics.websocket_opened()
        await super().websocket_connect(message)  # type: ignore[misc]
        self._drain_task = asyncio.ensure_future(self._close_on_drain())

    async def _close_on_drain(self) -> None:
        await drained()
        metrics = _metrics()
        if metrics is not None:
            metrics.drain_event("websocket_close")
        await self.close(code=self.drain_close_code)  # type: ignore[attr-defined]

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        task = self._drain_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        counted, self._counted = self._counted, None
        if counted is not None:
            counted.websocket_closed()
        await super().websocket_disconnect(message)  # type: ignore[misc]
