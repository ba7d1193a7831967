"""``CoalescedResponse``: status line and headers leave with the first body bytes, in one send.

A real socket pair carries the bytes; a thin wrapper counts the sends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader

from django_arena_scale.lifecycle.worker import CoalescedResponse


class CountingSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.fixture
def pair() -> Iterator[tuple[CountingSocket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield CountingSocket(a), b
    finally:
        a.close()
        b.close()


def response(sock: CountingSocket, method: str = "GET") -> CoalescedResponse:
    raw = f"{method} / HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    req = Request(Config(), IterUnreader([raw]), ("127.0.0.1", 1), 1)
    return CoalescedResponse(req, sock, Config())


def received(peer: socket.socket, sent: list[bytes]) -> bytes:
    return peer.recv(sum(len(s) for s in sent) + 1)


def test_headers_and_body_in_one_send(pair: tuple[CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    resp = response(sock)
    resp.start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    resp.write(b"hello")
    resp.close()
    assert len(sock.sends) == 1
    data = received(peer, sock.sends)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 5\r\n" in data
    assert data.endswith(b"\r\n\r\nhello")


def test_no_body_sends_headers_at_close(pair: tuple[CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    resp = response(sock, "HEAD")
    resp.start_response("200 OK", [("Content-Length", "5")])
    resp.write(b"hello")  # dropped: HEAD has no body
    assert sock.sends == []
    resp.close()
    assert len(sock.sends) == 1
    assert received(peer, sock.sends).endswith(b"Content-Length: 5\r\n\r\n")


def test_chunked_frames_and_terminator(pair: tuple[CountingSocket, socket.socket]) -> None:
    sock, peer = pair
    resp = response(sock)
    resp.start_response("200 OK", [("Content-Type", "text/plain")])
    resp.write(b"ab")
    resp.write(b"cde")
    resp.close()
    assert len(sock.sends) == 3  # headers + first chunk, second chunk, terminator
    data = b"".join(sock.sends)
    assert b"Transfer-Encoding: chunked" in data
    assert data.endswith(b"\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    assert received(peer, sock.sends) == data


def test_nothing_sent_before_the_first_write(pair: tuple[CountingSocket, socket.socket]) -> None:
    """An app that fails after start_response leaves the socket untouched, so gunicorn can
    still answer 500 on it."""
    sock, _ = pair
    resp = response(sock)
    resp.start_response("200 OK", [("Content-Length", "5")])
    assert sock.sends == []
    assert resp._pending is None  # headers not even built yet
