"""What the local stack needs from the machine: binaries, free loopback ports, one GET.

Small and stateless; :mod:`._runner` re-exports every name (``from
django_arena_scale.stack._runner import free_port_range`` keeps working).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
from pathlib import Path

from django_arena_scale.stack._errors import StackError

__all__ = ["find_binary", "free_port_range", "http_get", "log_tail", "port_in_use"]


def find_binary(name: str, explicit: str | None = None) -> str:
    """Absolute path of ``name`` (``explicit`` first, then PATH, then /usr/sbin)."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        msg = f"The {name} binary {explicit!r} does not exist or is not executable."
        raise StackError(msg)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        msg = (
            f"The {name} binary was not found on PATH or in /usr/sbin; install it "
            f"(Debian: apt-get install {'redis-server' if 'redis' in name else name}) "
            f"or pass its path."
        )
        raise StackError(msg)
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port_range(count: int, *, start: int = 20000, stop: int = 65536) -> int:
    """First port ``p`` from ``start`` such that ``p .. p+count-1`` are all free on 127.0.0.1;
    when none is left below ``stop``, the search wraps around to 1024 (a start near the top of
    the port range, as a stack on a high base port asks for, must not fail)."""
    for low, high in ((start, stop), (1024, min(start + count, stop))):
        port = low
        while port + count <= high:
            busy = [p for p in range(port, port + count) if port_in_use(p)]
            if not busy:
                return port
            port = busy[-1] + 1
    msg = f"No {count} consecutive free ports on 127.0.0.1 (searched from {start})."
    raise StackError(msg)


def http_get(port: int, path: str, *, timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
