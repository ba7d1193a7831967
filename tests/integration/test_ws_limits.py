"""WebSocket limits of the example chat under gunicorn + django_arena_scale's UvicornWorker.

A real server and a real ``websockets`` client: the worker refuses frames above its
``ws_max_size`` (1009 from uvicorn), the chat consumer closes on messages above 4 KiB (1009),
binary frames (1003) and floods (1008), and normal chat still works.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.example_app import EXAMPLE_DIR, ExampleServer, example_env
from tests.example_db import ExampleDatabases
from tests.servers import _started, wait_for_port

pytestmark = pytest.mark.integration

WS_TIMEOUT = 10.0
WORKER = "django_arena_scale.lifecycle.uvicorn.UvicornWorker"
CONSUMER_TOO_BIG = "at most 4096 bytes a message"


class GunicornUvicornServer(ExampleServer):
    """The example's ASGI app under gunicorn with the package's UvicornWorker."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__("uvicorn", env, log_path)

    def start(self, timeout: float = 30.0) -> ExampleServer:
        args = [
            sys.executable, "-m", "gunicorn", "arena_project.asgi:application",
            "--bind", f"127.0.0.1:{self.port}", "--worker-class", WORKER, "--workers", "1",
            "--graceful-timeout", "5", "--log-level", "warning", "--no-control-socket",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=EXAMPLE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        _started.append(self.proc)
        try:
            wait_for_port(self.port, timeout=timeout)
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self!r} did not start:\n{self.log()}") from None
        return self


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, example_databases: ExampleDatabases
) -> Iterator[ExampleServer]:
    tmp = tmp_path_factory.mktemp("ws-limits")
    with (
        example_databases.database("ws_limits") as db,
        GunicornUvicornServer(example_env(db), tmp / "gunicorn.log") as srv,
    ):
        yield srv


def ws(server: ExampleServer, room: str) -> connect:
    # The client's own limit must not be what refuses a big frame.
    return connect(
        f"ws://127.0.0.1:{server.port}/ws/chat/{room}/",
        origin=server.url,  # type: ignore[arg-type]
        max_size=None,
    )


async def closed_with(conn: ClientConnection) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    try:
        while True:
            await asyncio.wait_for(conn.recv(), WS_TIMEOUT)
    except ConnectionClosed as exc:
        frame = exc.rcvd
        return (frame.code, frame.reason) if frame is not None else (None, "")


async def test_normal_chat_still_works(server: ExampleServer) -> None:
    async with ws(server, "limits-ok") as conn:
        for text in ("one", "two", "three"):
            await conn.send(json.dumps({"message": text}))
            got = json.loads(await asyncio.wait_for(conn.recv(), WS_TIMEOUT))
            assert got["message"] == text


async def test_one_mib_frame_refused_by_the_server(server: ExampleServer) -> None:
    """1 MiB is over UvicornWorker's ws_max_size: uvicorn closes with 1009 (not the consumer)."""
    async with ws(server, "limits-big") as conn:
        await conn.send(json.dumps({"message": "x" * (1024 * 1024)}))
        code, reason = await closed_with(conn)
    assert code == 1009
    assert reason != CONSUMER_TOO_BIG


async def test_message_over_4_kib_closed_by_the_consumer(server: ExampleServer) -> None:
    """8 KiB passes the server's limit; the chat consumer closes with 1009 and says why."""
    async with ws(server, "limits-8k") as conn:
        await conn.send(json.dumps({"message": "x" * 8192}))
        assert await closed_with(conn) == (1009, CONSUMER_TOO_BIG)


async def test_binary_frame_closed_with_1003(server: ExampleServer) -> None:
    async with ws(server, "limits-bin") as conn:
        await conn.send(b"\x00\x01")
        assert (await closed_with(conn))[0] == 1003


async def test_flood_closed_with_1008(server: ExampleServer) -> None:
    """50 messages sent at once: the burst of 10 passes, then the bucket is empty: 1008."""
    async with ws(server, "limits-flood") as conn:
        for index in range(50):
            await conn.send(json.dumps({"message": f"flood {index}"}))
        code, reason = await closed_with(conn)
    assert code == 1008
    assert "messages a second" in reason


async def test_bad_json_and_deep_nesting_keep_the_connection(server: ExampleServer) -> None:
    """Malformed or deeply nested JSON gets an error frame, not a crashed consumer (1011)."""
    async with ws(server, "limits-json") as conn:
        for frame in ("{", "[" * 2000 + "]" * 2000):
            await conn.send(frame)
            got = json.loads(await asyncio.wait_for(conn.recv(), WS_TIMEOUT))
            assert "error" in got
        await conn.send(json.dumps({"message": "still here"}))
        got = json.loads(await asyncio.wait_for(conn.recv(), WS_TIMEOUT))
        assert got["message"] == "still here"
