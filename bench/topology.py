"""Topology benchmark: one WSGI pool vs API on WSGI + a separate ASGI stream pool.

Run: ``.venv/bin/python bench/topology.py``.

Both topologies get the same budget of app processes and run the example project behind the
generated local nginx (``LocalStack``: real redis-server, gunicorn replicas, nginx on
127.0.0.1), rendered by ``generate_lb_config``'s renderers:

- ``single``: web-1..2, each 1 gthread worker x 8 threads; both upstreams list them;
- ``split``:  web-1 (1 gthread worker x 8 threads) for the API + stream-1 (1 uvicorn worker)
  behind the streaming upstream.

Per round and topology: ``wrk`` on ``/api/ping/`` alone (idle), then again while ``--streams``
SSE clients keep streams of ``/messages/stream/`` open (tokens arrive every 50 ms): API
requests/s under stream load, stream time-to-first-token and completed streams.  Rounds
alternate the order (A B, B A) and the medians are printed with the split/single ratios.
The faster topology under stream load is the generator's default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "example_project")]
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # the example requires one

from bench._load import UNLIMITED, wrk  # noqa: E402

from django_arena_scale.deploy._spec import DeploymentSpec  # noqa: E402
from django_arena_scale.stack._runner import LocalStack, StackOptions, free_port_range  # noqa: E402

TOPOLOGIES: dict[str, dict[str, Any]] = {
    "single": {"topology": "single", "replicas": 2, "workers": 1, "threads": 8},
    "split": {
        "topology": "split",
        "replicas": 1,
        "workers": 1,
        "threads": 8,
        "stream_replicas": 1,
        "stream_workers": 1,
    },
}


def make_spec(topology: str) -> DeploymentSpec:
    base = free_port_range(8, start=23000)
    return DeploymentSpec(
        target="local",
        settings_module="arena_project.settings",
        wsgi_app="arena_project.wsgi:application",
        asgi_app="arena_project.asgi:application",
        redis_roles="shared",
        local_port=base,
        status_port=base + 1,
        local_redis_port=base + 2,
        local_base_port=base + 3,
        **UNLIMITED,
        max_conns=1000,
        **TOPOLOGIES[topology],
    )


class StreamLoad:
    """``count`` clients, each opening SSE streams back to back until stopped."""

    def __init__(self, port: int, count: int, tokens: int, delay: float) -> None:
        self.port, self.count, self.tokens, self.delay = port, count, tokens, delay
        self.ttft: list[float] = []
        self.completed = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> StreamLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _main(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.count)))

    async def _client(self) -> None:
        path = f"/messages/stream/?tokens={self.tokens}&delay={self.delay}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.errors += 1
                await asyncio.sleep(0.1)
                continue
            try:
                writer.write(request)
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 60)
                if b" 200 " not in status:
                    self.errors += 1
                    continue
                first = True
                while True:
                    line = await asyncio.wait_for(reader.readline(), 60)
                    if not line:
                        self.errors += 1
                        break
                    if first and line.startswith(b"event: token"):
                        self.ttft.append(time.perf_counter() - start)
                        first = False
                    if line.startswith(b"event: done"):
                        self.completed += 1
                        break
            except (OSError, asyncio.TimeoutError):
                self.errors += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def run_round(topology: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    spec = make_spec(topology)
    state = workdir / f"{topology}-{time.monotonic_ns()}"
    options = StackOptions(cwd=str(ROOT / "example_project"), env={"LOG_LEVEL": "ERROR"})
    stack = LocalStack(spec, state, options, out=lambda line: None)
    try:
        stack.start()
        url = f"http://127.0.0.1:{spec.local_port}/api/ping/"
        wrk(url, duration=1, connections=args.connections)  # warm-up
        idle = wrk(url, duration=args.duration, connections=args.connections).rps
        with StreamLoad(spec.local_port, args.streams, 20, 0.05) as load:
            time.sleep(1.0)  # let the streams ramp up
            loaded = wrk(url, duration=args.duration, connections=args.connections).rps
            time.sleep(0.5)
        ttft = sorted(load.ttft) or [float("nan")]
        return {
            "idle_rps": idle,
            "loaded_rps": loaded,
            "ttft_p50_ms": 1000 * statistics.median(ttft),
            "ttft_p95_ms": 1000 * ttft[int(0.95 * (len(ttft) - 1))],
            "streams_done": float(load.completed),
            "stream_errors": float(load.errors),
        }
    finally:
        stack.stop(quiet=True)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "inf (the baseline served nothing)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--streams", type=int, default=32, help="concurrent SSE clients")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="arena-topology-"))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in TOPOLOGIES}
    try:
        for i in range(args.rounds):
            order = list(TOPOLOGIES) if i % 2 == 0 else list(reversed(TOPOLOGIES))
            for name in order:
                results[name].append(run_round(name, args, workdir))
                print(f"round {i + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    keys = list(results["single"][0])
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in results.items()}
    load = f"{args.streams} SSE clients, wrk -c {args.connections}"
    print(f"\nmedians over {args.rounds} rounds ({load}):")
    print(f"{'':14}" + "".join(f"{k:>14}" for k in keys))
    for name, values in med.items():
        print(f"{name:14}" + "".join(f"{values[k]:14.1f}" for k in keys))
    for key in ("idle_rps", "loaded_rps"):
        print(f"split/single {key}: {_ratio(med['split'][key], med['single'][key])}")
    ttft = _ratio(med["single"]["ttft_p50_ms"], med["split"]["ttft_p50_ms"])
    print(f"single/split ttft_p50: {ttft} (higher: split faster)")
    faster = "split" if med["split"]["loaded_rps"] >= med["single"]["loaded_rps"] else "single"
    print(f"faster under stream load: {faster}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
