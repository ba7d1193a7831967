"""The stack's Prometheus (``run_lb_stack --prometheus``): the ``prometheus`` binary on a free
127.0.0.1 port, scraping every replica with the rendered local config.

The local render writes ``prometheus/prometheus.yml`` (one target per replica port, every
second) and ``prometheus/alerts.yml`` into the stack's config directory; this module writes
the bearer token file the config names beside them (mode 0600), keeps the TSDB under the
state directory, starts the server and waits for ``/-/ready``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django_arena_scale.deploy._monitoring import LOCAL_CONFIG, LOCAL_TOKEN_FILE
from django_arena_scale.stack._errors import StackError
from django_arena_scale.stack._host import free_port_range, http_get, log_tail
from django_arena_scale.stack._process import ManagedProcess

__all__ = ["PrometheusServer", "launch", "write_token"]

#: Seconds the server gets to answer ``/-/ready`` (it replays nothing on a fresh TSDB).
READY_TIMEOUT = 30.0


@dataclass
class PrometheusServer:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "pid": self.process.pid, "state": self.process.state}


def write_token(conf_dir: Path, token: str) -> Path:
    """The bearer token file the local scrape config reads (``credentials_file``), 0600."""
    path = (conf_dir / LOCAL_CONFIG).parent / LOCAL_TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def launch(
    binary: str, conf_dir: Path, data_dir: Path, log_dir: Path, *, start_port: int
) -> PrometheusServer:
    """Start Prometheus on a free port from ``start_port`` and wait until it is ready."""
    config = conf_dir / LOCAL_CONFIG
    if not config.exists():
        msg = f"The local render has no {LOCAL_CONFIG} in {str(conf_dir)!r}."
        raise StackError(msg)
    port = free_port_range(1, start=start_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
    process = ManagedProcess("prometheus", argv, log_path=log_dir / "prometheus.log")
    process.start()
    server = PrometheusServer(port, process)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if not process.alive():
            msg = (
                f"prometheus exited with code {process.returncode()}; last lines of "
                f"{process.log_path}:\n{log_tail(process.log_path or Path())}"
            )
            raise StackError(msg)
        try:
            if http_get(port, "/-/ready")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.stop(5)
            msg = f"prometheus did not answer /-/ready on 127.0.0.1:{port} in {READY_TIMEOUT:g}s."
            raise StackError(msg)
        time.sleep(0.1)
    process.state = "running"
    return server
