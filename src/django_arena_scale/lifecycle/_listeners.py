"""Closing a replica's listening sockets without resetting a connection.

A listening TCP socket stops accepting only when its last descriptor closes (the gunicorn
master and every worker hold one).  The connections the kernel queued in it at that instant
are reset, and each of them carries a request the client (nginx) already sent: a POST lost
that way is not retried.  Closing safely takes three steps:

1. the master closes its copy first and each worker keeps accepting until then
   (:func:`master_holds`), so the last descriptor to close belongs to a worker that can
   serve what is queued;
2. that worker stops new handshakes (:func:`refuse_handshakes`): a socket filter drops
   incoming SYNs, so no connection can join the queue any more.  A client whose SYN is
   dropped sends it again after about a second, finds nothing listening and is refused
   (nginx then tries another server, safe even for a POST);
3. it serves everything queued, waiting :data:`HANDSHAKE_GRACE` seconds for handshakes
   already under way (a SYN answered just before the filter), and closes.

Without step 2 the window between the last look at the queue and ``close()`` is short but
not empty: a worker thread can hold the GIL for milliseconds there, and under load several
connections arrive in that time.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("django_arena_scale.lifecycle")

__all__ = ["HANDSHAKE_GRACE", "master_holds", "refuse_handshakes"]

#: Seconds a leaving worker keeps serving its queue after it stopped new handshakes: one
#: round trip of a handshake already answered (loopback and container networks are far below).
HANDSHAKE_GRACE = 0.1

_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# Classic BPF, run on each packet with the data starting at the TCP header:
#   ldb [13]            A = the TCP flags byte
#   jset #0x02, 0, 1    SYN set?  yes: next instruction, no: skip one
#   ret #0              drop (a new handshake)
#   ret #0xffffffff     keep (every other packet: the ACK ending a handshake, data)
_DROP_SYN = (
    (0x30, 0, 0, 13),
    (0x45, 0, 1, 0x02),
    (0x06, 0, 0, 0),
    (0x06, 0, 0, 0xFFFFFFFF),
)


def master_holds(sockets: Iterable[Any]) -> bool:
    """Whether this worker's parent (the gunicorn master) still has one of ``sockets`` open.

    Linux ``/proc``; where it cannot be read the answer is False (do not wait).
    """
    try:
        targets = {f"socket:[{os.fstat(sock.fileno()).st_ino}]" for sock in sockets}
        fd_dir = f"/proc/{os.getppid()}/fd"
        for name in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{name}") in targets:
                    return True
            except OSError:
                continue
    except (OSError, ValueError):
        return False
    return False


def refuse_handshakes(sock: Any) -> bool:
    """Make the listening ``sock`` drop new TCP handshakes (SYNs); True if it now does.

    Connections already queued or half-way through their handshake still complete and can be
    accepted.  Linux only (a socket filter needs no privilege); elsewhere, or for a
    non-TCP socket, nothing changes and the answer is False.
    """
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        code = b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN)
        program = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(program))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except (OSError, ValueError, AttributeError, struct.error) as exc:
        logger.debug("Cannot filter handshakes on %r: %s", sock, exc)
        return False
    return True
