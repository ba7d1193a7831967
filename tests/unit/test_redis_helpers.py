"""Unit tests of the pure settings helpers in ``django_arena_scale.redis`` (no server needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels_redis.utils import create_pool
from django_redis.pool import ConnectionFactory
from redis.connection import SSLConnection, UnixDomainSocketConnection

import django_arena_scale
from django_arena_scale.redis import (
    DB_SESSION_ENGINE,
    EXPECTED_FORM,
    channel_layer_redis_urls,
    channel_layers,
    parse_redis_url,
    redact_url,
    redis_cache,
    redis_sessions,
)

# Wherever this run imports the package from (src/ or an installed wheel), so do subprocesses.
PACKAGE_PARENT = Path(django_arena_scale.__file__).resolve().parents[1]
URL = "redis://:s3cret@cache.internal:6380/2"


def _django_redis_connection(entry: dict[str, Any]) -> Any:
    """Build (without connecting) the connection django-redis would use for ``entry``."""
    factory = ConnectionFactory(dict(entry["OPTIONS"]))
    pool = factory.get_connection_pool(factory.make_connection_params(entry["LOCATION"]))
    return pool.make_connection()


# --- redis_cache ---------------------------------------------------------------------------------


def test_redis_cache_uses_django_redis_backend() -> None:
    """A URL gives a django-redis entry under the default alias with that LOCATION."""
    caches = redis_cache(URL)
    assert caches["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    assert caches["default"]["LOCATION"] == URL


def test_redis_cache_sets_fast_fail_timeouts_by_default() -> None:
    """Connect and read timeouts are set (0.5 s and 1 s) without any option."""
    options = redis_cache(URL)["default"]["OPTIONS"]
    assert (options["SOCKET_CONNECT_TIMEOUT"], options["SOCKET_TIMEOUT"]) == (0.5, 1.0)


def test_redis_cache_timeouts_reach_the_redis_connection() -> None:
    """django-redis passes the timeouts down to the redis-py connection it builds."""
    conn = _django_redis_connection(redis_cache(URL)["default"])
    assert (conn.socket_connect_timeout, conn.socket_timeout) == (0.5, 1.0)


def test_redis_cache_accepts_timedelta_durations() -> None:
    """Durations may be timedeltas; they become float seconds."""
    options = redis_cache(URL, timeout=timedelta(milliseconds=250))["default"]["OPTIONS"]
    assert options["SOCKET_TIMEOUT"] == 0.25


def test_redis_cache_pool_keeps_connections_healthy() -> None:
    """Pooled TCP connections use keepalive and a health-check interval."""
    conn = _django_redis_connection(redis_cache(URL)["default"])
    assert (conn.socket_keepalive, conn.health_check_interval) == (True, 30)


def test_redis_cache_max_connections_bounds_the_pool() -> None:
    """max_connections goes into the pool options."""
    pool_kwargs = redis_cache(URL, max_connections=20)["default"]["OPTIONS"]
    assert pool_kwargs["CONNECTION_POOL_KWARGS"]["max_connections"] == 20


def test_redis_cache_alias_and_prefix_options() -> None:
    """alias names the CACHES key and key_prefix becomes KEY_PREFIX."""
    caches = redis_cache(URL, alias="fast", key_prefix="arena")
    assert list(caches) == ["fast"]
    assert caches["fast"]["KEY_PREFIX"] == "arena"


def test_redis_cache_default_ttl_none_keeps_keys() -> None:
    """default_ttl=None becomes TIMEOUT None (no expiry)."""
    assert redis_cache(URL, default_ttl=None)["default"]["TIMEOUT"] is None


def test_redis_cache_options_are_merged_last() -> None:
    """Extra OPTIONS override the computed ones."""
    options = redis_cache(URL, options={"SOCKET_TIMEOUT": 2.0})["default"]["OPTIONS"]
    assert options["SOCKET_TIMEOUT"] == 2.0


def test_redis_cache_options_add_to_pool_kwargs() -> None:
    """A CONNECTION_POOL_KWARGS option adds to the computed pool settings, keeping keepalive."""
    options = redis_cache(URL, options={"CONNECTION_POOL_KWARGS": {"client_name": "web"}})
    pool_kwargs = options["default"]["OPTIONS"]["CONNECTION_POOL_KWARGS"]
    assert (pool_kwargs["client_name"], pool_kwargs["socket_keepalive"]) == ("web", True)


@pytest.mark.parametrize("url", [None, "", "   "])
def test_redis_cache_without_url_is_local_memory(url: str | None) -> None:
    """No URL gives the embedded single-replica default: a local-memory cache."""
    backend = redis_cache(url)["default"]["BACKEND"]
    assert backend == "django.core.cache.backends.locmem.LocMemCache"


def test_redis_cache_returns_a_fresh_dict_each_call() -> None:
    """Results share no mutable state between calls."""
    first = redis_cache(URL)
    first["default"]["OPTIONS"]["SOCKET_TIMEOUT"] = 99
    assert redis_cache(URL)["default"]["OPTIONS"]["SOCKET_TIMEOUT"] == 1.0


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), timedelta(0)])
def test_redis_cache_rejects_non_positive_timeout(value: Any) -> None:
    """A timeout must be a finite positive duration (django-redis treats 0 as no timeout)."""
    with pytest.raises(ValueError, match="timeout must be a finite duration > 0"):
        redis_cache(URL, timeout=value)


@pytest.mark.parametrize("value", ["1", True, None])
def test_redis_cache_rejects_wrong_duration_type(value: Any) -> None:
    """A duration that is neither a number nor a timedelta is a TypeError."""
    with pytest.raises(TypeError, match="connect_timeout must be a number of seconds"):
        redis_cache(URL, connect_timeout=value)


@pytest.mark.parametrize("value", [0, -3, True, 2.5])
def test_redis_cache_rejects_bad_max_connections(value: Any) -> None:
    """max_connections must be a whole number >= 1."""
    with pytest.raises(ValueError, match="max_connections must be a whole number >= 1"):
        redis_cache(URL, max_connections=value)


# --- TLS and unix sockets ------------------------------------------------------------------------


def test_redis_cache_rediss_builds_a_tls_connection() -> None:
    """A rediss:// URL makes redis-py use an SSL connection."""
    conn = _django_redis_connection(redis_cache("rediss://:pw@cache.example:6380/0")["default"])
    assert isinstance(conn, SSLConnection)


def test_redis_cache_rediss_ssl_options_reach_the_connection() -> None:
    """ssl_options become redis-py ssl_* keyword arguments."""
    entry = redis_cache(
        "rediss://cache.example:6380/0",
        ssl_options={"ca_certs": "/etc/ssl/redis-ca.pem", "cert_reqs": "required"},
    )["default"]
    conn = _django_redis_connection(entry)
    assert conn.ca_certs == "/etc/ssl/redis-ca.pem"


def test_redis_cache_ssl_options_need_rediss() -> None:
    """ssl_options with a plain redis:// URL is a mistake, reported with the fix."""
    with pytest.raises(ValueError, match="ssl_options need a rediss:// URL"):
        redis_cache(URL, ssl_options={"ca_certs": "/ca.pem"})


def test_redis_cache_ssl_options_unknown_key() -> None:
    """An unknown ssl_options key is named in the error."""
    with pytest.raises(ValueError, match="'verify'"):
        redis_cache("rediss://h:1/0", ssl_options={"verify": True})


def test_redis_cache_ssl_options_bad_cert_reqs() -> None:
    """cert_reqs must be one of redis-py's names."""
    with pytest.raises(ValueError, match="cert_reqs"):
        redis_cache("rediss://h:1/0", ssl_options={"cert_reqs": "strict"})


def test_redis_cache_unix_socket_connection() -> None:
    """A unix:// URL builds a unix-socket connection (no TCP-only options passed)."""
    entry = redis_cache("unix:///run/redis/redis.sock?db=3")["default"]
    conn = _django_redis_connection(entry)
    assert isinstance(conn, UnixDomainSocketConnection)
    assert (conn.path, conn.db) == ("/run/redis/redis.sock", 3)


# --- bad URLs ------------------------------------------------------------------------------------

BAD_URLS = [
    "http://:hunter2pw@cache:6379/0",
    "cache.internal:6379/0?password=hunter2pw",
    ":hunter2pw@cache.internal:6379",
    "redis://:hunter2pw@",
    "redis://:hunter2pw@cache:notaport/0",
    "redis://:hunter2pw@cache:6379/zero",
    "redis://:hunter2pw@cache:0/0",
    "redis://:hunter2pw@cache:99999/0",
    "redis://user:hun/ter2pw@cache:6379/0",
    "redis://:hunter2pw/x@cache/0",
    "redis://:hunter2pw@cache/0?db=x",
    "redis//:hunter2pw@cache:6379/0",
    "redis://:hunter2pw@ca che:6379/0",
    "unix://:hunter2pw@",
    "rediss://:hunter2pw@[::1:6379/0",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_redis_cache_bad_url_names_expected_form(url: str) -> None:
    """A malformed URL raises ValueError that names the accepted forms."""
    with pytest.raises(ValueError, match="expected redis://") as excinfo:
        redis_cache(url)
    assert EXPECTED_FORM in str(excinfo.value)


@pytest.mark.parametrize("url", BAD_URLS)
def test_redis_cache_bad_url_never_shows_password(url: str) -> None:
    """No part of the password appears in the error, its repr or its chained causes."""
    with pytest.raises(ValueError, match=r"\*\*\*") as excinfo:
        redis_cache(url)
    texts = [str(excinfo.value), repr(excinfo.value)]
    cause = excinfo.value.__cause__ or excinfo.value.__context__
    texts.append(str(cause) if cause else "")
    assert not any(fragment in text for text in texts for fragment in ("hunter", "ter2pw"))


def test_redis_cache_non_string_url_is_type_error() -> None:
    """A URL of the wrong type is a TypeError naming the expected form."""
    with pytest.raises(TypeError, match="expected redis://"):
        redis_cache(6379)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://alice:pw@h/0", "redis://alice:***@h/0"),
        ("redis://pw@h/0", "redis://***@h/0"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("rediss://u:p@ss:w@h/0", "rediss://u:***@h/0"),
        ("redis//:pw@h/0", "redis//:***@h/0"),
        (":pw@h:6379", ":***@h:6379"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    """redact_url replaces the password (and only it) with ***."""
    assert redact_url(url) == expected


def test_parse_redis_url_loopback_names_are_one_server() -> None:
    """localhost and 127.0.0.1 on the same port are the same Redis server."""
    first = parse_redis_url("redis://localhost:6379/0")
    second = parse_redis_url("redis://127.0.0.1:6379/3")
    assert first.server == second.server


def test_parse_redis_url_defaults_port_and_db() -> None:
    """A URL without port and db means port 6379, database 0."""
    target = parse_redis_url("redis://cache")
    assert (target.port, target.db) == (6379, 0)


def test_parse_redis_url_repr_is_redacted() -> None:
    """The repr of a parsed URL never shows the password."""
    assert "s3cret" not in repr(parse_redis_url(URL))


# --- redis_sessions ------------------------------------------------------------------------------


def test_redis_sessions_use_a_dedicated_cache_alias() -> None:
    """Sessions use the (outage-aware) cache engine on the 'sessions' alias, added to CACHES."""
    from django.contrib.sessions.backends.cache import SessionStore as DjangoCacheStore

    from django_arena_scale.sessions import SessionStore

    result = redis_sessions("redis://sessions:6379/0", caches=redis_cache(URL))
    assert result["SESSION_ENGINE"] == "django_arena_scale.sessions"
    assert issubclass(SessionStore, DjangoCacheStore)
    assert result["SESSION_CACHE_ALIAS"] == "sessions"
    assert set(result["CACHES"]) == {"default", "sessions"}


def test_redis_sessions_entry_never_expires_early_or_hides_errors() -> None:
    """The sessions alias has no default TTL and does not ignore Redis errors."""
    entry = redis_sessions("redis://s:1/0", caches={})["CACHES"]["sessions"]
    assert entry["TIMEOUT"] is None
    assert entry["OPTIONS"]["IGNORE_EXCEPTIONS"] is False


def test_redis_sessions_do_not_modify_the_given_caches() -> None:
    """The caches argument is copied, not mutated."""
    caches = redis_cache(URL)
    redis_sessions("redis://s:1/0", caches=caches)
    assert list(caches) == ["default"]


def test_redis_sessions_cached_db_engine() -> None:
    """engine='cached_db' selects Django's cached_db backend."""
    result = redis_sessions("redis://s:1/0", caches={}, engine="cached_db")
    assert result["SESSION_ENGINE"] == "django.contrib.sessions.backends.cached_db"


def test_redis_sessions_unknown_engine() -> None:
    """An unknown engine is rejected with the accepted names."""
    with pytest.raises(ValueError, match="engine must be one of"):
        redis_sessions("redis://s:1/0", caches={}, engine="file")  # type: ignore[arg-type]


def test_redis_sessions_alias_clash_with_existing_cache() -> None:
    """Sessions may not reuse an alias that CACHES already has (e.g. the cache itself)."""
    with pytest.raises(ValueError, match="already in CACHES"):
        redis_sessions("redis://s:1/0", caches=redis_cache(URL), alias="default")


@pytest.mark.parametrize("url", [None, ""])
def test_redis_sessions_without_url_use_the_database(url: str | None) -> None:
    """No URL gives database sessions and leaves CACHES as it was."""
    result = redis_sessions(url, caches=redis_cache(None))
    assert result["SESSION_ENGINE"] == DB_SESSION_ENGINE
    assert result["CACHES"] == redis_cache(None)
    assert "SESSION_CACHE_ALIAS" not in result


def test_redis_sessions_caches_must_be_a_mapping() -> None:
    """caches must be the CACHES dict."""
    with pytest.raises(TypeError, match="pass caches=CACHES"):
        redis_sessions("redis://s:1/0", caches=None)  # type: ignore[arg-type]


def test_redis_sessions_bad_url_is_redacted() -> None:
    """A bad sessions URL raises ValueError without the password."""
    with pytest.raises(ValueError, match="expected redis://") as excinfo:
        redis_sessions("redis://:topsecretpw@/0", caches={})
    assert "topsecretpw" not in str(excinfo.value)


# --- channel_layers ------------------------------------------------------------------------------


def test_channel_layers_use_the_core_redis_layer() -> None:
    """A URL gives channels_redis.core.RedisChannelLayer with that address."""
    layer = channel_layers("redis://chan:6379/0")["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert channel_layer_redis_urls(layer) == ["redis://chan:6379/0"]


def test_channel_layers_timeouts_reach_the_async_connection() -> None:
    """The host options build an asyncio redis connection with the configured timeouts."""
    host = channel_layers("redis://chan:6379/0")["default"]["CONFIG"]["hosts"][0]
    conn = create_pool(host).make_connection()
    assert (conn.socket_connect_timeout, conn.socket_timeout) == (0.5, 10.0)


def test_channel_layers_timeout_must_exceed_blocking_receive() -> None:
    """A read timeout at or below channels_redis' 5 s BZPOPMIN would break idle receives."""
    with pytest.raises(ValueError, match="must exceed the 5 s blocking receive"):
        channel_layers("redis://chan:6379/0", timeout=5)


@pytest.mark.parametrize("capacity", [0, None, 1.5])
def test_channel_layers_capacity_must_be_positive_int(capacity: Any) -> None:
    """capacity must be a whole number >= 1."""
    with pytest.raises(ValueError, match="capacity must be a whole number >= 1"):
        channel_layers("redis://c:1/0", capacity=capacity)


def test_channel_layers_expiry_rounds_up_to_whole_seconds() -> None:
    """expiry accepts a timedelta and is rounded up to whole seconds for Redis EXPIRE."""
    config = channel_layers("redis://c:1/0", expiry=timedelta(milliseconds=1500))["default"]
    assert config["CONFIG"]["expiry"] == 2


def test_channel_layers_rediss_builds_tls_connection() -> None:
    """A rediss:// channel URL makes an SSL connection with the given CA."""
    host = channel_layers("rediss://c:6380/0", ssl_options={"ca_certs": "/ca.pem"})["default"]
    conn = create_pool(host["CONFIG"]["hosts"][0]).make_connection()
    assert conn.ca_certs == "/ca.pem"


def test_channel_layers_unix_socket() -> None:
    """A unix:// channel URL is accepted without TCP keepalive options."""
    host = channel_layers("unix:///run/redis.sock")["default"]["CONFIG"]["hosts"][0]
    assert "socket_keepalive" not in host


def test_channel_layers_without_url_is_in_memory() -> None:
    """No URL gives the in-memory channel layer."""
    assert channel_layers(None) == {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def test_channel_layers_bad_url_is_value_error() -> None:
    """A bad channel URL raises ValueError naming the expected form."""
    with pytest.raises(ValueError, match="expected redis://"):
        channel_layers("amqp://broker:5672/")


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["redis://a:1/0"], ["redis://a:1/0"]),
        ([("a", 1)], ["redis://a:1"]),
        ([{"address": "redis://a:1/0"}], ["redis://a:1/0"]),
        ([{"host": "a", "port": 2, "db": 3}], ["redis://a:2/3"]),
        ("redis://a:1/0", []),
    ],
)
def test_channel_layer_redis_urls_reads_every_host_form(hosts: Any, expected: list[str]) -> None:
    """Hosts written as URLs, tuples or dicts are all read back as URLs."""
    entry = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": hosts}}
    assert channel_layer_redis_urls(entry) == expected


# --- composition in settings.py ------------------------------------------------------------------

DOCUMENTED_SETTINGS = textwrap.dedent(
    """
    import os
    from django_arena_scale.redis import channel_layers, redis_cache, redis_sessions

    CACHES = redis_cache(os.environ.get("REDIS_URL"))
    globals().update(redis_sessions(os.environ.get("SESSION_REDIS_URL"), caches=CACHES))
    CHANNEL_LAYERS = channel_layers(os.environ.get("CHANNEL_REDIS_URL"))
    """
)


def _run_settings_snippet(env: dict[str, str]) -> dict[str, Any]:
    """Run the documented snippet in a fresh interpreter without Django settings."""
    script = DOCUMENTED_SETTINGS + textwrap.dedent(
        """
        import json, sys
        loaded = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
        print(json.dumps({"CACHES": CACHES, "CHANNEL_LAYERS": CHANNEL_LAYERS,
                          "SESSION_ENGINE": SESSION_ENGINE, "django_modules": loaded}))
        """
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DJANGO_"))}
    clean.update(env, PYTHONPATH=str(PACKAGE_PARENT))
    out = subprocess.run(
        [sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    import json

    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_documented_settings_form_puts_each_role_on_its_redis() -> None:
    """The documented three lines configure cache, sessions and channels from three URLs."""
    result = _run_settings_snippet(
        {
            "REDIS_URL": "redis://cache:6379/0",
            "SESSION_REDIS_URL": "redis://sessions:6379/0",
            "CHANNEL_REDIS_URL": "redis://channels:6379/0",
        }
    )
    assert result["CACHES"]["default"]["LOCATION"] == "redis://cache:6379/0"
    assert result["CACHES"]["sessions"]["LOCATION"] == "redis://sessions:6379/0"
    assert result["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"][0]["address"] == (
        "redis://channels:6379/0"
    )


def test_documented_settings_form_never_imports_django() -> None:
    """The helpers run without Django settings and import no Django module at all."""
    result = _run_settings_snippet({"REDIS_URL": "redis://cache:6379/0"})
    assert result["django_modules"] == []


def test_documented_settings_form_without_env_is_single_replica() -> None:
    """With no REDIS_* variable the same lines give the embedded single-replica default."""
    result = _run_settings_snippet({})
    assert result["SESSION_ENGINE"] == DB_SESSION_ENGINE
    assert result["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
