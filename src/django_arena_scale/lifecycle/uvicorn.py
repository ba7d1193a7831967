"""A gunicorn worker class running uvicorn, wired to the replica's lifecycle.

``worker_class = "django_arena_scale.lifecycle.uvicorn.UvicornWorker"``.  Compared with the
stock worker it

* passes gunicorn's ``graceful_timeout`` to uvicorn as ``timeout_graceful_shutdown`` (minus a
  margin for the shutdown hooks), so uvicorn ends its streams before the master's SIGKILL;
* begins the drain as soon as SIGTERM arrives, so open SSE streams get their reconnect event
  and WebSockets close with 1012 instead of being cut;
* notifies the master (and beats the ``/live/`` heartbeat) more often than once per
  ``timeout``.

uvicorn >= 0.30 moved the worker to the ``uvicorn-worker`` package; it is used when installed,
else the deprecated ``uvicorn.workers`` module.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
import warnings
from types import FrameType
from typing import Any

from uvicorn.server import Server

from django_arena_scale.lifecycle._listeners import HANDSHAKE_GRACE, master_holds, refuse_handshakes
from django_arena_scale.lifecycle._state import State, get_lifecycle

try:
    from uvicorn_worker import UvicornWorker as _BaseWorker
except ImportError:  # pragma: no cover - exercised only without the uvicorn-worker package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker as _BaseWorker

__all__ = [
    "CloseWhileDraining",
    "DrainingServer",
    "UvicornH11Worker",
    "UvicornWorker",
    "graceful_shutdown_timeout",
]

logger = logging.getLogger("django_arena_scale.lifecycle")

#: Seconds a leaving worker, no longer accepting, gives requests already on their way.
FINAL_GRACE = 0.5
#: At most this many queued connections are served by a worker that stops listening.
_ACCEPT_SWEEP_LIMIT = 1024
#: Seconds of ``graceful_timeout`` kept for the shutdown hooks after uvicorn stops.
HOOK_MARGIN = 1.0
#: uvicorn's ``ws_max_size`` under :class:`UvicornWorker`: 64 KiB (uvicorn's default is 16 MiB).
WS_MAX_SIZE = 64 * 1024


def graceful_shutdown_timeout(graceful_timeout: float) -> float:
    """uvicorn's share of gunicorn's ``graceful_timeout``: leave a margin, keep at least half."""
    return max(graceful_timeout * 0.5, graceful_timeout - HOOK_MARGIN)


def retire_seconds(keep_alive: float, graceful: float | None) -> float:
    """How long a leaving worker answers with ``Connection: close`` before it shuts down:
    its own keep-alive timeout (the proxy's is shorter), within half its graceful budget."""
    if graceful is None:
        return float(keep_alive)
    return max(0.0, min(float(keep_alive), graceful / 2))


def notify_interval(worker_timeout: float, heartbeat_timeout: float) -> float:
    """How often to notify: well inside both the master's timeout and the /live/ threshold."""
    return max(0.5, min(worker_timeout / 2, heartbeat_timeout / 4))


class DrainingServer(Server):
    """A uvicorn server whose exit signal first puts the process in DRAINING.

    While the replica drains (drain file, or an exit signal) it does not listen: its
    listening sockets close, so a load balancer's new connection is refused before anything
    is sent; a response in progress ends its connection, and a request arriving on an idle
    keep-alive connection is answered with ``Connection: close`` (:class:`CloseWhileDraining`).
    An idle connection is never closed from this side while draining: the client may be
    sending a request on it at that instant.  WebSockets close with 1012.
    """

    listening_stopped = False
    #: When a leaving worker stops answering (see :meth:`on_tick`); None while it stays.
    retire_until: float | None = None
    #: When this worker first saw the replica draining.
    draining_since: float | None = None
    #: End of the last grace after a leaving worker stopped accepting.
    final_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        get_lifecycle().begin_drain()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        should_exit: bool = await super().on_tick(counter)
        lifecycle = get_lifecycle()
        draining = lifecycle.state is State.DRAINING
        if draining and self.draining_since is None:
            self.draining_since = time.monotonic()
        if should_exit and self.retire_until is None:
            # Leaving (max_requests, or a signal): streams end with a reconnect event, and
            # until the proxy's idle keep-alive connections have timed out on its side (it
            # closes them before this server's keep-alive timeout), every answer says
            # "Connection: close".  Closing one from here could race with a request the proxy
            # is sending on it, and a POST lost that way is not retried.  A replica drained
            # that long before the signal leaves at once.
            lifecycle.begin_drain()
            self.config.limit_max_requests = None  # said once; uvicorn would repeat it per tick
            since = self.draining_since or time.monotonic()
            self.retire_until = since + retire_seconds(
                self.config.timeout_keep_alive, self.config.timeout_graceful_shutdown
            )
        if not self.listening_stopped and (draining or should_exit):
            await self.stop_listening()
        if self.retire_until is not None and not self.force_exit:
            return self._retired()
        return should_exit

    def _retired(self) -> bool:
        """True once a leaving worker may shut down (uvicorn then closes what is left).

        At the end of the retire phase it stops accepting (the master keeps the listening
        socket for the next worker) and gives requests already on their way a last
        :data:`FINAL_GRACE` seconds, so no connection is closed with a request in it.
        """
        now = time.monotonic()
        if self.retire_until is None or now < self.retire_until:
            return False
        if self.final_until is None:
            for server in getattr(self, "servers", []):
                server.close()
            self.final_until = now + FINAL_GRACE
        return now >= self.final_until

    async def stop_listening(self) -> None:
        """Close the listening sockets; busy connections close after their response.

        Waits (returns, to be called again on the next tick) while the gunicorn master still
        holds the sockets, so that this worker accepts until the master closed its copy; then
        stops new handshakes, serves what the kernel already queued and closes them (the
        steps and why: :mod:`django_arena_scale.lifecycle._listeners`).
        """
        servers = list(getattr(self, "servers", []))
        sockets = [sock for server in servers for sock in (server.sockets or ())]
        if sockets and master_holds(sockets):
            return
        self.listening_stopped = True
        # No new handshakes from here on; the servers keep accepting those under way.
        if [sock for sock in sockets if refuse_handshakes(sock)]:
            await asyncio.sleep(HANDSHAKE_GRACE)
        for sock in sockets:
            await self._serve_queued(sock)
        for server in servers:
            server.close()
        for connection in list(self.server_state.connections):
            cycle: Any = getattr(connection, "cycle", _NO_CYCLE)
            if cycle is _NO_CYCLE:  # a WebSocket: close it with 1012 (going away)
                connection.shutdown()
            elif cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False

    async def _serve_queued(self, listener: Any) -> None:
        """Accept the connections queued in ``listener`` and serve them like any other."""
        loop = asyncio.get_running_loop()
        config = self.config
        sweeper = socket.socket(fileno=os.dup(listener.fileno()))
        try:
            sweeper.setblocking(False)
            for _ in range(_ACCEPT_SWEEP_LIMIT):
                try:
                    conn, _ = sweeper.accept()
                except (BlockingIOError, InterruptedError):
                    break
                protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )
                await loop.connect_accepted_socket(functools.partial(_same, protocol), conn)
        except OSError:
            logger.warning("Could not serve the connections queued at drain.", exc_info=True)
        finally:
            sweeper.close()


_NO_CYCLE = object()


def _same(protocol: asyncio.Protocol) -> asyncio.Protocol:
    return protocol


class CloseWhileDraining:
    """ASGI wrapper: while the replica drains, every HTTP response says ``Connection: close``.

    uvicorn then closes the connection after the response, so a load balancer's cached
    connection retires cleanly instead of being closed under its next request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or get_lifecycle().state is not State.DRAINING:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class UvicornWorker(_BaseWorker):  # type: ignore[misc]
    """The uvicorn gunicorn worker with the graceful timeout chain and drain-on-SIGTERM.

    WebSocket messages are limited to :attr:`ws_max_size` bytes (:data:`WS_MAX_SIZE`, 64 KiB,
    instead of uvicorn's 16 MiB); a subclass may set another value.
    """

    #: Largest WebSocket message accepted, in bytes; a larger one closes the connection (1009).
    ws_max_size: int = WS_MAX_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = graceful_shutdown_timeout(
            float(self.cfg.graceful_timeout)
        )
        self.config.timeout_notify = notify_interval(float(self.timeout), _heartbeat_timeout())
        # uvicorn accepts WebSocket messages up to 16 MiB by default; larger ones close with 1009.
        self.config.ws_max_size = self.ws_max_size

    def __repr__(self) -> str:
        return (
            f"<UvicornWorker pid={getattr(self, 'pid', '?')} "
            f"graceful={self.config.timeout_graceful_shutdown}s>"
        )

    async def _serve(self) -> None:
        import sys

        from gunicorn.arbiter import Arbiter

        self.config.app = CloseWhileDraining(self.wsgi)
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        # uvicorn re-raises the exit signal once it has shut down, with the handler it found;
        # the stock worker leaves SIG_DFL there, which kills the process before gunicorn's
        # worker_exit hook (and so the @on_shutdown hooks) can run.  Found handlers that only
        # mark the worker as leaving let run() return normally instead.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._leaving)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def _leaving(self, sig: int, frame: FrameType | None) -> None:
        self.alive = False


class UvicornH11Worker(UvicornWorker):
    """The pure-Python h11 variant (no httptools/uvloop)."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11"}


def _heartbeat_timeout() -> float:
    try:
        from django_arena_scale._conf import conf

        return conf.HEARTBEAT_TIMEOUT
    except Exception:  # settings not importable yet in the master: the documented default
        return 30.0
