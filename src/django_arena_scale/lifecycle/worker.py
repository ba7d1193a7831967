"""``ArenaThreadWorker``: gunicorn's gthread model for WSGI replicas behind a proxy, cheaper per
request and balanced across worker processes.

The generated configs name it as ``worker_class`` of the WSGI pool.  Like gthread it serves
``threads`` requests at once per worker and keeps idle keep-alive connections without holding a
thread, so a slow LLM call holds one thread and nothing else.  Measured against gthread
(``bench/throughput.py``, docs/benchmarks/throughput.md), four things differ:

* **No hand-offs per request.**  gthread's main thread polls every connection, submits a
  readable one to a thread pool, and gets it back through a future callback and a pipe write
  before polling it again: three thread switches and a dozen system calls per request.  Here
  every request thread waits on one shared epoll set itself, and each connection is armed with
  ``EPOLLONESHOT``: the kernel hands a readable connection to exactly one waiting thread, which
  serves it and re-arms it.  The main thread beats the heartbeat, watches the request threads
  (below), closes idle connections and stops the worker.
* **One thread serves at a time, until it waits.**  Threads of one process that are all busy
  hand the GIL over at every blocking system call; one thread holds a permit to serve, and
  the main thread, looking every ``WATCH_INTERVAL``, lets the next one in when the serving
  thread sleeps in one request (an LLM, the database, a slow client) or has been in it for
  ``HELD_UP_LOOKS`` looks (:class:`_Slot`).
* **One send per response.**  gunicorn writes the status line and headers, then the body, in
  two ``sendall`` calls (two packets, two wake-ups of the proxy); here headers go out with the
  first body chunk (:class:`CoalescedResponse`).
* **Accepting follows free threads.**  gthread's main thread accepts every connection it can,
  busy or not, and keeps it: with a proxy's kept-alive connections, whichever worker won the
  accept races at start-up serves them for their whole life.  Runs where one of two workers
  took all 32 connections served at half the throughput.  Here only a thread with nothing to
  do accepts, one connection per event it handles, so a busy worker leaves new connections to
  an idle one and a burst of connections is shared.

Drain, ``max_requests`` and graceful shutdown keep gthread's semantics, and the hooks of
:mod:`django_arena_scale.lifecycle.gunicorn` drive them the same way (``set_accept_enabled``,
``accept``, ``handle_request``, ``STOP_KEEPALIVE_LINGER``).  HTTP/1.1 only (nginx speaks it to
upstreams); a platform without epoll (macOS, BSD) gets gthread's own loop, with the one send
per response.  ``handle_request`` follows gunicorn 27's gthread method (MIT licence), with the
response class as the only change; gunicorn >= 26.2 (``wsgi.create``'s ``response_class`` and
``Response._emit_body``, which :class:`CoalescedResponse` needs, are new there).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import ssl
import sys
import threading
import time
from datetime import datetime
from typing import Any

from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.workers import gthread

__all__ = ["ArenaThreadWorker", "CoalescedResponse"]

#: How long a stopping worker keeps its idle keep-alive connections (a request that arrives on
#: one meanwhile is answered with ``Connection: close``).  ``lifecycle.gunicorn`` raises it to
#: the keep-alive timeout, so the proxy, whose timeout is shorter, closes them first.
STOP_KEEPALIVE_LINGER = 2.0

#: How long a new connection may take to send its first request (at least), and how long the
#: body a view left unread may take to arrive before the connection is closed instead.
FIRST_REQUEST_TIMEOUT = 5.0

#: How often the main thread looks for a request thread held up in one request (and lets
#: another thread serve): the longest a request waits behind a slow one, about twice this.
WATCH_INTERVAL = 0.01
#: Looks after which a thread still in one request lets another serve even while it computes
#: (a CPU-bound request holds the others up for about this many WATCH_INTERVALs at most).
HELD_UP_LOOKS = 5

_ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)


class CoalescedResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's HTTP/1 response, with the status line and headers sent together with the
    first body bytes (or at ``close()`` when there are none)."""

    _pending: bytes | None = None
    headers_sent: bool

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._pending = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True

    def _send(self, data: bytes) -> None:
        if self._pending is not None:
            data, self._pending = self._pending + data, None
        if data:
            self.sock.sendall(data)

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self._send(data)

    def sendfile(self, respiter: Any) -> Any:
        self.send_headers()
        self._send(b"")
        return super().sendfile(respiter)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        self._send(b"0\r\n\r\n" if self.chunked else b"")


def _asleep(tid: int) -> bool:
    """Whether thread ``tid`` of this process sleeps (waits on I/O or a lock) rather than runs
    or waits for a CPU; True where /proc cannot tell."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2][1:2] != b"R"
    except OSError:
        return True


class _Slot:
    """A request thread, as the main thread's watch sees it.

    Serving threads of one process take turns on the GIL: each blocking system call (a
    socket read or write, a Redis or database round trip) hands it to another runnable
    thread, and with every thread busy that is a switch per call.  One worker of 4 threads
    spent 505 us of CPU per ``/api/ping/`` against 336 us with one thread.  So one thread
    serves at a time; only when it stays in one request past a look of the watch does
    another get the permit, up to ``threads`` at once.
    """

    __slots__ = ("busy", "detached", "looks", "seen", "seq", "tid")

    def __init__(self) -> None:
        self.tid = 0  # the thread's native id (its /proc/self/task entry)
        self.seq = 0  # requests (and accepts) begun
        self.seen = 0  # seq at the watch's previous look
        self.looks = 0  # looks of the watch that found it in the same request
        self.busy = False
        self.detached = False  # its permit went to another thread while it was held up


class ArenaThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """See the module docstring."""

    def init_process(self) -> None:
        self._epoll: Any = select.epoll() if hasattr(select, "epoll") else None
        self._conns: dict[int, Any] = {}  # fd -> TConn, every connection this worker holds
        self._listening: dict[int, Any] = {}  # fd -> listener, while accepting
        self._lock = threading.Lock()  # a connection's ``busy`` flag against the idle sweep
        self._wake = threading.Event()  # the main loop's: stopping, or a connection closed
        self._accepting = False
        # One permit: one request thread polls and serves at a time, until _watch() sees it
        # stay in one request and lets the next one in (see _Slot).
        self._permits = threading.Semaphore(1)
        self._slots: list[_Slot] = []
        self._disarmed: set[int] = set()  # listeners that accepted and wait to be armed again
        super().init_process()  # ends in run()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop gracefully (the main loop wakes at once)."""
        if self._epoll is None:
            super().handle_exit(sig, frame)
            return
        self.alive = False
        self._wake.set()

    # -- the main thread ----------------------------------------------------------------------

    def run(self) -> None:
        if self._epoll is None:
            super().run()
            return
        self.set_accept_enabled(True)
        for index in range(self.cfg.threads):
            slot = _Slot()
            self._slots.append(slot)
            threading.Thread(
                target=self._serve_events, args=(slot,), name=f"arena-request-{index}", daemon=True
            ).start()
        beat = 0.0
        while self.alive:
            now = time.monotonic()
            if now >= beat:  # once a second: heartbeat, accept limit, idle connections
                beat = now + 1.0
                self.notify()
                can_accept = len(self._conns) < self.worker_connections
                if can_accept != self._accepting:
                    self.set_accept_enabled(can_accept)
                if not self.is_parent_alive():
                    break
                self._close_idle(now)
            self._turn()

        # Stopping: accept nothing new, finish the requests in flight, answer requests on kept
        # connections with "Connection: close" for STOP_KEEPALIVE_LINGER at most.
        self.set_accept_enabled(False)
        linger = time.monotonic() + STOP_KEEPALIVE_LINGER
        graceful = time.monotonic() + self.cfg.graceful_timeout
        beat = 0.0
        while self._conns and time.monotonic() < graceful:
            if time.monotonic() >= beat:
                beat = time.monotonic() + 1.0
                self.notify()
            self._turn()
            self._close_idle(time.monotonic(), deadline=linger)
        self._close_idle(float("inf"))
        self._epoll.close()  # request threads leave on their next turn
        for listener in self.sockets:
            listener.close()

    def _turn(self) -> None:
        """Wait WATCH_INTERVAL (less when woken: stopping, a connection closed), then look."""
        self._wake.wait(WATCH_INTERVAL)
        self._wake.clear()
        self._watch()

    def set_accept_enabled(self, enabled: bool) -> None:
        if self._epoll is None:
            super().set_accept_enabled(enabled)
            return
        if enabled == self._accepting:
            return
        for listener in self.sockets:
            fd = listener.fileno()
            if enabled:
                listener.setblocking(False)
                self._listening[fd] = listener
                self._epoll.register(fd, _ARMED)
            else:
                self._listening.pop(fd, None)
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        self._accepting = enabled

    def accept(self, listener: Any) -> bool:
        """Accept one queued connection (also called by the drain's listener sweep); whether
        there was one."""
        if self._epoll is None:
            super().accept(listener)
            return True
        try:
            sock, client = listener.accept()
        except OSError as exc:  # taken by another thread, aborted, or the listener closed
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EBADF):
                raise
            return False
        conn = gthread.TConn(self.cfg, sock, client, listener.getsockname())
        sock.setblocking(True)  # read by request threads; only epoll waits on it
        conn.data_ready = True  # dispatched only once readable: gthread's wait is not needed
        conn.busy = False
        conn.timeout = time.monotonic() + max(self.cfg.keepalive, FIRST_REQUEST_TIMEOUT)
        fd = sock.fileno()
        self._conns[fd] = conn
        self._epoll.register(fd, _ARMED)
        return True

    def _close_idle(self, now: float, *, deadline: float | None = None) -> None:
        """Shut idle connections down whose keep-alive time ran out (or ``deadline`` passed).

        Only shut down here: the read side's EOF wakes a request thread, which closes the
        socket as it closes any other, so a descriptor is never closed under a thread that
        was handed it and never reused while an event for it may be pending.
        """
        for conn in list(self._conns.values()):
            limit = conn.timeout if deadline is None else min(conn.timeout, deadline)
            if limit > now:
                continue
            with self._lock:
                if conn.busy or getattr(conn, "shut", False):
                    continue
                conn.shut = True
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    # -- request threads ----------------------------------------------------------------------

    def _watch(self) -> None:
        """Let one more thread serve for each serving thread held up in one request: still in
        the request it was in at the previous look (WATCH_INTERVAL ago) and asleep (waiting on
        an LLM, the database, a slow client), or in it for HELD_UP_LOOKS looks whatever it
        does.  A thread that is runnable but was not given a CPU is not held up: it is next."""
        self._rearm_listeners()
        for slot in self._slots:
            if not slot.busy or slot.detached or slot.seq != slot.seen:
                slot.seen = slot.seq
                slot.looks = 0
                continue
            slot.looks += 1
            if slot.looks >= HELD_UP_LOOKS or _asleep(slot.tid):
                slot.detached = True
                self._permits.release()

    def _serve_events(self, slot: _Slot) -> None:
        epoll = self._epoll
        assert epoll is not None
        slot.tid = threading.get_native_id()
        while True:
            self._permits.acquire()
            while not slot.detached:  # holding the permit
                try:
                    events = epoll.poll(1.0, 1)
                except InterruptedError:
                    continue
                except (OSError, ValueError):  # closed: the worker is leaving
                    self._permits.release()
                    return
                for fd, _ in events:
                    slot.seq += 1
                    slot.busy = True
                    try:
                        self._dispatch(fd)
                    except Exception:  # a request thread never dies with the permit
                        self.log.exception("Error serving a connection")
                    finally:
                        slot.busy = False
                    if self._disarmed and fd not in self._listening:
                        self._rearm_listeners()
            # _watch() gave this thread's permit to another while it was held up: wait for one.
            slot.detached = False

    def _dispatch(self, fd: int) -> None:
        listener = self._listening.get(fd)
        if listener is not None:
            self._accept_and_rearm(listener, fd)
            return
        conn = self._conns.get(fd)
        if conn is None:
            return
        with self._lock:
            conn.busy = True
        self._serve(conn, fd)

    def _accept_and_rearm(self, listener: Any, fd: int) -> None:
        """Accept one connection.  The listener is armed again only once this thread handled
        another event (or at the watch's next look): a worker woken by a burst of connections
        would otherwise accept them all before the other workers ran, and keep them."""
        accepted = False
        try:
            accepted = self.accept(listener)
        finally:
            if accepted:
                self._disarmed.add(fd)
            else:
                self._rearm(fd)

    def _rearm_listeners(self) -> None:
        while self._disarmed:
            try:
                fd = self._disarmed.pop()
            except KeyError:
                return
            self._rearm(fd)

    def _rearm(self, fd: int) -> None:
        if fd in self._listening:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.modify(fd, _ARMED)

    def _serve(self, conn: Any, fd: int) -> None:
        keepalive = self._handle(conn)
        # A body drain can read into a pipelined next request: the socket no longer shows it.
        while keepalive and conn.parser.unreader.buf.getvalue():
            keepalive = self._handle(conn)
        if keepalive and not getattr(conn, "shut", False):
            conn.timeout = time.monotonic() + self.cfg.keepalive
            with self._lock:
                conn.busy = False
            try:
                self._epoll.modify(fd, _ARMED)
                return
            except (OSError, ValueError):
                pass
        self._conns.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)
        conn.close(graceful=not keepalive and not getattr(conn, "shut", False))
        if not self.alive:
            self._wake.set()  # the stopping main loop counts connections

    def _handle(self, conn: Any) -> bool:
        """Serve one request of ``conn``; whether the connection stays open for another."""
        req = None
        try:
            conn.init()
            if getattr(conn, "is_http2", False):  # TLS ALPN or prior knowledge: gthread's path
                return bool(self.handle_http2(conn))
            req = next(conn.parser)
            if not req:
                return False
            keepalive = bool(self.handle_request(req, conn))
            finish = getattr(conn.parser, "finish_body", None)
            if keepalive and finish is not None:
                keepalive = bool(finish(deadline=time.monotonic() + FIRST_REQUEST_TIMEOUT))
            return keepalive
        except http.errors.NoMoreData as exc:
            self.log.debug("Ignored premature client disconnection. %s", exc)
        except StopIteration as exc:
            self.log.debug("Closing connection. %s", exc)
        except ssl.SSLError as exc:
            if exc.args[0] != ssl.SSL_ERROR_EOF:
                self.handle_error(req, conn.sock, conn.client, exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
        return False

    def handle_request(self, req: Any, conn: Any) -> bool:
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(
                req, conn.sock, conn.client, conn.server, self.cfg,
                response_class=CoalescedResponse,
            )  # fmt: skip
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                    self._wake.set()  # stop accepting now, not on the next turn
                resp.force_close()
            full = len(self._conns) >= self.worker_connections
            if not self.alive or not self.cfg.keepalive or full:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp and resp.headers_sent and resp._pending is None:
                # Timeout abort is SystemExit. Once the response started, a 500 on the same
                # socket would corrupt it.
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True
