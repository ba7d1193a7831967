"""gunicorn server hooks.  Import them from ``gunicorn.conf.py``::

    from django_arena_scale.lifecycle.gunicorn import (  # noqa: F401
        on_starting, when_ready, post_worker_init, worker_int, worker_abort, worker_exit,
        child_exit, on_exit,
    )

* ``on_starting``, ``child_exit``, ``on_exit`` (master): the Prometheus multiprocess directory
  (``PROMETHEUS_MULTIPROC_DIR``, else a private temporary one) is emptied before the first
  worker starts, a dead worker's live gauges are dropped, the files removed at exit; so the
  metrics of a replica are exact across its workers and across worker recycling.  With
  ``preload_app`` the master imports the app (and prometheus_client) before ``on_starting``:
  the config file then calls :func:`prepare_master` first, at load time (see below).

* ``when_ready`` (master): watches the drain file.  While it exists the replica does not
  listen: the master and every worker close their listening sockets, so a load balancer's
  new connection is refused before anything is sent (nginx then tries the next server, safe
  even for a POST, and its passive health marks this one failed) and no nginx reload is
  needed.  When the file goes away the master listens again and replaces its workers
  (a graceful ``SIGHUP`` reload).
* ``post_worker_init``: the worker's main loop now beats a heartbeat that ``/live/`` reads
  (a wedged worker stops beating) and, once the replica drains (drain file, or SIGTERM),
  stops listening and answers every further request on an open connection with
  ``Connection: close``.  It never closes an idle keep-alive connection itself: the client
  (nginx) may be sending a request on it at that instant, and a POST lost that way is not
  retried.  nginx closes its idle upstream connections after its ``keepalive_timeout``,
  which the generated configs keep shorter than the drain.  SIGTERM also begins the drain
  (so open SSE streams end with a reconnect event instead of being cut at
  ``graceful_timeout``); the warm-ups start (the worker turns READY once they ran).
* ``worker_int`` (SIGINT/SIGQUIT, fast stop) and ``worker_exit`` (after a graceful stop):
  begin the drain and run the ``@on_shutdown`` hooks once.
* ``worker_abort`` (SIGABRT after a worker timeout): logs every thread's stack, since a
  timed-out worker is otherwise a mystery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

from django_arena_scale.lifecycle import _drain as drain
from django_arena_scale.lifecycle._hooks import get_hooks, run_shutdown_hooks
from django_arena_scale.lifecycle._listeners import HANDSHAKE_GRACE, master_holds, refuse_handshakes
from django_arena_scale.lifecycle._state import State, get_lifecycle
from django_arena_scale.metrics._process import (
    cleanup_multiprocess_dir,
    mark_worker_dead,
    prepare_multiprocess_dir,
)

logger = logging.getLogger("django_arena_scale.lifecycle")

__all__ = [
    "child_exit",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "prepare_master",
    "when_ready",
    "worker_abort",
    "worker_exit",
    "worker_int",
]

#: Seconds between two looks at the drain file by the master.
DRAIN_POLL_INTERVAL = 0.2
#: At most this many queued connections are accepted by a worker that stops listening.
_ACCEPT_SWEEP_LIMIT = 1024


_PREPARED: dict[int, str] = {}


def prepare_master() -> str:
    """Choose and empty the metrics directory, once per master process; returns it.

    A generated ``gunicorn.conf.py`` calls it while gunicorn loads the file (``__name__ ==
    "__config__"``), before ``preload_app`` imports the app: prometheus_client picks its
    multiprocess value class at import, from ``PROMETHEUS_MULTIPROC_DIR``.  Reloading the
    config (``SIGHUP``) in the same master changes nothing.
    """
    pid = os.getpid()
    if pid not in _PREPARED:
        _PREPARED[pid] = prepare_multiprocess_dir()
    return _PREPARED[pid]


def on_starting(server: Any) -> None:
    """Prepare the metrics directory and log the graceful-shutdown timeouts (one line)."""
    directory = prepare_master()
    cfg = getattr(server, "cfg", None)
    if cfg is None:
        return
    logger.info(
        "django-arena-scale: graceful_timeout=%ss timeout=%ss worker_class=%s metrics_dir=%s",
        getattr(cfg, "graceful_timeout", "?"),
        getattr(cfg, "timeout", "?"),
        getattr(cfg, "worker_class_str", "?"),
        directory,
    )


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker exited: its live gauges (open streams, state) stop counting."""
    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Master exit: remove the metric files (and the directory if it was a temporary one)."""
    cleanup_multiprocess_dir()


def when_ready(server: Any) -> None:
    """Master: stop listening while the drain file exists, listen again when it is gone;
    with ``preload_app``, import what Django otherwise imports on a worker's first request
    (:func:`_import_lazy_modules`), so a worker forked later imports nothing itself."""
    if getattr(getattr(server, "cfg", None), "preload_app", False):
        _import_lazy_modules()
    _replace_retiring_workers(server)
    watcher = ListenerDrainWatcher(server, drain.server_path())
    if watcher.path:
        watcher.start()


def _import_lazy_modules() -> list[str]:
    """Import, in the master, the modules Django imports lazily on a worker's first request.

    The URLconf and its views, every cache backend (and its client: django-redis and
    redis-py), the session engine and every database backend.  Without this each worker,
    and each worker recycled at ``max_requests``, imported them again after the fork: with
    django-redis that was about half a second of CPU per worker, paid while it served.  The
    backends are built and thrown away (nothing connects: Django and django-redis connect
    on first use); the worker builds its own.  Returns what failed to import, each logged:
    the worker then imports it itself (and reports the error on its first request).
    """
    from django.conf import settings

    failed: list[str] = []
    if not settings.configured:
        return failed

    def attempt(what: str, load: Any) -> None:
        try:
            load()
        except Exception:
            failed.append(what)
            logger.warning("Could not import %s in the master.", what, exc_info=True)

    from importlib import import_module

    from django.core.cache import caches
    from django.db import connections
    from django.urls import get_resolver

    attempt("the URLconf", lambda: get_resolver().url_patterns)
    for alias in settings.CACHES:
        attempt(f"cache {alias!r}", lambda alias=alias: caches.create_connection(alias))
    engine = getattr(settings, "SESSION_ENGINE", "")
    if engine:
        attempt(f"session engine {engine!r}", lambda: import_module(engine))
    for alias in settings.DATABASES:
        attempt(f"database {alias!r}", lambda alias=alias: connections.create_connection(alias))
    return failed


def post_worker_init(worker: Any) -> None:
    """Start the heartbeat, make SIGTERM drain, and start the warm-ups (then READY)."""
    get_hooks().reset()
    _beat_on_notify(worker)
    _close_connections_on_drain(worker)
    _drain_on_sigterm(worker)
    _start_warmups()


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT: the worker exits right after this; drain and run the hooks first."""
    get_lifecycle().begin_drain()
    run_shutdown_hooks(sender="gunicorn.worker_int")


def worker_abort(worker: Any) -> None:
    """SIGABRT (worker timeout): log where every thread was stuck."""
    get_lifecycle().begin_drain()
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.append(f"Thread {thread.name!r}:\n" + "".join(traceback.format_stack(frame)))
    logger.error(
        "Worker %s aborted (timeout); heartbeat age %s s.\n%s",
        getattr(worker, "pid", "?"),
        get_lifecycle().heartbeat_age(),
        "\n".join(lines),
    )


def worker_exit(server: Any, worker: Any) -> None:
    """After the worker left its loop (in-flight requests done): run the shutdown hooks, then
    leave without tearing the interpreter down (:func:`_exit_without_teardown`)."""
    get_lifecycle().begin_drain()
    run_shutdown_hooks(sender="gunicorn.worker_exit")
    if getattr(worker, "pid", None) == os.getpid():
        _exit_without_teardown(sys.exc_info()[1])


def _exit_without_teardown(leaving: BaseException | None) -> None:
    """A worker leaving normally (``SystemExit`` 0) exits here, skipping the interpreter's
    teardown; any other exit (a boot or app-load error, whose code the master acts on) is
    left to gunicorn.

    gunicorn ends a worker with ``sys.exit(0)``, and Python then frees every module and object
    one by one.  In a worker forked from a preloaded master that touches, and so copies, every
    page it shares with the master: about 0.3 s of CPU per worker, paid again at every
    ``max_requests`` recycling (measured in docs/benchmarks/throughput.md).  What an exit must
    still do is done first: the ``atexit`` handlers (error reporters flush there), the logging
    handlers and the standard streams.  Sockets and files are closed by the kernel; the
    metric files are shared memory, already up to date.
    """
    if not isinstance(leaving, SystemExit) or leaving.code not in (0, None):
        return
    import atexit

    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(0)


class ListenerDrainWatcher:
    """The master's side of draining: no listening socket while the drain file exists.

    A daemon thread looks at the file every :data:`DRAIN_POLL_INTERVAL` seconds.  On drain it
    closes the master's copies of the listening sockets (each worker closes its own, see
    :func:`stop_listening`) and keeps ``LISTENERS`` empty, so a worker forked meanwhile
    (``max_requests``) listens on nothing.  When the file is removed it binds the addresses
    again and sends itself ``SIGHUP``: gunicorn's graceful reload starts workers on the new
    sockets and stops the old ones.  Nothing happens once gunicorn itself is stopping.
    """

    def __init__(self, server: Any, path: str | None, *, interval: float = DRAIN_POLL_INTERVAL):
        self.server = server
        self.path = path
        self.interval = interval
        self.closed = False
        self.stopping = False
        self._stop_event = threading.Event()
        original_stop = server.stop

        def stop(*args: Any, **kwargs: Any) -> None:
            self.stopping = True
            self._stop_event.set()
            original_stop(*args, **kwargs)

        server.stop = stop

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="arena-drain-watcher", daemon=True)
        thread.start()

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.step()
            except Exception:  # never kill the master over this; say why
                logger.exception("Drain watcher failed; listening sockets left as they are.")
                return

    def step(self) -> None:
        """Act on the drain file's presence once (the thread's body; tests call it)."""
        if self.stopping or not self.path:
            return
        draining = drain.present(self.path)
        if draining and not self.closed:
            listeners = list(self.server.LISTENERS)
            self.server.LISTENERS = []
            for listener in listeners:
                listener.close()
            self.closed = True
            logger.info(
                "Drain file %s present: not listening (%d socket(s) closed).",
                self.path,
                len(listeners),
            )
        elif not draining and self.closed:
            from gunicorn import sock

            self.server.LISTENERS = sock.create_sockets(self.server.cfg, self.server.log)
            self.closed = False
            logger.info("Drain file %s removed: listening again; reloading workers.", self.path)
            os.kill(os.getpid(), signal.SIGHUP)


def stop_listening(worker: Any) -> int | None:
    """Close a gthread worker's listening sockets, serving what the kernel already queued.

    Returns how many queued connections were accepted first, or None while the master still
    holds the sockets (try again on the next loop turn).  The steps and why are in
    :mod:`django_arena_scale.lifecycle._listeners`.  Runs in the worker's main loop (the only
    thread that touches its poller).  Other worker classes are left alone (the uvicorn worker
    stops listening in its server, ``lifecycle.uvicorn``).
    """
    sockets = list(getattr(worker, "sockets", None) or [])
    if not sockets or not hasattr(worker, "set_accept_enabled"):
        return 0
    if master_holds(sockets):
        return None
    filtered = [refuse_handshakes(listener) for listener in sockets]
    deadline = time.monotonic() + (HANDSHAKE_GRACE if any(filtered) else 0.0)
    accepted = 0
    while accepted < _ACCEPT_SWEEP_LIMIT:
        wait = max(0.0, deadline - time.monotonic())
        try:
            readable, _, _ = select.select(sockets, [], [], wait)
        except (OSError, ValueError):
            break
        if not readable:
            if wait <= 0.0:
                break
            continue
        for listener in readable:
            worker.accept(listener)
            accepted += 1
    worker.set_accept_enabled(False)
    worker.sockets = []
    for listener in sockets:
        listener.close()
    return accepted


def _close_connections_on_drain(worker: Any) -> None:
    """While draining, every response of a gthread worker closes its connection.

    And a stopping gthread worker (SIGTERM, ``max_requests``) keeps its idle keep-alive
    connections for their whole keep-alive timeout instead of gunicorn's short linger: the
    proxy closes them first (its timeout is shorter), so none is closed from this side under
    a request the proxy is sending.  Requests that arrive meanwhile are answered with
    ``Connection: close`` (gunicorn does that while stopping).  A worker that retires at
    ``max_requests`` outside a drain tells the master after that request, so its successor
    starts at once (:func:`_mark_retiring`).
    """
    original = getattr(worker, "handle_request", None)
    if original is None or getattr(original, "_arena_drain", False):
        return
    if not hasattr(worker, "set_accept_enabled"):
        return
    module: Any = sys.modules.get(type(worker).__module__)
    if module is not None and hasattr(module, "STOP_KEEPALIVE_LINGER"):
        module.STOP_KEEPALIVE_LINGER = float(getattr(worker.cfg, "keepalive", 2) or 2)
    lifecycle = get_lifecycle()
    marked = threading.Lock()  # held once the master was told this worker retires

    def handle_request(req: Any, conn: Any) -> Any:
        draining = getattr(worker, "_arena_draining", False) or lifecycle.draining_requested
        if draining:
            # gunicorn answers "Connection: close" and closes after the response when the
            # request asked for it; the request's own headers are the portable switch.
            req.headers.append(("CONNECTION", "close"))
        try:
            return original(req, conn)
        finally:
            # gunicorn turns alive off in this request once nr reaches max_requests.
            retiring = not worker.alive and worker.nr >= worker.max_requests
            if retiring and not draining and marked.acquire(blocking=False):
                _mark_retiring(worker)

    handle_request._arena_drain = True  # type: ignore[attr-defined]
    worker.handle_request = handle_request


def _replace_retiring_workers(server: Any) -> None:
    """Master: a worker retiring at ``max_requests`` is replaced at once, not when it exits.

    A retiring gthread worker accepts nothing new but keeps its idle keep-alive connections
    until the proxy closes them (see :func:`_close_connections_on_drain`), up to the proxy's
    keep-alive timeout, and gunicorn starts a successor only once a worker exited: without
    this the replica serves with a worker fewer for seconds after every recycling, a large
    share of the time under load.  Each turn of the master's loop counts the workers that
    marked themselves retiring (:func:`_mark_retiring`) and keeps that many more than the
    configured number, so none of them is stopped to restore the count either.  ``SIGTTIN``
    and ``SIGTTOU`` still change the configured number.
    """
    original = getattr(server, "manage_workers", None)
    if original is None or getattr(original, "_arena_retiring", False):
        return
    added = 0

    def manage_workers() -> None:
        nonlocal added
        retiring = sum(1 for w in list(server.WORKERS.values()) if _is_retiring(w))
        if retiring != added:
            server.num_workers = server.num_workers - added + retiring
            added = retiring
        original()

    manage_workers._arena_retiring = True  # type: ignore[attr-defined]
    server.manage_workers = manage_workers


def _is_retiring(worker: Any) -> bool:
    try:
        return os.fstat(worker.tmp.fileno()).st_size > 0
    except (AttributeError, OSError, ValueError):
        return False


def _mark_retiring(worker: Any) -> None:
    """Tell the master this worker is retiring: its heartbeat file (shared with the master,
    empty until now; gunicorn only changes its times) gets one byte, and the master is woken
    with ``SIGCHLD`` (it then reaps nobody and manages its workers at once: without it the
    master noticed on its next one-second turn, and the replica served with a worker fewer
    until then)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.ftruncate(worker.tmp.fileno(), 1)
        worker.tmp.notify()  # the write set a wall-clock mtime: a heartbeat again
    master = getattr(worker, "ppid", None)
    if isinstance(master, int) and master > 1 and master == os.getppid():
        with contextlib.suppress(OSError):
            os.kill(master, signal.SIGCHLD)


def _beat_on_notify(worker: Any) -> None:
    # gunicorn's worker loop calls notify() on every iteration (and the uvicorn worker from
    # its server tick), so a heartbeat there stops exactly when the worker is wedged.  The
    # same place notices the drain: it runs in the worker's main loop.
    lifecycle = get_lifecycle()
    original = worker.notify
    if getattr(original, "_arena_heartbeat", False):
        return
    gthread = hasattr(worker, "set_accept_enabled")

    def notify() -> None:
        lifecycle.heartbeat()
        listening = gthread and not getattr(worker, "_arena_listening_stopped", False)
        if listening and (
            getattr(worker, "_arena_draining", False) or lifecycle.state is State.DRAINING
        ):
            worker._arena_draining = True
            swept = stop_listening(worker)
            if swept is not None:
                worker._arena_listening_stopped = True
                logger.info(
                    "Worker %s draining: stopped listening (%d queued connection(s) served).",
                    getattr(worker, "pid", "?"),
                    swept,
                )
        original()

    notify._arena_heartbeat = True  # type: ignore[attr-defined]
    worker.notify = notify
    lifecycle.heartbeat()


def _drain_on_sigterm(worker: Any) -> None:
    # Only in the main thread, and only where the worker installed its own SIGTERM handler
    # (the uvicorn worker leaves SIG_DFL and drains through its server subclass instead).
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or getattr(previous, "_arena_drain", False):
        return

    def handle_term(sig: int, frame: FrameType | None) -> None:
        get_lifecycle().begin_drain()
        previous(sig, frame)

    handle_term._arena_drain = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handle_term)
    signal.siginterrupt(signal.SIGTERM, False)


def _start_warmups() -> None:
    """Start ``ARENA_SCALE_WARMUPS`` (the replica turns READY when they ran, or at once)."""
    try:
        from django_arena_scale.lifecycle._warmup import start_warmups
    except ImportError:  # an install without the probes module: nothing to wait for
        get_lifecycle().mark_ready()
        return
    start_warmups(background=True)
