"""The drain file: where it is, whether it is there, writing and removing it.

A replica drains while its drain file exists.  Every process looks with one ``stat`` per look,
never cached, so removing the file takes effect at once.  This module is the only one that
finds the path, tests for the file, writes it and removes it. Its callers are the lifecycle
(:class:`~django_arena_scale.lifecycle._state.Lifecycle`), the gunicorn master's watcher,
``manage.py drain`` and the local stack (``run_lb_stack``).

Three readers want the path, each for a reason of its own:

* :func:`settings_path` for the lifecycle of a worker process.  It reads the setting through
  the probes' memoised settings, and a wrongly typed value falls back to the default, since a
  probe must not fail over it.  It returns None before Django is configured.
* :func:`server_path` for the gunicorn master, which usually never loads Django.  It reads
  :data:`ENV_VAR` from the environment first, as the generated configs and the local stack
  set it, and falls back to settings only then.
* :func:`setting_path` for ``manage.py drain``, where an invalid setting is an error the
  operator sees.

No Django import at module level: server config files import the lifecycle before Django is
configured.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

__all__ = [
    "ENV_VAR",
    "DirectoryMissing",
    "present",
    "remove",
    "server_path",
    "setting_path",
    "settings_path",
    "write",
]

logger = logging.getLogger("django_arena_scale.lifecycle")

#: The setting, and the environment variable the gunicorn master and the generated configs use.
ENV_VAR = "ARENA_SCALE_DRAIN_FILE"

PathLike = str | os.PathLike[str]


class DirectoryMissing(FileNotFoundError):
    """The drain file's directory does not exist (the message names it)."""


def present(path: PathLike | None) -> bool:
    """Whether the drain file ``path`` exists (False when no path is configured)."""
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


def write(path: PathLike, *, reason: str) -> None:
    """Create ``path`` atomically (temp file in the same directory, then rename).

    The body names the reason, the time and the writing process, for a human who looks.
    Raises :class:`DirectoryMissing` (a ``FileNotFoundError``) naming the directory when it
    does not exist.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        msg = f"The drain file's directory {directory!r} does not exist; create it first."
        raise DirectoryMissing(msg)
    body = json.dumps({"reason": reason, "since": time.time(), "pid": os.getpid()})
    fd, tmp = tempfile.mkstemp(prefix=".drain-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove(path: PathLike) -> bool:
    """Remove ``path``; False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def settings_path() -> str | None:
    """The setting once Django settings are configured, else None (a worker's lifecycle)."""
    try:
        from django.conf import settings
    except ImportError:  # pragma: no cover - Django is a dependency
        return None
    if not settings.configured:
        return None
    from django_arena_scale.health import _fastconf as fastconf

    value: str | None = fastconf.get("DRAIN_FILE")
    return value


def server_path() -> str | None:
    """:data:`ENV_VAR` from the environment, else from Django's settings (the gunicorn master).

    The master usually never loads Django; the generated configs (compose, Kubernetes, the
    local stack) pass the path in the environment.  Settings are read only as a fallback.
    """
    path = os.environ.get(ENV_VAR)
    if path:
        return path
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    try:
        from django.conf import settings

        value = getattr(settings, ENV_VAR, None)
    except Exception:  # settings that cannot be imported here: the workers will say so
        logger.warning("Could not read %s from settings.", ENV_VAR, exc_info=True)
        return None
    return value if isinstance(value, str) and value else None


def setting_path() -> str | None:
    """The setting as ``manage.py drain`` reads it (an invalid value raises)."""
    from django_arena_scale._conf import conf

    value: str | None = conf.DRAIN_FILE
    return value
