"""Replica actions of the local stack and its rolling restart, without an nginx reload.

A replica leaves through its drain file: it stops listening, so nginx's next connection to it
is refused and goes to another replica before anything was sent (nothing is lost, a POST
included), and no reload closes a client's idle keep-alive connection.  Before that, the
other replicas of its pools must be taking traffic again (:mod:`._admission`).  These are the
:class:`~django_arena_scale.stack._runner.LocalStack` methods of the same names, kept apart
from the supervision; they hold the stack's lock and honour its stop request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django_arena_scale.lifecycle import _drain as drain
from django_arena_scale.stack import _admission as admission
from django_arena_scale.stack import _upstreams as upstreams

if TYPE_CHECKING:
    from django_arena_scale.stack._runner import LocalStack, Replica

__all__ = ["kill_replica", "restart_replica", "rolling_restart", "start_replica", "stop_replica"]


def stop_replica(stack: LocalStack, name: str) -> str:
    """Graceful stop without touching nginx: drain file, wait ``drain_delay``, SIGTERM.

    The drain file makes the replica stop listening (its idle keep-alive connections
    close, requests in flight finish), so nginx's next connection to it is refused and
    goes to another replica before anything was sent: nothing is lost, a POST included,
    and no nginx reload closes a client's idle keep-alive connection.  Before that, it
    waits until another replica of each of its pools takes traffic.
    """
    with stack._lock:
        replica = stack.replica(name)
        peers = admission.pool_peers(stack.spec, stack.replicas, replica)
        admission.wait_admitted(
            (r for others in peers for r in others),
            stack.nginx_log_dir,
            stack.spec.fail_timeout,
            stack._stop_requested,
        )
        replica.state = "draining"
        drain.write(replica.drain_file, reason="run_lb_stack")
        stack.write_state()
        _wait_drained(stack, replica)
        replica.state = "stopping"
        stack.write_state()
        outcome = replica.process.stop(stack.spec.chain.server_graceful + 5)
        replica.state = "stopped"
        stack.write_state()
        return outcome


def start_replica(stack: LocalStack, name: str) -> None:
    """Start (or restart) a replica and wait until it is ready.

    nginx sends it traffic as soon as it listens, unless nginx's passive health disabled
    it while it was down (``max_fails`` refused connections): then it rejoins after
    ``fail_timeout`` (:func:`.admission.admitted` says whether).
    """
    with stack._lock:
        replica = stack.replica(name)
        if replica.process.alive():
            replica.process.stop(stack.spec.chain.server_graceful + 5)
        drain.remove(replica.drain_file)
        replica.process.start()
        replica.state = "starting"
        stack.write_state()
        stack._wait_ready(replica)
        stack.write_state()


def restart_replica(stack: LocalStack, name: str) -> None:
    stop_replica(stack, name)
    start_replica(stack, name)


def _wait_drained(stack: LocalStack, replica: Replica) -> None:
    """Wait ``drain_delay``, then until nginx closed its connections to ``replica``.

    The replica no longer listens and answers ``Connection: close``; nginx closes its idle
    upstream connections after its ``keepalive_timeout``.  Stopping the replica before that
    would close a connection nginx may be sending a request on.  Bounded by that timeout.
    """
    started = time.monotonic()
    time.sleep(stack.options.drain_delay)
    deadline = started + max(
        stack.options.drain_delay, stack.spec.chain.nginx_keepalive_timeout + 2.0
    )
    while time.monotonic() < deadline and not stack._stop_requested.is_set():
        if upstreams.established_connections(replica.port) == 0:
            return
        time.sleep(0.1)


def kill_replica(stack: LocalStack, name: str) -> None:
    """``kill -9`` the replica's whole process group (no drain, no nginx change)."""
    with stack._lock:
        replica = stack.replica(name)
        replica.process.kill()
        replica.state = "killed"
        stack.write_state()


def rolling_restart(stack: LocalStack) -> None:
    """Restart every replica, one at a time, without an nginx reload (see stop_replica);
    done once nginx sends traffic to every replica again."""
    stack.out("Rolling restart: " + ", ".join(stack.replicas))
    for name in list(stack.replicas):
        if stack._stop_requested.is_set():
            return
        started = time.monotonic()
        restart_replica(stack, name)
        stack.out(f"  {name} restarted in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    admission.wait_admitted(
        stack.replicas.values(),
        stack.nginx_log_dir,
        stack.spec.fail_timeout,
        stack._stop_requested,
    )
    stack.out(f"  every replica back in nginx after {time.monotonic() - started:.1f}s")
