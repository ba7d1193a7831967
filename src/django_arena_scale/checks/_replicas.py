"""Checks for running several replicas, under ``manage.py check --deploy``.

Per-process state (W010, E010-E012) and who is let in (W060-W062) matter once more than one
replica is declared (``ARENA_SCALE_REPLICAS``, or ``ARENA_SCALE_DEPLOY``); Redis roles sharing a
server (W020, W021) and connections kept without health checks (W040) matter in production
whatever the count.  The messages come first, as module-level definitions: a constant when the
text is fixed, a function of the values it names otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.checks import Error, Warning, register

from django_arena_scale import redis as redis_helpers
from django_arena_scale.checks._base import (
    CACHE_ONLY_SESSION_ENGINES,
    CACHE_SESSION_ENGINES,
    HELPERS_HINT,
    TAG,
    Messages,
    declared_replicas,
    mapping,
    replica_note,
    safe,
    session_alias,
    session_engine,
    setting,
)

# Caches whose content lives in one process or on one machine, i.e. per replica.
PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache": "FileBasedCache",
}
FILE_SESSION_ENGINE = "django.contrib.sessions.backends.file"
INMEMORY_CHANNEL_LAYER = "channels.layers.InMemoryChannelLayer"
# Parts of SECRET_KEY values that are published (in docs, examples, generated env files) and
# that Django's own security.W009 does not catch: it only knows the 'django-insecure-' prefix,
# a length below 50 and fewer than 5 distinct characters.
PLACEHOLDER_SECRET_PARTS = (
    "insecure",
    "change-me",
    "changeme",
    "change_me",
    "dev-only",
    "not-secret",
    "not-for-production",
    "placeholder",
    "your-secret",
    "secret-key",
    "secret_key",
)

# --- messages -----------------------------------------------------------------------------------

REDIS_SESSIONS_HINT = (
    "Use Redis sessions: globals().update(redis_sessions(os.environ['SESSION_REDIS_URL'], "
    f"caches=CACHES)) (from {HELPERS_HINT}), or SESSION_ENGINE = "
    "'django.contrib.sessions.backends.db'."
)
SHARED_HINT = (
    "Give {role} a Redis server of its own with maxmemory-policy noeviction (a different db "
    "number is not enough: eviction is per server), e.g. {example}."
)
SESSIONS_SHARED_HINT = SHARED_HINT.format(
    role="sessions",
    example="globals().update(redis_sessions(os.environ['SESSION_REDIS_URL'], caches=CACHES))",
)
CHANNELS_SHARED_HINT = SHARED_HINT.format(
    role="the channel layer",
    example="CHANNEL_LAYERS = channel_layers(os.environ['CHANNEL_REDIS_URL'])",
)
GENERATE_SECRET_HINT = (
    "Set SECRET_KEY from the environment (SECRET_KEY = os.environ['SECRET_KEY']) to a long "
    "random value, the same on every replica: "
    'python -c "import secrets; print(secrets.token_urlsafe(50))".'
)


def W010(alias: str, kind: str, replicas: int) -> Warning:
    return Warning(
        f"CACHES[{alias!r}] uses {kind}, which every replica keeps to itself, "
        f"{replica_note(replicas)}: cached values and counters differ per replica.",
        hint="Put the cache on Redis: CACHES = redis_cache(os.environ['REDIS_URL']) "
        f"(from {HELPERS_HINT} import redis_cache).",
        obj=f"CACHES[{alias!r}]",
        id="django_arena_scale.W010",
    )


def E010(alias: str, kind: str, replicas: int) -> Error:
    return Error(
        f"Sessions are cached in CACHES[{alias!r}], a {kind} that every replica keeps to "
        f"itself, {replica_note(replicas)}: a login or logout is not seen by the other replicas.",
        hint=REDIS_SESSIONS_HINT,
        obj="SESSION_ENGINE",
        id="django_arena_scale.E010",
    )


def E011(replicas: int) -> Error:
    return Error(
        f"SESSION_ENGINE stores sessions in files on each replica {replica_note(replicas)}: "
        f"users are logged out when the next request reaches another replica.",
        hint=REDIS_SESSIONS_HINT,
        obj="SESSION_ENGINE",
        id="django_arena_scale.E011",
    )


def E012(alias: str, replicas: int) -> Error:
    return Error(
        f"CHANNEL_LAYERS[{alias!r}] is the in-memory channel layer {replica_note(replicas)}: "
        f"group messages never reach consumers on other replicas.",
        hint="Use Redis: CHANNEL_LAYERS = channel_layers(os.environ['CHANNEL_REDIS_URL']) "
        f"(from {HELPERS_HINT} import channel_layers).",
        obj=f"CHANNEL_LAYERS[{alias!r}]",
        id="django_arena_scale.E012",
    )


W020_DEFAULT_CACHE = Warning(
    "Sessions are stored in the general 'default' cache (SESSION_CACHE_ALIAS): evicting cache "
    "entries logs users out.",
    hint=SESSIONS_SHARED_HINT,
    obj="SESSION_CACHE_ALIAS",
    id="django_arena_scale.W020",
)


def W020(alias: str, url: str, cache_alias: str) -> Warning:
    return Warning(
        f"Sessions (CACHES[{alias!r}], {url}) are on the same Redis server as "
        f"CACHES[{cache_alias!r}]: evicting cache entries logs users out.",
        hint=SESSIONS_SHARED_HINT,
        obj="SESSION_CACHE_ALIAS",
        id="django_arena_scale.W020",
    )


def W021(layer_alias: str, url: str, cache_alias: str) -> Warning:
    return Warning(
        f"CHANNEL_LAYERS[{layer_alias!r}] ({url}) is on the same Redis server as "
        f"CACHES[{cache_alias!r}]: evicting cache entries drops channel messages and group "
        f"memberships.",
        hint=CHANNELS_SHARED_HINT,
        obj=f"CHANNEL_LAYERS[{layer_alias!r}]",
        id="django_arena_scale.W021",
    )


def W040(alias: str, max_age: Any) -> Warning:
    return Warning(
        f"DATABASES[{alias!r}] keeps connections open (CONN_MAX_AGE={max_age!r}) without "
        f"CONN_HEALTH_CHECKS: after a database restart or failover each worker's first query "
        f"fails on its dead connection.",
        hint=f"Add 'CONN_HEALTH_CHECKS': True to DATABASES[{alias!r}].",
        obj=f"DATABASES[{alias!r}]",
        id="django_arena_scale.W040",
    )


def W060(replicas: int) -> Warning:
    return Warning(
        f"ALLOWED_HOSTS contains '*' {replica_note(replicas)}: Django accepts any Host header "
        f"(password-reset links, absolute URLs and redirects built from it point wherever a "
        f"client says) and Channels' AllowedHostsOriginValidator accepts WebSocket handshakes "
        f"from any Origin (cross-site WebSocket hijacking of logged-in users).",
        hint="List the public host names the load balancer serves, e.g. ALLOWED_HOSTS = "
        "os.environ['ALLOWED_HOSTS'].split(',') with ALLOWED_HOSTS=arena.example.com; the "
        "probes need no entry (ProbeMiddleware answers them before host validation).",
        obj="ALLOWED_HOSTS",
        id="django_arena_scale.W060",
    )


def W061(part: str, replicas: int) -> Warning:
    # Never the key itself: only the published fragment it contains.
    return Warning(
        f"SECRET_KEY contains {part!r}: it looks like a published placeholder or development "
        f"value, {replica_note(replicas)}. Anyone who knows it can forge session data, "
        f"password-reset tokens and signed cookies that every replica accepts (Django's "
        f"security.W009 only checks its length and the 'django-insecure-' prefix).",
        hint=GENERATE_SECRET_HINT,
        obj="SECRET_KEY",
        id="django_arena_scale.W061",
    )


def W062(replicas: int) -> Warning:
    return Warning(
        f"The SECRET_KEY environment variable is set (the generated compose env file and "
        f"Kubernetes Secret pass it to every replica), but settings.SECRET_KEY is another "
        f"value, {replica_note(replicas)}: a key the settings make up (a fallback, or one "
        f"generated per process) differs between replicas, so a session or CSRF token signed "
        f"by one replica is refused by the next.",
        hint=GENERATE_SECRET_HINT,
        obj="SECRET_KEY",
        id="django_arena_scale.W062",
    )


# --- several replicas: per-process state --------------------------------------------------------


def _backend(entry: Any) -> str:
    backend = entry.get("BACKEND") if isinstance(entry, Mapping) else None
    return backend if isinstance(backend, str) else ""


@register(TAG, deploy=True)
@safe
def check_per_process_cache(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    return [
        W010(alias, kind, replicas)
        for alias, entry in mapping("CACHES").items()
        if (kind := PER_PROCESS_CACHES.get(_backend(entry))) is not None
    ]


@register(TAG, deploy=True)
@safe
def check_per_process_sessions(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    engine = session_engine()
    if engine == FILE_SESSION_ENGINE:
        return [E011(replicas)]
    if engine not in CACHE_SESSION_ENGINES:
        return []
    alias = session_alias()
    kind = PER_PROCESS_CACHES.get(_backend(mapping("CACHES").get(alias)))
    if kind is None:
        return []
    return [E010(alias, kind, replicas)]


@register(TAG, deploy=True)
@safe
def check_per_process_channel_layer(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    return [
        E012(alias, replicas)
        for alias, entry in mapping("CHANNEL_LAYERS").items()
        if _backend(entry) == INMEMORY_CHANNEL_LAYER
    ]


# --- Redis roles sharing one server -------------------------------------------------------------


def _servers(urls: Sequence[str]) -> dict[str, str]:
    """server identity -> a redacted URL, skipping malformed URLs (E003 reports those)."""
    servers: dict[str, str] = {}
    for url in urls:
        try:
            target = redis_helpers.parse_redis_url(url)
        except (TypeError, ValueError):
            continue
        servers.setdefault(target.server, target.redacted)
    return servers


def _cache_servers(exclude: str | None) -> dict[str, tuple[str, str]]:
    """server -> (alias, redacted URL) for every Redis cache alias except ``exclude``."""
    found: dict[str, tuple[str, str]] = {}
    for alias, entry in mapping("CACHES").items():
        if alias == exclude:
            continue
        for server, shown in _servers(redis_helpers.cache_redis_urls(entry)).items():
            found.setdefault(server, (alias, shown))
    return found


@register(TAG, deploy=True)
@safe
def check_sessions_share_cache_redis(app_configs: Any = None, **kwargs: Any) -> Messages:
    # cached_db keeps the database as the source of truth: an evicted copy costs one query.
    if session_engine() not in CACHE_ONLY_SESSION_ENGINES:
        return []
    alias = session_alias()
    session_servers = _servers(redis_helpers.cache_redis_urls(mapping("CACHES").get(alias, {})))
    if not session_servers:
        return []
    if alias == "default":
        return [W020_DEFAULT_CACHE]
    caches = _cache_servers(exclude=alias)
    return [
        W020(alias, shown, caches[server][0])
        for server, shown in session_servers.items()
        if server in caches
    ]


@register(TAG, deploy=True)
@safe
def check_channels_share_cache_redis(app_configs: Any = None, **kwargs: Any) -> Messages:
    exclude = session_alias() if session_engine() in CACHE_ONLY_SESSION_ENGINES else None
    caches = _cache_servers(exclude=exclude)
    return [
        W021(layer_alias, shown, caches[server][0])
        for layer_alias, entry in mapping("CHANNEL_LAYERS").items()
        for server, shown in _servers(redis_helpers.channel_layer_redis_urls(entry)).items()
        if server in caches
    ]


# --- databases ----------------------------------------------------------------------------------


@register(TAG, deploy=True)
@safe
def check_persistent_connections(app_configs: Any = None, **kwargs: Any) -> Messages:
    return persistent_connection_messages(mapping("DATABASES"))


def persistent_connection_messages(databases: Mapping[str, Any]) -> Messages:
    """W040 for each alias of ``databases`` that keeps connections without health checks."""
    messages: Messages = []
    for alias, entry in databases.items():
        if not isinstance(entry, Mapping):
            continue
        max_age = entry.get("CONN_MAX_AGE", 0)
        persistent = max_age is None or (
            isinstance(max_age, (int, float)) and not isinstance(max_age, bool) and max_age > 0
        )
        if persistent and not entry.get("CONN_HEALTH_CHECKS", False):
            messages.append(W040(alias, max_age))
    return messages


# --- several replicas: who is let in ------------------------------------------------------------


@register(TAG, deploy=True)
@safe
def check_allowed_hosts_wildcard(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    hosts = setting("ALLOWED_HOSTS", [])
    if replicas <= 1 or not isinstance(hosts, (list, tuple)) or "*" not in hosts:
        return []
    return [W060(replicas)]


def _placeholder_part(key: str) -> str | None:
    lowered = key.lower()
    if lowered.startswith("django-insecure"):
        return None  # Django's security.W009 reports that prefix
    return next((part for part in PLACEHOLDER_SECRET_PARTS if part in lowered), None)


@register(TAG, deploy=True)
@safe
def check_secret_key_placeholder(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    key = setting("SECRET_KEY")
    if replicas <= 1 or not isinstance(key, str):
        return []
    part = _placeholder_part(key)
    return [] if part is None else [W061(part, replicas)]


@register(TAG, deploy=True)
@safe
def check_secret_key_from_environment(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    from_env = os.environ.get("SECRET_KEY")
    key = setting("SECRET_KEY")
    if replicas <= 1 or not from_env or not isinstance(key, str) or key == from_env:
        return []
    return [W062(replicas)]
