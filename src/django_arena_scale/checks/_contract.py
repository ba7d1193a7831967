"""The settings contract: checks that catch a wrong or contradictory setting.

All but W001 and W031 run on a plain ``manage.py check``.  The messages come first, as
module-level definitions: a constant when the text is fixed, a function of the values it names
otherwise.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.core.checks import Error, Warning, register

from django_arena_scale import redis as redis_helpers
from django_arena_scale._conf import PREFIX, SETTINGS, Setting, conf
from django_arena_scale.checks._base import (
    CACHE_SESSION_ENGINES,
    HELPERS_HINT,
    TAG,
    Messages,
    in_range,
    mapping,
    number,
    safe,
    session_engine,
    setting,
    shown,
)
from django_arena_scale.deploy._spec import trusted_proxy_problem

PROBE_MIDDLEWARE = "django_arena_scale.middleware.ProbeMiddleware"
SESSION_MIDDLEWARE = "django_arena_scale.middleware.SessionMiddleware"
# Kubernetes probes every 10 s by default; results reused longer than that hide an outage.
MAX_SENSIBLE_CACHE_TTL = 10.0

# --- messages -----------------------------------------------------------------------------------


def E001(index: int, first: Any) -> Error:
    return Error(
        f"ProbeMiddleware is entry {index + 1} of MIDDLEWARE, after {first!r}; it must be first.",
        hint=f"Move {PROBE_MIDDLEWARE!r} to the top of MIDDLEWARE, so probes skip host "
        "validation, HTTPS redirects, sessions, login and throttling.",
        id="django_arena_scale.E001",
    )


W001 = Warning(
    "ProbeMiddleware is not in MIDDLEWARE, so probes pass through every other middleware "
    "(ALLOWED_HOSTS, SECURE_SSL_REDIRECT, login) and may be refused.",
    hint=f"Add {PROBE_MIDDLEWARE!r} as the first entry of MIDDLEWARE.",
    id="django_arena_scale.W001",
)


def W003(index: int, entry: str) -> Warning:
    return Warning(
        f"MIDDLEWARE has DependencyErrorMiddleware but saves sessions with Django's own "
        f"SessionMiddleware (entry {index + 1}, {entry!r}): when the sessions Redis or the "
        f"database fails while the session is saved after the view, the request gets a 500, not "
        f"the 503 dependency_unavailable (Django turns that exception into a 500 before "
        f"DependencyErrorMiddleware sees it).",
        hint=f"Replace {entry!r} with {SESSION_MIDDLEWARE!r} in MIDDLEWARE, at the same place (a "
        f"subclass of Django's that answers the 503).",
        obj="MIDDLEWARE",
        id="django_arena_scale.W003",
    )


def E002(declared: Setting[Any], value: Any) -> Error:
    return Error(
        f"{declared.full_name} must be {declared.expected()}, not {type(value).__name__} "
        f"({shown(declared.name, value)}).",
        hint=f"Set {declared.full_name} = {declared.default!r} (the default) or another "
        f"{declared.expected()} value: {declared.doc}",
        obj=declared.full_name,
        id="django_arena_scale.E002",
    )


def W002(name: str, close: str | None) -> Warning:
    return Warning(
        f"{name} is not a django-arena-scale setting; it has no effect.",
        hint=f"Did you mean {PREFIX}{close}?"
        if close
        else "Remove it, or check its spelling against django_arena_scale._conf.SETTINGS.",
        obj=name,
        id="django_arena_scale.W002",
    )


def E003(where: str, problem: Exception) -> Error:
    return Error(
        f"{where}: {problem}",
        hint="Write it as redis://:PASSWORD@HOST:6379/0 (rediss:// for TLS, "
        "unix:///path/to/redis.sock for a socket) and percent-encode / ? # @ : in the password.",
        obj=where,
        id="django_arena_scale.E003",
    )


def E004(name: str) -> Error:
    return Error(
        f"Health check name {name!r} is used by more than one check; /ready/ and /status/ key "
        f"results by name.",
        hint="Give each check its own name: @register_check(name='...'), Check(name='...') in "
        "ARENA_SCALE_CHECKS.",
        obj=name,
        id="django_arena_scale.E004",
    )


def E005(path: str, why: str) -> Error:
    return Error(
        f"{PREFIX}CHECKS entry {path!r} cannot be loaded ({why}).",
        hint="Use the dotted path of a Check instance or of a function taking no argument, "
        "e.g. 'myproject.health.check_llm'.",
        obj=path,
        id="django_arena_scale.E005",
    )


def E006(name: str, entry: Any) -> Error:
    return Error(
        f"{PREFIX}{name} entry {entry!r} is not an IP network.",
        hint=f"Write networks like '10.0.0.0/8', '192.168.1.7' or 'fd00::/8' in {PREFIX}{name}.",
        obj=f"{PREFIX}{name}",
        id="django_arena_scale.E006",
    )


def E007(alias: Any, caches: Mapping[str, Any]) -> Error:
    return Error(
        f"SESSION_ENGINE keeps sessions in a cache, but SESSION_CACHE_ALIAS {alias!r} is not an "
        f"alias of CACHES ({sorted(caches)!r}): every request using the session fails.",
        hint="Add the alias with globals().update(redis_sessions("
        f"os.environ['SESSION_REDIS_URL'], caches=CACHES)) (from {HELPERS_HINT}), or set "
        "SESSION_CACHE_ALIAS to one of the CACHES aliases.",
        obj="SESSION_CACHE_ALIAS",
        id="django_arena_scale.E007",
    )


def E008(entry: str, problem: str) -> Error:
    return Error(
        f"{PREFIX}TRUSTED_PROXIES entry {entry!r} {problem}.",
        hint="List only your load balancers' own private addresses, e.g. ['10.0.0.0/8'] or "
        "['127.0.0.1'].",
        obj=f"{PREFIX}TRUSTED_PROXIES",
        id="django_arena_scale.E008",
    )


def E031(declared: Setting[Any], value: Any) -> Error:
    bound = declared.range_text()
    return Error(
        f"{declared.full_name} must be a finite number {bound}, not {shown(declared.name, value)}.",
        hint=f"Set {declared.full_name} = {declared.default!r} (the default) or another value "
        f"{bound}.",
        obj=declared.full_name,
        id="django_arena_scale.E031",
    )


def W030(timeout: float, deadline: float) -> Warning:
    return Warning(
        f"{PREFIX}CHECK_TIMEOUT ({timeout:g} s) exceeds {PREFIX}READY_DEADLINE ({deadline:g} s): "
        f"slow checks are cut off by the deadline instead.",
        hint=f"Set {PREFIX}CHECK_TIMEOUT = {deadline:g} or less.",
        obj=f"{PREFIX}CHECK_TIMEOUT",
        id="django_arena_scale.W030",
    )


def W031(ttl: float) -> Warning:
    return Warning(
        f"{PREFIX}CHECK_CACHE_TTL is {ttl:g} s: /ready/ would keep answering from a result that "
        f"old, longer than the default 10 s probe period, after a dependency fails.",
        hint=f"Set {PREFIX}CHECK_CACHE_TTL = 1.0 (the default); one evaluation per second is "
        "already shared by all concurrent probes.",
        obj=f"{PREFIX}CHECK_CACHE_TTL",
        id="django_arena_scale.W031",
    )


# --- middleware ---------------------------------------------------------------------------------


def _is_probe_middleware(entry: Any) -> bool:
    if entry == PROBE_MIDDLEWARE:
        return True
    if not isinstance(entry, str) or "Probe" not in entry:
        return False
    try:
        from django.utils.module_loading import import_string

        from django_arena_scale.middleware import ProbeMiddleware

        cls = import_string(entry)
    except Exception:
        # Django reports a middleware it cannot import when it builds the handler.
        return False
    return isinstance(cls, type) and issubclass(cls, ProbeMiddleware)


def _probe_position() -> tuple[int | None, Sequence[Any]]:
    middleware = setting("MIDDLEWARE", [])
    if not isinstance(middleware, (list, tuple)):
        return None, []
    for index, entry in enumerate(middleware):
        if _is_probe_middleware(entry):
            return index, middleware
    return None, middleware


@register(TAG)
@safe
def check_probe_middleware_first(app_configs: Any = None, **kwargs: Any) -> Messages:
    index, middleware = _probe_position()
    if index is None or index == 0:
        return []
    return [E001(index, middleware[0])]


@register(TAG, deploy=True)
@safe
def check_probe_middleware_present(app_configs: Any = None, **kwargs: Any) -> Messages:
    index, _ = _probe_position()
    if index is not None or not isinstance(setting("MIDDLEWARE", []), (list, tuple)):
        return []
    return [W001]


def _middleware_class(entry: Any) -> Any:
    """The class a MIDDLEWARE entry names, or None (Django reports one it cannot import)."""
    if not isinstance(entry, str):
        return None
    try:
        from django.utils.module_loading import import_string

        return import_string(entry)
    except Exception:
        return None


@register(TAG)
@safe
def check_session_middleware(app_configs: Any = None, **kwargs: Any) -> Messages:
    middleware = setting("MIDDLEWARE", [])
    if not isinstance(middleware, (list, tuple)):
        return []
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware

    from django_arena_scale.middleware import DependencyErrorMiddleware

    classes = [_middleware_class(entry) for entry in middleware]
    if not any(isinstance(c, type) and issubclass(c, DependencyErrorMiddleware) for c in classes):
        return []
    return [
        W003(index, entry)
        for index, (entry, cls) in enumerate(zip(middleware, classes, strict=True))
        if cls is DjangoSessionMiddleware
    ]


# --- ARENA_SCALE_* names and types --------------------------------------------------------------


@register(TAG)
@safe
def check_setting_types(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for declared in SETTINGS.values():
        value = declared.raw()
        if not declared.accepts(value):
            messages.append(E002(declared, value))
    return messages


@register(TAG)
@safe
def check_unknown_settings(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    known = {s.full_name for s in SETTINGS.values()}
    for name in conf.names_in_settings():
        if name in known:
            continue
        # Compare without the shared prefix, which would make every name look close.
        close = difflib.get_close_matches(name[len(PREFIX) :], list(SETTINGS), n=1, cutoff=0.6)
        messages.append(W002(name, close[0] if close else None))
    return messages


# --- Redis URLs ---------------------------------------------------------------------------------


def _redis_urls() -> Iterator[tuple[str, str]]:
    """(where, url) for every Redis URL the settings use."""
    for alias, entry in mapping("CACHES").items():
        for url in redis_helpers.cache_redis_urls(entry):
            yield f"CACHES[{alias!r}]", url
    for alias, entry in mapping("CHANNEL_LAYERS").items():
        for url in redis_helpers.channel_layer_redis_urls(entry):
            yield f"CHANNEL_LAYERS[{alias!r}]", url
    breaker = conf.raw("BREAKER_REDIS_URL")
    if isinstance(breaker, str) and breaker.strip():
        yield f"{PREFIX}BREAKER_REDIS_URL", breaker


@register(TAG)
@safe
def check_redis_urls(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for where, url in _redis_urls():
        try:
            redis_helpers.parse_redis_url(url)
        except (TypeError, ValueError) as exc:
            messages.append(E003(where, exc))
    return messages


# --- sessions cache alias -----------------------------------------------------------------------


@register(TAG)
@safe
def check_session_cache_alias(app_configs: Any = None, **kwargs: Any) -> Messages:
    if session_engine() not in CACHE_SESSION_ENGINES:
        return []
    alias = setting("SESSION_CACHE_ALIAS", "default")
    caches = mapping("CACHES")
    if alias in caches:
        return []
    return [E007(alias, caches)]


# --- health-check registry ----------------------------------------------------------------------


_REGISTRY_SETTINGS = ("CHECKS", "DATABASE_CHECKS", "REDIS_CHECKS", "CHANNEL_LAYER_CHECK")


def _registry_inputs_ok() -> bool:
    """Whether the settings the health-check registry is built from are well formed.

    When they are not, the registry cannot be listed; E002 and Django's own checks report the
    cause, so the duplicate-name check stays quiet instead of failing on it.
    """
    if not all(SETTINGS[name].accepts(conf.raw(name)) for name in _REGISTRY_SETTINGS):
        return False
    for name in ("CACHES", "DATABASES", "CHANNEL_LAYERS"):
        value = setting(name, {})
        if not isinstance(value, Mapping):
            return False
        if not all(isinstance(entry, Mapping) for entry in value.values()):
            return False
    return True


@register(TAG)
@safe
def check_health_check_names(app_configs: Any = None, **kwargs: Any) -> Messages:
    try:
        from django_arena_scale.health._registry import duplicate_check_names
    except ImportError:
        return []
    if not _registry_inputs_ok():
        return []
    return [E004(name) for name in duplicate_check_names()]


@register(TAG)
@safe
def check_health_check_paths(app_configs: Any = None, **kwargs: Any) -> Messages:
    if not SETTINGS["CHECKS"].accepts(conf.raw("CHECKS")):
        return []  # E002 already reports the type
    try:
        from django_arena_scale.health._registry import invalid_check_paths
    except ImportError:
        return []
    return [E005(path, why) for path, why in invalid_check_paths().items()]


# --- networks -----------------------------------------------------------------------------------


@register(TAG)
@safe
def check_networks(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for name in ("STATUS_ALLOWED_CIDRS", "TRUSTED_PROXIES"):
        value = conf.raw(name)
        if not SETTINGS[name].accepts(value):
            continue
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except (TypeError, ValueError):
                messages.append(E006(name, entry))
                continue
            problem = trusted_proxy_problem(entry) if name == "TRUSTED_PROXIES" else None
            if problem is not None:
                messages.append(E008(entry, problem))
    return messages


# --- durations ----------------------------------------------------------------------------------


@register(TAG)
@safe
def check_ranges(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for name, declared in SETTINGS.items():
        if declared.bounds is None:
            continue
        value = number(name)
        if value is None or declared.in_range(value):
            continue
        messages.append(E031(declared, declared.raw()))
    return messages


@register(TAG)
@safe
def check_check_timeout(app_configs: Any = None, **kwargs: Any) -> Messages:
    timeout, deadline = in_range("CHECK_TIMEOUT"), in_range("READY_DEADLINE")
    if timeout is None or deadline is None or timeout <= deadline:
        return []
    return [W030(timeout, deadline)]


@register(TAG, deploy=True)
@safe
def check_cache_ttl(app_configs: Any = None, **kwargs: Any) -> Messages:
    ttl = in_range("CHECK_CACHE_TTL")
    if ttl is None or ttl <= MAX_SENSIBLE_CACHE_TTL:
        return []
    return [W031(ttl)]
