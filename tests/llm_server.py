"""A fake OpenAI-compatible provider on a real loopback socket, plus resilience test helpers.

``FakeLLMServer`` serves ``POST /v1/chat/completions`` (JSON, or SSE with ``stream: true``)
from a programmable script: each request pops the next :class:`Step` (the last one repeats).
It records every request so tests can count the HTTP attempts the server really saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django_arena_scale.resilience import set_testing
from django_arena_scale.resilience._registry import registry


@dataclass(frozen=True)
class Step:
    """One scripted response.

    kind: "ok" (JSON or SSE), "status" (an error status with a JSON error body),
    "reset" (close the connection with RST before any byte), "slow" (sleep ``delay`` then ok),
    "break" (SSE that sends ``chunks`` tokens then resets), "sse_error" (SSE with ``chunks``
    tokens then an ``event: error`` frame of ``error_type``).
    """

    kind: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunks: int = 0
    error_type: str = "server_error"
    chunk_delay: float = 0.0


def ok() -> Step:
    return Step("ok")


def status(code: int, **headers: str) -> Step:
    return Step("status", status=code, headers={k.replace("_", "-"): v for k, v in headers.items()})


def reset() -> Step:
    return Step("reset")


def slow(delay: float) -> Step:
    return Step("slow", delay=delay)


def broken_stream(chunks: int) -> Step:
    return Step("break", chunks=chunks)


def sse_error(chunks: int, error_type: str = "server_error") -> Step:
    return Step("sse_error", chunks=chunks, error_type=error_type)


TOKENS = [f"tok{i} " for i in range(8)]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        step = self.server.owner.next_step(self.path, body)
        stream = bool(body.get("stream"))
        if step.kind == "reset":
            self._reset()
            return
        if step.kind == "slow":
            time.sleep(step.delay)
        if step.kind == "status":
            payload = json.dumps(
                {"error": {"message": "scripted", "type": "scripted_error", "code": None}}
            ).encode()
            self.send_response(step.status)
            for name, value in step.headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if not stream:
            payload = json.dumps(_completion("".join(TOKENS))).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        # Chunked framing, like real providers: a truncated stream is then detectable.
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        limit = step.chunks if step.kind in ("break", "sse_error") else len(TOKENS)
        for token in TOKENS[:limit]:
            self._event(_chunk(token))
            if step.chunk_delay:
                time.sleep(step.chunk_delay)
        if step.kind == "break":
            self._reset()
            return
        if step.kind == "sse_error":
            frame = {"error": {"message": "overloaded", "type": step.error_type}}
            self._write(b"event: error\ndata: " + json.dumps(frame).encode() + b"\n\n")
        else:
            self._event(_chunk("", finish="stop"))
            self._write(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, data: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.flush()
            # SO_LINGER 0 then close(): the kernel sends RST instead of FIN.  detach() first, so
            # the server's own shutdown(SHUT_WR) afterwards cannot send a graceful FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(self.connection.detach())
        self.close_connection = True


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunk(token: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": finish}],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up (the timeout tests) is expected; others are not.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeLLMServer:
    """Threaded HTTP server on a free 127.0.0.1 port; ``script()`` sets the next responses."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._lock = threading.Lock()
        self._steps: list[Step] = [ok()]
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *steps: Step) -> None:
        """Serve ``steps`` in order, then keep repeating the last one."""
        with self._lock:
            self._steps = list(steps) or [ok()]
            self.requests = []
            self.request_times = []

    def next_step(self, path: str, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append({"path": path, **body})
            self.request_times.append(time.monotonic())
            return self._steps.pop(0) if len(self._steps) > 1 else self._steps[0]

    @property
    def attempts(self) -> int:
        with self._lock:
            return len(self.requests)


class FakeClock:
    """A monotonic clock that only moves when told to (``sleep`` advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@contextlib.contextmanager
def isolated_registry(clock: Any = None) -> Iterator[Any]:
    """An empty breaker registry (optionally on a fake clock), emptied again afterwards."""
    registry.reset()
    set_testing(False)
    if clock is not None:
        registry.clock = clock
    try:
        yield registry
    finally:
        registry.reset()
        registry.clock = time.monotonic
        set_testing(False)


def collect(tokens: Sequence[Any]) -> str:
    return "".join(str(t) for t in tokens)
