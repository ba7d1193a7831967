"""Settings helpers that put the cache, the sessions and the channel layer on Redis.

How to use them is in the README ("Settings helpers").  What a maintainer must keep true:
they are pure functions for ``settings.py``, imported before Django is configured, so they
never read ``django.conf.settings``, do no I/O and import neither Django nor a Redis client.
Without a URL (``None``, ``""`` or blanks) each returns the single-replica default: a
local-memory cache, database sessions, the in-memory channel layer.  Options are keyword-only;
a duration is a float in seconds or a ``timedelta``.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, certificates
verified unless ``ssl_options`` or the URL's query say otherwise) or
``unix://[[user]:password@]/path/to/socket[?db=N]``.  A malformed URL raises ``ValueError``
naming that form, with the password replaced by ``***``.  ``ssl_options`` (``rediss://`` only)
takes redis-py's ``ssl_*`` arguments without the prefix, e.g. ``{"ca_certs": "/etc/ca.pem"}``,
``cert_reqs`` (``"none"``, ``"optional"``, ``"required"``), ``certfile``/``keyfile`` for mTLS.

Why the defaults are what they are:

- Sessions and channel messages belong on a Redis that never evicts keys (``maxmemory-policy
  noeviction``): an evicted session logs a user out (docs/architecture.md, "Compose: explicit
  services, Redis per role").  ``manage.py check --deploy`` warns when they share the cache's
  server.
- Pools: per process, idle connections are PINGed after ``health_check_interval`` seconds and
  TCP keepalive is on; ``max_connections`` caps a process's pool (at least its thread count).
  django-redis shares one pool between aliases with the same URL.
- Timeouts: connecting gives up after ``connect_timeout`` (0.5 s) and a reply is awaited at
  most ``timeout`` (1 s), so a dead or hung Redis costs a request about a second, not a worker,
  and ``DependencyErrorMiddleware`` answers 503 quickly.  The channel layer's ``timeout`` must
  exceed the 5 s blocking receive of ``channels_redis``.
- ``channels_redis.core.RedisChannelLayer``, not the pub/sub layer: the core layer keeps
  messages in Redis for ``expiry`` seconds, so a consumer that reconnects after a Redis blip or
  a replica restart still receives them; per-channel ``capacity`` gives backpressure instead of
  unbounded memory; group membership lives in Redis rather than in one connection.  Pub/sub
  drops whatever is published while a subscriber reconnects.  Write ``CHANNEL_LAYERS`` by hand
  for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from django_arena_scale._redact import redact_url

__all__ = [
    "EXPECTED_FORM",
    "RedisTarget",
    "cache_redis_urls",
    "channel_layer_redis_urls",
    "channel_layers",
    "parse_redis_url",
    "redact_url",
    "redis_cache",
    "redis_sessions",
]

EXPECTED_FORM = (
    "redis://[[user]:password@]host[:port][/db], rediss://[[user]:password@]host[:port][/db] "
    "or unix://[[user]:password@]/path/to/socket[?db=N]"
)

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"
LOCMEM_BACKEND = "django.core.cache.backends.locmem.LocMemCache"
REDIS_CHANNEL_LAYER = "channels_redis.core.RedisChannelLayer"
INMEMORY_CHANNEL_LAYER = "channels.layers.InMemoryChannelLayer"
SESSION_ENGINES = {
    # Django's cache sessions, except that a Redis outage is a 503, not an anonymous user.
    "cache": "django_arena_scale.sessions",
    "cached_db": "django.contrib.sessions.backends.cached_db",
}
#: Engines that keep sessions only in a cache (an evicted or lost key logs the user out).
CACHE_ONLY_SESSION_ENGINES = frozenset(
    {"django.contrib.sessions.backends.cache", SESSION_ENGINES["cache"]}
)
#: Engines that read sessions through ``SESSION_CACHE_ALIAS``.
CACHE_SESSION_ENGINES = CACHE_ONLY_SESSION_ENGINES | {SESSION_ENGINES["cached_db"]}
DB_SESSION_ENGINE = "django.contrib.sessions.backends.db"

_SCHEMES = ("redis", "rediss", "unix")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# channels_redis.core.RedisChannelLayer.brpop_timeout: a receive blocks this long in BZPOPMIN,
# so a shorter socket timeout would turn every idle receive into an error.
_CHANNELS_BLOCKING_RECEIVE = 5.0
_SSL_KEYS = frozenset(
    {
        "ca_certs",
        "ca_data",
        "ca_path",
        "certfile",
        "keyfile",
        "password",
        "cert_reqs",
        "check_hostname",
        "min_version",
        "ciphers",
    }
)
_CERT_REQS = ("none", "optional", "required")
Duration = float | timedelta


# --- URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisTarget:
    """A validated Redis URL: where it connects to, without its secrets."""

    scheme: str
    host: str
    port: int | None
    path: str
    db: int
    redacted: str

    @property
    def server(self) -> str:
        """Identity of the Redis *process* (eviction policy and memory are per process)."""
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = "localhost" if self.host in _LOOPBACK else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<RedisTarget {self.redacted!r} server={self.server} db={self.db}>"


def _bad_url(url: str, reason: str) -> ValueError:
    return ValueError(f"Redis URL {redact_url(url)!r} {reason}; expected {EXPECTED_FORM}.")


def _db_from_query(url: str, parts: SplitResult) -> int | None:
    values = parse_qs(parts.query).get("db")
    if not values:
        return None
    raw = values[-1]
    if not raw.isdigit():
        raise _bad_url(url, f"has a db query value {raw!r} that is not a whole number >= 0")
    return int(raw)


def _split(url: str) -> tuple[SplitResult, int | None]:
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError:
        pass
    # Raised outside the handler on purpose: urllib's message (kept in __context__ even with
    # "from None") quotes the netloc, which may hold the password.
    raise _bad_url(url, "has a port or host that cannot be parsed")


def parse_redis_url(url: str) -> RedisTarget:
    """Validate ``url`` the way redis-py will read it; raise ``ValueError`` (redacted) if bad."""
    if not isinstance(url, str):
        raise TypeError(
            f"Redis URL must be a str, not {type(url).__name__}; expected {EXPECTED_FORM}."
        )
    url = url.strip()
    parts, port = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        if not scheme:
            raise _bad_url(url, "has no scheme")
        raise _bad_url(url, f"has the scheme {scheme!r} instead of redis, rediss or unix")
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # A password holding "/", "?" or "#" ends the host early; never echo the remainder.
        raise _bad_url(url, "has '@' after the host (percent-encode / ? # @ in a password)")
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise _bad_url(url, "has no socket path")
        unix_db = _db_from_query(url, parts)
        return RedisTarget(scheme, "", None, unquote(parts.path), unix_db or 0, redact_url(url))
    if not parts.hostname:
        raise _bad_url(url, "has no host")
    if any(ch.isspace() for ch in parts.hostname):
        raise _bad_url(url, "has blanks in its host")
    if port == 0:
        raise _bad_url(url, "has port 0")
    path = parts.path.strip("/")
    db: int | None = None
    if path:
        if not path.isdigit():
            raise _bad_url(url, f"has a database {path!r} that is not a whole number >= 0")
        db = int(path)
    query_db = _db_from_query(url, parts)
    if db is None:
        db = query_db
    return RedisTarget(
        scheme,
        parts.hostname.lower(),
        port or 6379,
        "",
        db or 0,
        redact_url(url),
    )


def _optional_url(url: str | None) -> RedisTarget | None:
    if url is None:
        return None
    if isinstance(url, str) and not url.strip():
        return None
    return parse_redis_url(url)


# --- argument validation -----------------------------------------------------------------------


def _seconds(value: Duration, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {type(value).__name__} "
            f"({value!r})."
        )
    if (
        math.isnan(seconds)
        or math.isinf(seconds)
        or seconds < 0
        or (seconds == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite duration {bound} seconds, not {value!r}.")
    return seconds


def _positive_int(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    return _count(value, name, "a whole number >= 1 or None")


def _count(value: int, name: str, expected: str = "a whole number >= 1") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be {expected}, not {value!r}.")
    return value


def _ssl_kwargs(target: RedisTarget, ssl_options: Mapping[str, Any] | None) -> dict[str, Any]:
    if not ssl_options:
        return {}
    if target.scheme != "rediss":
        raise ValueError(
            f"ssl_options need a rediss:// URL, but the URL is {target.redacted!r}; "
            f"use rediss://host:port/db."
        )
    unknown = sorted(set(ssl_options) - _SSL_KEYS)
    if unknown:
        raise ValueError(
            f"ssl_options has unknown keys {unknown!r}; expected some of {sorted(_SSL_KEYS)!r}."
        )
    reqs = ssl_options.get("cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise ValueError(f"ssl_options['cert_reqs'] must be one of {_CERT_REQS!r}, not {reqs!r}.")
    return {f"ssl_{key}": value for key, value in ssl_options.items()}


def _pool_kwargs(
    target: RedisTarget,
    *,
    max_connections: int | None,
    health_check_interval: Duration,
    ssl_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        # A pooled connection idle longer than this is PINGed before use, so a Redis restart
        # or an idle-timeout at a proxy costs one reconnect instead of a failed command.
        "health_check_interval": _seconds(
            health_check_interval, "health_check_interval", allow_zero=True
        ),
    }
    if target.scheme != "unix":
        # Keepalive lets the kernel notice a peer that vanished without a FIN (node loss).
        kwargs["socket_keepalive"] = True
    limit = _positive_int(max_connections, "max_connections")
    if limit is not None:
        kwargs["max_connections"] = limit
    kwargs.update(_ssl_kwargs(target, ssl_options))
    return kwargs


def _django_redis_entry(
    target: RedisTarget,
    url: str,
    *,
    key_prefix: str,
    default_ttl: Duration | None,
    connect_timeout: Duration,
    timeout: Duration,
    max_connections: int | None,
    health_check_interval: Duration,
    ignore_exceptions: bool,
    ssl_options: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if not isinstance(key_prefix, str):
        raise TypeError(f"key_prefix must be a str, not {type(key_prefix).__name__}.")
    opts: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        # django-redis only accepts int/float here and ignores 0, so these are always > 0.
        "SOCKET_CONNECT_TIMEOUT": _seconds(connect_timeout, "connect_timeout"),
        "SOCKET_TIMEOUT": _seconds(timeout, "timeout"),
        "CONNECTION_POOL_KWARGS": _pool_kwargs(
            target,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            ssl_options=ssl_options,
        ),
        "IGNORE_EXCEPTIONS": bool(ignore_exceptions),
    }
    for key, value in (options or {}).items():
        # One level deep, so options={"CONNECTION_POOL_KWARGS": {...}} adds to the pool
        # settings instead of silently dropping keepalive and the health-check interval.
        if isinstance(value, Mapping) and isinstance(opts.get(key), dict):
            opts[key] = {**opts[key], **value}
        else:
            opts[key] = value
    entry: dict[str, Any] = {
        "BACKEND": DJANGO_REDIS_BACKEND,
        "LOCATION": url.strip(),
        "KEY_PREFIX": key_prefix,
        "OPTIONS": opts,
    }
    entry["TIMEOUT"] = None if default_ttl is None else _seconds(default_ttl, "default_ttl")
    return entry


# --- public helpers ----------------------------------------------------------------------------


def redis_cache(
    url: str | None,
    *,
    alias: str = "default",
    key_prefix: str = "",
    default_ttl: Duration | None = 300,
    connect_timeout: Duration = 0.5,
    timeout: Duration = 1.0,
    max_connections: int | None = None,
    health_check_interval: Duration = 30,
    ignore_exceptions: bool = False,
    ssl_options: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``CACHES`` setting: django-redis on ``url``, or a local-memory cache without one.

    ``{alias: {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url, ...}}``.
    ``default_ttl=None`` keeps keys forever.  ``ignore_exceptions=True`` turns a Redis outage
    into cache misses instead of errors.  ``options`` is merged last into ``OPTIONS`` (dict
    values such as ``CONNECTION_POOL_KWARGS`` one level deep).
    """
    target = _optional_url(url)
    if target is None or url is None:
        return {alias: {"BACKEND": LOCMEM_BACKEND, "LOCATION": f"django-arena-scale-{alias}"}}
    entry = _django_redis_entry(
        target,
        url,
        key_prefix=key_prefix,
        default_ttl=default_ttl,
        connect_timeout=connect_timeout,
        timeout=timeout,
        max_connections=max_connections,
        health_check_interval=health_check_interval,
        ignore_exceptions=ignore_exceptions,
        ssl_options=ssl_options,
        options=options,
    )
    return {alias: entry}


def redis_sessions(
    url: str | None,
    *,
    caches: Mapping[str, Mapping[str, Any]],
    alias: str = "sessions",
    engine: Literal["cache", "cached_db"] = "cache",
    connect_timeout: Duration = 0.5,
    timeout: Duration = 1.0,
    max_connections: int | None = None,
    health_check_interval: Duration = 30,
    ssl_options: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Session settings on a dedicated cache alias, plus ``CACHES`` with that alias added.

    Use as ``globals().update(redis_sessions(url, caches=CACHES))``.  Returns
    ``{"SESSION_ENGINE": ..., "SESSION_CACHE_ALIAS": alias, "CACHES": ...}``, a new dict
    (``caches`` is not modified).  ``engine="cached_db"`` keeps the database as the source of
    truth, with Redis in front.  Without a URL: database sessions and ``CACHES`` unchanged
    (copied).
    """
    if not isinstance(caches, Mapping):
        raise TypeError(
            f"caches must be the CACHES mapping, not {type(caches).__name__}; pass caches=CACHES."
        )
    if engine not in SESSION_ENGINES:
        raise ValueError(f"engine must be one of {sorted(SESSION_ENGINES)!r}, not {engine!r}.")
    merged = {name: dict(entry) for name, entry in caches.items()}
    target = _optional_url(url)
    if target is None or url is None:
        return {"SESSION_ENGINE": DB_SESSION_ENGINE, "CACHES": merged}
    if alias in merged:
        raise ValueError(
            f"alias {alias!r} is already in CACHES; sessions need a cache alias of their own, "
            f"e.g. alias='sessions'."
        )
    merged[alias] = _django_redis_entry(
        target,
        url,
        key_prefix="",
        # Session keys carry their own expiry (SESSION_COOKIE_AGE); never drop them earlier.
        default_ttl=None,
        connect_timeout=connect_timeout,
        timeout=timeout,
        max_connections=max_connections,
        health_check_interval=health_check_interval,
        # A session write that silently fails logs the user out later: let it raise.
        ignore_exceptions=False,
        ssl_options=ssl_options,
        options=options,
    )
    return {
        "SESSION_ENGINE": SESSION_ENGINES[engine],
        "SESSION_CACHE_ALIAS": alias,
        "CACHES": merged,
    }


def channel_layers(
    url: str | None,
    *,
    alias: str = "default",
    prefix: str = "asgi",
    capacity: int = 100,
    expiry: Duration = 60,
    group_expiry: Duration = 86400,
    connect_timeout: Duration = 0.5,
    timeout: Duration = 10.0,
    health_check_interval: Duration = 30,
    ssl_options: Mapping[str, Any] | None = None,
    symmetric_encryption_keys: list[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``CHANNEL_LAYERS`` setting: channels-redis on ``url``, or in-memory without one.

    ``{alias: {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {...}}}``;
    ``config`` is merged last into ``CONFIG``.
    """
    target = _optional_url(url)
    if target is None or url is None:
        return {alias: {"BACKEND": INMEMORY_CHANNEL_LAYER}}
    read_timeout = _seconds(timeout, "timeout")
    if read_timeout <= _CHANNELS_BLOCKING_RECEIVE:
        raise ValueError(
            f"timeout must exceed the {_CHANNELS_BLOCKING_RECEIVE:g} s blocking receive of "
            f"channels_redis, not {timeout!r}; use timeout=10."
        )
    host: dict[str, Any] = {
        "address": url.strip(),
        "socket_connect_timeout": _seconds(connect_timeout, "connect_timeout"),
        "socket_timeout": read_timeout,
    }
    host.update(
        _pool_kwargs(
            target,
            max_connections=None,
            health_check_interval=health_check_interval,
            ssl_options=ssl_options,
        )
    )
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty str, not {prefix!r}.")
    layer_config: dict[str, Any] = {
        "hosts": [host],
        "prefix": prefix,
        "capacity": _count(capacity, "capacity"),
        # Redis EXPIRE takes whole seconds; round up so a short expiry never becomes 0.
        "expiry": math.ceil(_seconds(expiry, "expiry")),
        "group_expiry": math.ceil(_seconds(group_expiry, "group_expiry")),
    }
    if symmetric_encryption_keys:
        layer_config["symmetric_encryption_keys"] = list(symmetric_encryption_keys)
    if config:
        layer_config.update(config)
    return {alias: {"BACKEND": REDIS_CHANNEL_LAYER, "CONFIG": layer_config}}


# --- reading settings back (used by the system checks and the readiness checks) ----------------


def _location_urls(location: Any) -> Iterator[str]:
    if isinstance(location, str):
        # django-redis accepts "url1,url2" as well as a list (primary first, then replicas).
        for part in location.split(","):
            if part.strip():
                yield part.strip()
    elif isinstance(location, (list, tuple)):
        for item in location:
            yield from _location_urls(item)


def cache_redis_urls(entry: Mapping[str, Any]) -> list[str]:
    """Redis URLs of one ``CACHES`` entry (empty unless its backend is a Redis backend)."""
    if not isinstance(entry, Mapping):
        return []
    backend = entry.get("BACKEND")
    if not isinstance(backend, str) or "redis" not in backend.lower():
        return []
    # Every location, even one without a scheme: validating it is the caller's job (E003).
    return list(_location_urls(entry.get("LOCATION")))


def channel_layer_redis_urls(entry: Mapping[str, Any]) -> list[str]:
    """Redis URLs of one ``CHANNEL_LAYERS`` entry; ``(host, port)`` and dict hosts become URLs."""
    if not isinstance(entry, Mapping):
        return []
    backend = entry.get("BACKEND")
    config = entry.get("CONFIG")
    if not isinstance(backend, str) or "redis" not in backend.lower():
        return []
    if not isinstance(config, Mapping):
        return []
    hosts = config.get("hosts")
    if not isinstance(hosts, (list, tuple)):
        return []
    urls: list[str] = []
    for host in hosts:
        if isinstance(host, str):
            urls.append(host)
        elif isinstance(host, (list, tuple)) and len(host) == 2:
            urls.append(f"redis://{host[0]}:{host[1]}")
        elif isinstance(host, Mapping):
            if isinstance(host.get("address"), str):
                urls.append(host["address"])
            elif "host" in host:
                db = host.get("db", 0)
                urls.append(f"redis://{host['host']}:{host.get('port', 6379)}/{db}")
    return urls
