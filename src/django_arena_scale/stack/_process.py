"""One supervised child process in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ManagedProcess:
    """A child started in a new session, so signals reach it and every process it forks.

    Output goes to ``log_path`` (appended; a restart keeps the history).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "new"

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name!r} pid={self.pid} state={self.state}>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        if self.alive():
            return
        stdout: int | object = subprocess.DEVNULL
        log = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            stdout = log
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,  # type: ignore[arg-type]
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.state = "failed"
            msg = f"Cannot start {self.name} ({self.argv[0]!r}): {exc.strerror or exc}."
            from django_arena_scale.stack._errors import StackError

            raise StackError(msg) from exc
        finally:
            if log is not None:
                log.close()
        self.state = "starting"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int, *, group: bool = False) -> bool:
        """Send ``signum`` to the child (or its whole group); False if it is gone."""
        if not self.alive():
            return False
        assert self.proc is not None
        try:
            if group:
                os.killpg(self.proc.pid, signum)
            else:
                self.proc.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace: float, *, signum: int = _signal.SIGTERM) -> str:
        """Ask the child to stop; SIGKILL its group after ``grace`` seconds.

        Returns ``"stopped"`` (exited in time), ``"killed"`` (needed SIGKILL) or ``"gone"``.
        """
        if self.proc is None:
            return "gone"
        if not self.alive():
            self._reap_group()
            return "gone"
        self.state = "stopping"
        self.signal(signum)
        try:
            self.proc.wait(timeout=grace)
            outcome = "stopped"
        except subprocess.TimeoutExpired:
            self.kill()
            outcome = "killed"
        self._reap_group()
        self.state = "stopped"
        return outcome

    def kill(self) -> None:
        """SIGKILL the whole group at once (the ``kill -9`` fault)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, _signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.state = "killed"

    def _reap_group(self) -> None:
        # Workers orphaned by a dead master keep the group alive: leave nothing behind.
        if self.proc is None:
            return
        for _ in range(50):
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, _signal.SIGKILL)
            time.sleep(0.02)
