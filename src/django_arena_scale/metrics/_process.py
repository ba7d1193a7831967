"""The multiprocess directory, seen from the server's master process.

prometheus_client decides once, when it is first imported, whether values live in memory (one
process) or in files under ``PROMETHEUS_MULTIPROC_DIR`` (every worker of a replica writes its
own files and a scrape merges them).  So the master sets the directory before any worker
imports prometheus_client, and never imports it first itself: this module does not import it.

* :func:`prepare_multiprocess_dir` (master start, gunicorn's ``on_starting``): the directory
  named by ``PROMETHEUS_MULTIPROC_DIR`` (created if missing), or a new private temporary one;
  files a previous master left there are removed, so counters start at zero with the new
  master, as Prometheus' ``rate()`` expects of a restarted target.
* :func:`mark_worker_dead` (gunicorn's ``child_exit``, in the master): removes the files of
  the "live" gauges of a worker that exited (open streams, WebSocket connections, breaker and
  readiness state), so they stop counting.  Counter and histogram files stay: a worker
  recycled by ``max_requests`` keeps its requests in the totals.
* :func:`cleanup_multiprocess_dir` (gunicorn's ``on_exit``): removes the files, and the
  directory when :func:`prepare_multiprocess_dir` created it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping

from django_arena_scale import ArenaScaleError

__all__ = [
    "MULTIPROC_ENV",
    "cleanup_multiprocess_dir",
    "mark_worker_dead",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
]

#: The environment variable prometheus_client reads.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_CREATED_ENV = "ARENA_METRICS_DIR_CREATED"
_TEMP_PREFIX = "arena-metrics-"


def multiprocess_dir(environ: MutableMapping[str, str] | None = None) -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR``, or None (one process, values in memory)."""
    env = os.environ if environ is None else environ
    return env.get(MULTIPROC_ENV) or None


def _remove_db_files(path: str) -> None:
    for name in glob.glob(os.path.join(glob.escape(path), "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def prepare_multiprocess_dir(
    path: str | None = None, *, environ: MutableMapping[str, str] | None = None
) -> str:
    """Choose and empty the directory every worker writes its metrics to; returns it.

    ``path``, else ``PROMETHEUS_MULTIPROC_DIR``, else a new ``arena-metrics-*`` temporary
    directory; the environment variable is set to it, so the workers forked afterwards use it.
    Only ``*.db`` files are removed (prometheus_client's); anything else there is left alone.
    Call it in the master before the first worker starts (gunicorn's ``on_starting``).
    """
    env = os.environ if environ is None else environ
    values = sys.modules.get("prometheus_client.values")
    cls = getattr(getattr(values, "ValueClass", None), "__name__", "")
    if cls == "MutexValue":  # the in-memory value class: chosen at import, without the variable
        msg = (
            f"prometheus_client was imported in this process before {MULTIPROC_ENV} was set, "
            "so workers forked from it would keep their metrics in memory; call "
            "prepare_multiprocess_dir() before anything imports prometheus_client (gunicorn's "
            "on_starting hook, without a --preload that imports it first)."
        )
        raise ArenaScaleError(msg)
    chosen = path or env.get(MULTIPROC_ENV) or ""
    if chosen:
        if os.path.exists(chosen) and not os.path.isdir(chosen):
            msg = f"{MULTIPROC_ENV}={chosen!r} exists and is not a directory; expected a directory."
            raise ArenaScaleError(msg)
        try:
            os.makedirs(chosen, mode=0o700, exist_ok=True)
        except OSError as exc:
            msg = (
                f"Cannot create the metrics directory {chosen!r} ({exc.strerror}); "
                "expected a writable path."
            )
            raise ArenaScaleError(msg) from exc
        env.pop(_CREATED_ENV, None)
    else:
        chosen = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
        env[_CREATED_ENV] = chosen
    _remove_db_files(chosen)
    env[MULTIPROC_ENV] = chosen
    return chosen


def mark_worker_dead(pid: int, path: str | None = None) -> None:
    """Forget the live gauges of worker ``pid`` (gunicorn's ``child_exit`` hook, master side).

    The same as ``prometheus_client.multiprocess.mark_process_dead``, without importing
    prometheus_client into the master.  Does nothing in single-process mode.
    """
    directory = path or multiprocess_dir()
    if not directory:
        return
    for name in glob.glob(os.path.join(glob.escape(directory), f"gauge_live*_{int(pid)}.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def cleanup_multiprocess_dir(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove the metric files at master exit, and the directory if it was a temporary one."""
    env = os.environ if environ is None else environ
    directory = multiprocess_dir(env)
    if not directory:
        return
    if env.get(_CREATED_ENV) == directory:
        shutil.rmtree(directory, ignore_errors=True)
        env.pop(_CREATED_ENV, None)
    else:
        _remove_db_files(directory)
