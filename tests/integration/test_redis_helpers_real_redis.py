"""The settings made by ``django_arena_scale.redis`` against a real ``redis-server``.

The cache is built exactly as Django builds it from ``CACHES`` (backend class + the entry);
outage tests stop, kill or pause (SIGSTOP) the server on purpose.  The timing bounds are the
issue's "an outage fails fast" requirement, asserted generously.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.utils.module_loading import import_string
from django_redis.pool import ConnectionFactory

from django_arena_scale.redis import channel_layers, redis_cache
from tests.servers import RedisServer, _started, free_port, require_binary, wait_for_port

pytestmark = pytest.mark.integration

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Default read timeout is 1 s; the bound leaves room for a loaded 2-core machine.
OUTAGE_BOUND = 3.0

CacheFactory = Callable[..., Any]


@pytest.fixture
def make_cache() -> Iterator[CacheFactory]:
    """Build cache backends from redis_cache() entries; close their pools afterwards."""
    locations: list[str] = []

    def make(url: str, **options: Any) -> Any:
        entry = redis_cache(url, **options)["default"]
        locations.append(entry["LOCATION"])
        return import_string(entry["BACKEND"])(entry["LOCATION"], entry)

    yield make
    for location in locations:
        pool = ConnectionFactory._pools.pop(location, None)
        if pool is not None:
            pool.disconnect()


def _timed(func: Callable[[], Any]) -> tuple[float, BaseException | None, Any]:
    """Run ``func`` in a thread (so a hang fails the test instead of blocking it)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    start = time.monotonic()
    future = pool.submit(func)
    try:
        result = future.result(timeout=30)
        error: BaseException | None = None
    except Exception as exc:
        result, error = None, exc
    elapsed = time.monotonic() - start
    # No waiting: a call stuck on a paused server finishes once the caller resumes it.
    pool.shutdown(wait=False)
    return elapsed, error, result


# --- cache -------------------------------------------------------------------------------------


def test_redis_cache_round_trip(fresh_redis: RedisServer, make_cache: CacheFactory) -> None:
    """A value set through the helper's settings is read back from the real server."""
    cache = make_cache(fresh_redis.url)
    cache.set("greeting", {"hello": "world"})
    assert cache.get("greeting") == {"hello": "world"}


def test_redis_cache_stopped_server_fails_fast(
    fresh_redis: RedisServer, make_cache: CacheFactory
) -> None:
    """With Redis stopped, a cache get raises a Redis error well within a few seconds."""
    cache = make_cache(fresh_redis.url)
    cache.set("k", 1)
    fresh_redis.stop()
    elapsed, error, _ = _timed(lambda: cache.get("k"))
    assert isinstance(error, REDIS_ERRORS)
    assert elapsed < OUTAGE_BOUND


def test_redis_cache_paused_server_times_out(
    fresh_redis: RedisServer, make_cache: CacheFactory
) -> None:
    """A hung Redis (SIGSTOP: connects, never answers) costs about the 1 s read timeout."""
    cache = make_cache(fresh_redis.url)
    cache.set("k", 1)
    assert fresh_redis.proc is not None
    fresh_redis.proc.send_signal(signal.SIGSTOP)
    try:
        elapsed, error, _ = _timed(lambda: cache.get("k"))
    finally:
        fresh_redis.proc.send_signal(signal.SIGCONT)
    assert isinstance(error, REDIS_ERRORS)
    assert elapsed < OUTAGE_BOUND


def test_redis_cache_ignore_exceptions_returns_default(
    fresh_redis: RedisServer, make_cache: CacheFactory
) -> None:
    """ignore_exceptions=True turns an outage into a fast cache miss."""
    cache = make_cache(fresh_redis.url, ignore_exceptions=True)
    cache.set("k", 1)
    fresh_redis.kill()
    elapsed, error, result = _timed(lambda: cache.get("k", "fallback"))
    assert (error, result) == (None, "fallback")
    assert elapsed < OUTAGE_BOUND


def test_redis_cache_recovers_after_restart(
    fresh_redis: RedisServer, make_cache: CacheFactory
) -> None:
    """After Redis comes back on the same port, the same cache object works again."""
    cache = make_cache(fresh_redis.url)
    cache.set("k", 1)
    fresh_redis.stop()
    with pytest.raises(REDIS_ERRORS):
        cache.get("k")
    fresh_redis.start()
    cache.set("k", 2)
    assert cache.get("k") == 2


# --- channel layer -----------------------------------------------------------------------------


def _layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(**channel_layers(url)["default"]["CONFIG"])


async def test_channel_layers_group_message_reaches_another_replica(
    fresh_redis: RedisServer,
) -> None:
    """A group message sent by one replica's layer reaches a consumer on another's."""
    sender, receiver = _layer(fresh_redis.url), _layer(fresh_redis.url)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "chat.message", "text": "hi"})
        message = await asyncio.wait_for(receiver.receive(channel), timeout=10)
    finally:
        await sender.close_pools()
        await receiver.close_pools()
    assert message == {"type": "chat.message", "text": "hi"}


async def test_channel_layers_idle_receive_outlives_blocking_pop(fresh_redis: RedisServer) -> None:
    """A receive idle past channels_redis' 5 s BZPOPMIN is not cut off by the socket timeout."""
    layer = _layer(fresh_redis.url)
    try:
        channel = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(6)
        assert not waiting.done()
        await layer.send(channel, {"type": "late"})
        message = await asyncio.wait_for(waiting, timeout=10)
    finally:
        await layer.close_pools()
    assert message == {"type": "late"}


# --- rediss:// -----------------------------------------------------------------------------------


def _write_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1, made by openssl.

    The extensions satisfy Python 3.13's VERIFY_X509_STRICT default.
    """
    openssl = require_binary("openssl")
    files = {
        "ca": directory / "ca.pem",
        "ca_key": directory / "ca.key",
        "cert": directory / "redis.pem",
        "key": directory / "redis.key",
        "csr": directory / "redis.csr",
        "ext": directory / "redis.ext",
    }
    files["ext"].write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", files["ca_key"], "-out", files["ca"],
         "-days", "1", "-subj", "/CN=arena test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", files["key"], "-out", files["csr"],
         "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", files["csr"], "-CA", files["ca"],
         "-CAkey", files["ca_key"], "-CAcreateserial", "-out", files["cert"], "-days", "1",
         "-extfile", files["ext"]],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=60)
    return files


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real redis-server speaking only TLS on a free port: (rediss URL, CA file)."""
    files = _write_tls_files(tmp_path)
    port = free_port()
    args = [
        require_binary("redis-server"),
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]),
        "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "no",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _started.append(proc)
    try:
        wait_for_port(port)
        yield f"rediss://localhost:{port}/0", files["ca"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_redis_cache_rediss_with_ca_round_trip(
    tls_redis: tuple[str, Path], make_cache: CacheFactory
) -> None:
    """rediss:// with ssl_options={'ca_certs': ...} talks TLS to a real server."""
    url, ca = tls_redis
    cache = make_cache(url, ssl_options={"ca_certs": str(ca)})
    cache.set("secure", "yes")
    assert cache.get("secure") == "yes"


def test_redis_cache_rediss_verifies_certificates_by_default(
    tls_redis: tuple[str, Path], make_cache: CacheFactory
) -> None:
    """Without the CA, a certificate from an unknown authority is refused (no silent trust)."""
    url, _ = tls_redis
    cache = make_cache(url)
    with pytest.raises(redis.exceptions.ConnectionError, match=r"(?i)certificate"):
        cache.get("secure")
