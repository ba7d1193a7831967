"""What a preloading master imports for its workers, and how a worker leaves (no server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import override_settings

from django_arena_scale.lifecycle import gunicorn as ghooks

SRC = Path(__file__).resolve().parents[2] / "src"


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def test_master_imports_cache_session_and_database_backends() -> None:
    """Modules Django imports on a worker's first request are imported by the master."""
    backend = "django.core.cache.backends.filebased"
    engine = "django.contrib.sessions.backends.signed_cookies"
    _forget(backend)
    _forget(engine)
    caches = {"default": {"BACKEND": f"{backend}.FileBasedCache", "LOCATION": "/nonexistent"}}
    with override_settings(CACHES=caches, SESSION_ENGINE=engine):
        assert ghooks._import_lazy_modules() == []
        assert backend in sys.modules
        assert engine in sys.modules
        # Built and thrown away: the handler keeps no backend of the master's.
        from django.core.cache import caches as handler

        assert not hasattr(handler._connections, "default")


def test_master_import_failure_is_named_and_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caches = {"default": {"BACKEND": "no_such_package_for_arena.Cache"}}
    with override_settings(CACHES=caches):
        assert ghooks._import_lazy_modules() == ["cache 'default'"]
    assert "Could not import cache 'default' in the master." in caplog.text


_EXIT = """
import atexit, logging, os, sys
from django_arena_scale.lifecycle.gunicorn import _exit_without_teardown

class Teardown:
    def __del__(self, write=os.write):
        write(1, b"teardown ran\\n")

KEEP = Teardown()  # freed (and its __del__ run) only by the interpreter's teardown
atexit.register(lambda: print("atexit ran", flush=True))
handler = logging.StreamHandler(sys.stdout)
handler.flush = lambda: (print("log flushed"), sys.stdout.flush())
logging.getLogger().addHandler(handler)
sys.stdout.write("buffered, not flushed yet;")
code = {code!r}
_exit_without_teardown(SystemExit(code) if code != "other" else RuntimeError("x"))
print("returned", flush=True)
sys.exit(7)
"""


def _run(code: object) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(_EXIT).format(code=code)
    return subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("code", [0, None])
def test_normal_worker_exit_skips_teardown_but_runs_atexit_and_flushes(code: object) -> None:
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "buffered, not flushed yet;" in out.stdout
    assert "atexit ran" in out.stdout
    assert "log flushed" in out.stdout
    assert "teardown ran" not in out.stdout
    assert "returned" not in out.stdout


@pytest.mark.parametrize("code", [3, 4, -1, "other"])
def test_other_exits_are_left_to_gunicorn(code: object) -> None:
    """A boot error (3), an app-load error (4) or any other exception: the master must see
    gunicorn's own exit code, so nothing happens here."""
    out = _run(code)
    assert "returned" in out.stdout
    assert out.returncode == 7
    assert "teardown ran" in out.stdout


def test_worker_exit_hook_only_exits_in_the_worker_itself() -> None:
    """The master calls worker_exit too (for a worker that vanished): it must not exit."""

    class Other:
        pid = -1

    try:
        raise SystemExit(0)
    except SystemExit:
        ghooks.worker_exit(object(), Other())  # returns: not this process's worker


_MASTER = """
import signal, subprocess, sys
flag = sys.argv[1]
signal.signal(signal.SIGCHLD, lambda sig, frame: open(flag, "a").write("chld\\n"))
child = subprocess.run([sys.executable, "-c", sys.argv[2], flag], capture_output=True, text=True)
print(child.stdout + child.stderr, end="")
"""

_RETIRING_WORKER = """
import os, sys, tempfile, time
from django_arena_scale.lifecycle.gunicorn import _mark_retiring

class Tmp:
    def __init__(self):
        self.file = tempfile.TemporaryFile()
    def fileno(self):
        return self.file.fileno()
    def notify(self):
        pass

class Worker:
    pid = os.getpid()
    ppid = os.getppid()
    tmp = Tmp()

flag = sys.argv[1]
worker = Worker()
_mark_retiring(worker)
deadline = time.monotonic() + 30
while not os.path.exists(flag) and time.monotonic() < deadline:
    time.sleep(0.01)
print("size", os.fstat(worker.tmp.fileno()).st_size, "woken", os.path.exists(flag))
"""


def test_retiring_worker_marks_its_heartbeat_file_and_wakes_the_master(tmp_path: Path) -> None:
    """The master learns at once (SIGCHLD, before the worker exits), not on its next turn."""
    flag = tmp_path / "master-woken"
    out = subprocess.run(
        [sys.executable, "-c", _MASTER, str(flag), _RETIRING_WORKER],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.stdout.strip() == "size 1 woken True", out.stdout + out.stderr
