"""Whether nginx sends a replica of the local stack traffic, read from nginx's own logs.

nginx open source has no API that says which servers of an upstream it skips.  Its error log
says when passive health disabled one (``max_fails`` failures, skipped for ``fail_timeout``),
and its access log shows a replica answering again afterwards: :func:`admitted` reads the end
of both (the parsing is :mod:`._upstreams`', which stays pure).  The rolling restart waits with
:func:`wait_admitted` before it takes a replica out, so a pool never loses two at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from django_arena_scale.stack import _upstreams as upstreams

if TYPE_CHECKING:
    from django_arena_scale.deploy._spec import DeploymentSpec
    from django_arena_scale.stack._runner import Replica

__all__ = ["ADMIT_MARGIN", "LOG_TAIL", "admitted", "pool_peers", "read_end", "wait_admitted"]

#: Bytes at the end of nginx's logs read to learn which replicas it skips.
LOG_TAIL = 256 * 1024
#: Seconds past nginx's fail_timeout after which a replica counts as back without evidence.
ADMIT_MARGIN = 3.0


def read_end(path: Path, size: int = LOG_TAIL) -> str:
    """The last ``size`` bytes of a log ("" when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def admitted(log_dir: Path, address: str, fail_timeout: int) -> bool:
    """Whether nginx sends the replica at ``address`` traffic (as far as its logs can tell).

    True when nginx never disabled it (passive health, error log), or when the access log
    shows it answering after the last time it did; also once ``fail_timeout`` plus a margin
    passed with no traffic at all (nothing to lose then).
    """
    until = upstreams.disabled_until(read_end(log_dir / "error.log"), address, fail_timeout)
    if until is None:
        return True
    disabled_at = until - fail_timeout - 1.0
    if upstreams.served_since(read_end(log_dir / "access.log"), address, disabled_at + 1):
        return True
    return time.time() > until + ADMIT_MARGIN


def pool_peers(
    spec: DeploymentSpec, replicas: Mapping[str, Replica], replica: Replica
) -> list[list[Replica]]:
    """For each nginx upstream serving ``replica``, the other replicas in it."""
    pools = []
    for members in (spec.api_members, spec.stream_members):
        names = {m.name for m in members}
        if replica.name in names:
            others = [r for r in replicas.values() if r is not replica and r.name in names]
            if others:
                pools.append(others)
    return pools


def wait_admitted(
    replicas: Iterable[Replica], log_dir: Path, fail_timeout: int, stop: threading.Event
) -> None:
    """Wait (bounded: ``fail_timeout`` + margin + 2 s) until nginx sends traffic to each of
    ``replicas`` that is ready (looked at again on every round), or until ``stop`` is set."""
    candidates = list(replicas)
    deadline = time.monotonic() + fail_timeout + ADMIT_MARGIN + 2
    while time.monotonic() < deadline and not stop.is_set():
        if all(
            admitted(log_dir, r.address, fail_timeout) for r in candidates if r.state == "ready"
        ):
            return
        time.sleep(0.2)
