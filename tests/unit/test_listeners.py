"""Closing a listening socket under a connect storm: refused, or answered, never reset.

Real loopback sockets (the kernel's behaviour is the subject); no server process.
"""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time

import pytest

from django_arena_scale.lifecycle._listeners import (
    HANDSHAKE_GRACE,
    master_holds,
    refuse_handshakes,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="socket filters are Linux")

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _storm(port: int, stop: threading.Event, outcomes: collections.Counter[str]) -> None:
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except (ConnectionRefusedError, TimeoutError):
                outcome = "refused"
                time.sleep(0.002)
            else:
                try:
                    sock.sendall(REQUEST)
                    data = sock.recv(1024)
                    outcome = (
                        "answered" if data.startswith(b"HTTP/1.1 200") else "closed unanswered"
                    )
                except OSError:
                    outcome = "reset after send"
                finally:
                    sock.close()
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)


def _serve_then_close(*, filtered: bool) -> collections.Counter[str]:
    """Serve a connect storm, then close the way a leaving worker does, except that the last
    look at the queue and close() are 50 ms apart (a thread waiting for the GIL)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    outcomes: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    storm = threading.Thread(target=_storm, args=(port, stop, outcomes))
    storm.start()
    served = 0
    try:
        listener.settimeout(0.05)
        end = time.monotonic() + 0.5
        while time.monotonic() < end or served < 20:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(1024)
            conn.sendall(ANSWER)
            conn.close()
            served += 1
        if filtered:
            assert refuse_handshakes(listener)
        deadline = time.monotonic() + HANDSHAKE_GRACE
        listener.settimeout(0)
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.001)
                continue
            conn.settimeout(2)
            conn.recv(1024)
            conn.sendall(ANSWER)
            conn.close()
        time.sleep(0.05)
        listener.close()
        time.sleep(2.5)  # the dropped SYNs are sent again (after 1 s) and refused
    finally:
        stop.set()
        storm.join(timeout=15)
        listener.close()
    return outcomes


def test_filtered_listener_closes_without_resetting_anyone() -> None:
    outcomes = _serve_then_close(filtered=True)
    assert outcomes["answered"] >= 20, outcomes
    assert outcomes["refused"] > 0, outcomes
    assert set(outcomes) == {"answered", "refused"}, outcomes


def test_without_the_filter_the_same_close_resets_queued_clients() -> None:
    """The premise: the connections queued between the last accept and close() are reset."""
    outcomes = _serve_then_close(filtered=False)
    assert outcomes["reset after send"] > 0, outcomes


def test_filter_drops_only_new_handshakes() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        early = socket.create_connection(("127.0.0.1", port), timeout=2)
        assert refuse_handshakes(listener)
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", port), timeout=0.3)
        accepted, _ = listener.accept()  # the connection queued before the filter
        early.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        accepted.close()
        early.close()
    finally:
        listener.close()


def test_refuse_handshakes_leaves_other_sockets_alone() -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        assert refuse_handshakes(unix) is False


def test_master_holds_is_false_for_a_socket_only_this_process_has() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        assert master_holds([sock]) is False
