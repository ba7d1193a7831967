"""Django system checks: the settings contract of django-arena-scale.

Every message has a stable id and a hint that says what to type.  ``manage.py check`` runs
the checks that catch a wrong or contradictory setting; ``manage.py check --deploy`` adds the
ones about running several replicas.  No check raises: a bad value is reported, never crashed on.

Always (``check`` and ``check --deploy``):

- ``E001`` ProbeMiddleware is in ``MIDDLEWARE`` but not first.  ``W003``
  DependencyErrorMiddleware is in ``MIDDLEWARE`` with Django's own SessionMiddleware instead of
  the package's (a failed session save after the view stays a 500).
- ``E002`` an ``ARENA_SCALE_*`` setting has the wrong type.
- ``W002`` an ``ARENA_SCALE_*`` name is unknown (with a "did you mean").
- ``E003`` a Redis URL in ``CACHES``, ``CHANNEL_LAYERS`` or ``ARENA_SCALE_BREAKER_REDIS_URL``
  is malformed (password redacted).
- ``E004`` two health checks share a name.  ``E005`` an ``ARENA_SCALE_CHECKS`` path cannot be
  loaded.  ``E006`` an entry of ``ARENA_SCALE_STATUS_ALLOWED_CIDRS`` or
  ``ARENA_SCALE_TRUSTED_PROXIES`` is not an IP network.  ``E007`` cache sessions name a
  ``SESSION_CACHE_ALIAS`` that ``CACHES`` lacks.  ``E008`` an ``ARENA_SCALE_TRUSTED_PROXIES``
  network is not private (``0.0.0.0/0``, or any public address: every client there could forge
  ``X-Forwarded-For`` and pass the ``/status/`` address rule).
- ``E030`` the readiness deadline is not below the probe timeout (the deployment spec's
  ``probe_timeout`` when ``ARENA_SCALE_DEPLOY`` is valid, else ``ARENA_SCALE_PROBE_TIMEOUT``).
  ``E031`` a duration or count is out of range.  ``W030`` the per-check timeout exceeds the
  readiness deadline.
- ``W050`` ``ARENA_SCALE_DEPLOY`` is not a valid deployment spec (generate_lb_config would refuse
  it); the comparisons below are then skipped.

Deploy only (``check --deploy``):

- ``W001`` ProbeMiddleware is missing from ``MIDDLEWARE``.
- With more than one replica declared (``ARENA_SCALE_REPLICAS``, or ``ARENA_SCALE_DEPLOY``
  whose ``replicas`` defaults to the deployment spec's 10): ``W010`` a per-process cache;
  ``E010`` sessions on a per-process cache; ``E011`` file sessions; ``E012`` the in-memory
  channel layer.
- ``W020`` sessions, ``W021`` the channel layer, on the same Redis server as the cache
  (its eviction would log users out or drop messages).
- ``W031`` the readiness cache TTL is so long that an outage is noticed late.
- ``W040`` a database keeps connections (``CONN_MAX_AGE``) without ``CONN_HEALTH_CHECKS``.
- With more than one replica declared: ``W060`` ``ALLOWED_HOSTS`` contains ``'*'`` (no Host
  validation, and Channels' WebSocket Origin check accepts any site); ``W061`` ``SECRET_KEY``
  contains a published placeholder fragment (``change-me``, ``insecure``, ``dev-only``...) that
  Django's ``security.W009`` does not catch; ``W062`` the ``SECRET_KEY`` environment variable
  is set but ``settings.SECRET_KEY`` is another value (a fallback or per-process key differs
  between replicas).
- With ``ARENA_SCALE_DEPLOY`` set, the configs generate_lb_config renders from it against the
  app's own settings: ``W051`` the probe prefix differs from ``ARENA_SCALE_PROBE_PREFIX``;
  ``W052`` ``ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT`` is not below the spec's
  ``app_graceful_timeout``; ``W053`` ``ARENA_SCALE_DRAIN_FILE`` is unset or not the path the
  generated environment sets; ``W054`` an explicit ``ARENA_SCALE_PROBE_TIMEOUT`` differs from
  the spec's ``probe_timeout``; ``W055`` ``STATIC_URL`` / ``STATIC_ROOT`` are not where the
  generated nginx serves and the compose static volume is mounted.  Deploy-only because the
  replicas' settings often come from the environment the generated configs set: run it with the
  production environment.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from django_arena_scale import redis as redis_helpers
from django_arena_scale.conf import PREFIX, SETTINGS, conf
from django_arena_scale.deploy.spec import trusted_proxy_problem

if TYPE_CHECKING:
    from django_arena_scale.deploy.spec import DeploymentSpec

TAG = "django_arena_scale"
PROBE_MIDDLEWARE = "django_arena_scale.middleware.ProbeMiddleware"
SESSION_MIDDLEWARE = "django_arena_scale.middleware.SessionMiddleware"
# Caches whose content lives in one process or on one machine, i.e. per replica.
PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache": "FileBasedCache",
}
CACHE_SESSION_ENGINES = {
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
}
FILE_SESSION_ENGINE = "django.contrib.sessions.backends.file"
INMEMORY_CHANNEL_LAYER = "channels.layers.InMemoryChannelLayer"
# Kubernetes probes every 10 s by default; results reused longer than that hide an outage.
MAX_SENSIBLE_CACHE_TTL = 10.0
HELPERS_HINT = "django_arena_scale.redis"

Messages = list[CheckMessage]
CheckFunc = Callable[..., Messages]


def _safe(func: CheckFunc) -> CheckFunc:
    """Turn an unexpected exception into a warning: a check must never crash ``manage.py``."""

    @functools.wraps(func)
    def wrapper(app_configs: Any = None, **kwargs: Any) -> Messages:
        try:
            return func(app_configs, **kwargs)
        except Exception as exc:
            # Only the type: the text of an arbitrary error may quote a secret setting.
            return [
                Warning(
                    f"django-arena-scale could not run its {func.__name__} check "
                    f"({type(exc).__name__}).",
                    hint="Fix the setting the other messages name; if there is none, report "
                    "this as a bug.",
                    id="django_arena_scale.W099",
                )
            ]

    return wrapper


def _setting(name: str, default: Any = None) -> Any:
    return getattr(settings, name, default)


def _mapping(name: str) -> Mapping[str, Any]:
    value = _setting(name, {})
    return value if isinstance(value, Mapping) else {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str) -> float | None:
    """A numeric ARENA_SCALE_* value, or None when its type is wrong (E002 reports that)."""
    value = conf.raw(name)
    if not SETTINGS[name].accepts(value) or value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float: out of range, not a crash
        return math.inf


def _spec_default_replicas() -> int:
    """``DeploymentSpec``'s default replica count (what generate_lb_config renders)."""
    try:
        import dataclasses

        from django_arena_scale.deploy.spec import DeploymentSpec

        default = {f.name: f.default for f in dataclasses.fields(DeploymentSpec)}["replicas"]
    except Exception:
        # Whatever the deploy module's state, a deployment spec means "several replicas".
        return 2
    return default if isinstance(default, int) and not isinstance(default, bool) else 2


def declared_replicas() -> int:
    """The largest replica count the settings declare (1 when none or when malformed).

    A non-empty ``ARENA_SCALE_DEPLOY`` without ``replicas`` declares the spec's default count.
    """
    counts = [1]
    replicas = conf.raw("REPLICAS")
    if _is_int(replicas):
        counts.append(replicas)
    deploy = conf.raw("DEPLOY")
    if isinstance(deploy, Mapping) and deploy:
        if "replicas" not in deploy:
            counts.append(_spec_default_replicas())
        elif _is_int(deploy["replicas"]):
            counts.append(deploy["replicas"])
    return max(counts)


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
    middleware = _setting("MIDDLEWARE", [])
    if not isinstance(middleware, (list, tuple)):
        return None, []
    for index, entry in enumerate(middleware):
        if _is_probe_middleware(entry):
            return index, middleware
    return None, middleware


@register(TAG)
@_safe
def check_probe_middleware_first(app_configs: Any = None, **kwargs: Any) -> Messages:
    index, middleware = _probe_position()
    if index is None or index == 0:
        return []
    return [
        Error(
            f"ProbeMiddleware is entry {index + 1} of MIDDLEWARE, after {middleware[0]!r}; "
            f"it must be first.",
            hint=f"Move {PROBE_MIDDLEWARE!r} to the top of MIDDLEWARE, so probes skip host "
            "validation, HTTPS redirects, sessions, login and throttling.",
            id="django_arena_scale.E001",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_probe_middleware_present(app_configs: Any = None, **kwargs: Any) -> Messages:
    index, _ = _probe_position()
    if index is not None or not isinstance(_setting("MIDDLEWARE", []), (list, tuple)):
        return []
    return [
        Warning(
            "ProbeMiddleware is not in MIDDLEWARE, so probes pass through every other "
            "middleware (ALLOWED_HOSTS, SECURE_SSL_REDIRECT, login) and may be refused.",
            hint=f"Add {PROBE_MIDDLEWARE!r} as the first entry of MIDDLEWARE.",
            id="django_arena_scale.W001",
        )
    ]


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
@_safe
def check_session_middleware(app_configs: Any = None, **kwargs: Any) -> Messages:
    middleware = _setting("MIDDLEWARE", [])
    if not isinstance(middleware, (list, tuple)):
        return []
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware

    from django_arena_scale.middleware import DependencyErrorMiddleware

    classes = [_middleware_class(entry) for entry in middleware]
    if not any(isinstance(c, type) and issubclass(c, DependencyErrorMiddleware) for c in classes):
        return []
    return [
        Warning(
            f"MIDDLEWARE has DependencyErrorMiddleware but saves sessions with Django's own "
            f"SessionMiddleware (entry {index + 1}, {entry!r}): when the sessions Redis or the "
            f"database fails while the session is saved after the view, the request gets a "
            f"500, not the 503 dependency_unavailable (Django turns that exception into a 500 "
            f"before DependencyErrorMiddleware sees it).",
            hint=f"Replace {entry!r} with {SESSION_MIDDLEWARE!r} in MIDDLEWARE, at the same "
            f"place (a subclass of Django's that answers the 503).",
            obj="MIDDLEWARE",
            id="django_arena_scale.W003",
        )
        for index, (entry, cls) in enumerate(zip(middleware, classes, strict=True))
        if cls is DjangoSessionMiddleware
    ]


# --- ARENA_SCALE_* names and types --------------------------------------------------------------


@register(TAG)
@_safe
def check_setting_types(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for setting in SETTINGS.values():
        value = conf.raw(setting.name)
        if setting.accepts(value):
            continue
        messages.append(
            Error(
                f"{setting.full_name} must be {setting.expected()}, not "
                f"{type(value).__name__} ({_shown(setting.name, value)}).",
                hint=f"Set {setting.full_name} = {setting.default!r} (the default) or another "
                f"{setting.expected()} value: {setting.doc}",
                obj=setting.full_name,
                id="django_arena_scale.E002",
            )
        )
    return messages


def _shown(name: str, value: Any) -> str:
    if name == "STATUS_TOKEN":
        return "value hidden"
    try:
        text = repr(redis_helpers.redact_url(value) if isinstance(value, str) else value)
    except Exception:  # e.g. an int beyond sys.get_int_max_str_digits(), or a broken __repr__
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= 60 else text[:57] + "..."


@register(TAG)
@_safe
def check_unknown_settings(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    known = [s.full_name for s in SETTINGS.values()]
    for name in conf.names_in_settings():
        if name in known:
            continue
        # Compare without the shared prefix, which would make every name look close.
        close = difflib.get_close_matches(name[len(PREFIX) :], list(SETTINGS), n=1, cutoff=0.6)
        hint = (
            f"Did you mean {PREFIX}{close[0]}?"
            if close
            else "Remove it, or check its spelling against django_arena_scale.conf.SETTINGS."
        )
        messages.append(
            Warning(
                f"{name} is not a django-arena-scale setting; it has no effect.",
                hint=hint,
                obj=name,
                id="django_arena_scale.W002",
            )
        )
    return messages


# --- Redis URLs ---------------------------------------------------------------------------------


def _redis_urls() -> Iterator[tuple[str, str]]:
    """(where, url) for every Redis URL the settings use."""
    for alias, entry in _mapping("CACHES").items():
        for url in redis_helpers.cache_redis_urls(entry):
            yield f"CACHES[{alias!r}]", url
    for alias, entry in _mapping("CHANNEL_LAYERS").items():
        for url in redis_helpers.channel_layer_redis_urls(entry):
            yield f"CHANNEL_LAYERS[{alias!r}]", url
    breaker = conf.raw("BREAKER_REDIS_URL")
    if isinstance(breaker, str) and breaker.strip():
        yield f"{PREFIX}BREAKER_REDIS_URL", breaker


@register(TAG)
@_safe
def check_redis_urls(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for where, url in _redis_urls():
        try:
            redis_helpers.parse_redis_url(url)
        except (TypeError, ValueError) as exc:
            messages.append(
                Error(
                    f"{where}: {exc}",
                    hint="Write it as redis://:PASSWORD@HOST:6379/0 (rediss:// for TLS, "
                    "unix:///path/to/redis.sock for a socket) and percent-encode / ? # @ : in "
                    "the password.",
                    obj=where,
                    id="django_arena_scale.E003",
                )
            )
    return messages


# --- sessions cache alias -----------------------------------------------------------------------


@register(TAG)
@_safe
def check_session_cache_alias(app_configs: Any = None, **kwargs: Any) -> Messages:
    if _session_engine() not in CACHE_SESSION_ENGINES:
        return []
    alias = _setting("SESSION_CACHE_ALIAS", "default")
    caches = _mapping("CACHES")
    if alias in caches:
        return []
    return [
        Error(
            f"SESSION_ENGINE keeps sessions in a cache, but SESSION_CACHE_ALIAS {alias!r} is not "
            f"an alias of CACHES ({sorted(caches)!r}): every request using the session fails.",
            hint="Add the alias with globals().update(redis_sessions("
            f"os.environ['REDIS_SESSIONS_URL'], caches=CACHES)) (from {HELPERS_HINT}), or set "
            "SESSION_CACHE_ALIAS to one of the CACHES aliases.",
            obj="SESSION_CACHE_ALIAS",
            id="django_arena_scale.E007",
        )
    ]


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
        value = _setting(name, {})
        if not isinstance(value, Mapping):
            return False
        if not all(isinstance(entry, Mapping) for entry in value.values()):
            return False
    return True


@register(TAG)
@_safe
def check_health_check_names(app_configs: Any = None, **kwargs: Any) -> Messages:
    try:
        from django_arena_scale.health.registry import duplicate_check_names
    except ImportError:
        return []
    if not _registry_inputs_ok():
        return []
    return [
        Error(
            f"Health check name {name!r} is used by more than one check; /ready/ and /status/ "
            f"key results by name.",
            hint="Give each check its own name: @register_check(name='...'), "
            "Check(name='...') in ARENA_SCALE_CHECKS.",
            obj=name,
            id="django_arena_scale.E004",
        )
        for name in duplicate_check_names()
    ]


@register(TAG)
@_safe
def check_health_check_paths(app_configs: Any = None, **kwargs: Any) -> Messages:
    if not SETTINGS["CHECKS"].accepts(conf.raw("CHECKS")):
        return []  # E002 already reports the type
    try:
        from django_arena_scale.health.registry import invalid_check_paths
    except ImportError:
        return []
    return [
        Error(
            f"{PREFIX}CHECKS entry {path!r} cannot be loaded ({why}).",
            hint="Use the dotted path of a Check instance or of a function taking no "
            "argument, e.g. 'myproject.health.check_llm'.",
            obj=path,
            id="django_arena_scale.E005",
        )
        for path, why in invalid_check_paths().items()
    ]


@register(TAG)
@_safe
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
                messages.append(
                    Error(
                        f"{PREFIX}{name} entry {entry!r} is not an IP network.",
                        hint=f"Write networks like '10.0.0.0/8', '192.168.1.7' or 'fd00::/8' in "
                        f"{PREFIX}{name}.",
                        obj=f"{PREFIX}{name}",
                        id="django_arena_scale.E006",
                    )
                )
                continue
            problem = trusted_proxy_problem(entry) if name == "TRUSTED_PROXIES" else None
            if problem is not None:
                messages.append(
                    Error(
                        f"{PREFIX}TRUSTED_PROXIES entry {entry!r} {problem}.",
                        hint="List only your load balancers' own private addresses, e.g. "
                        "['10.0.0.0/8'] or ['127.0.0.1'].",
                        obj=f"{PREFIX}TRUSTED_PROXIES",
                        id="django_arena_scale.E008",
                    )
                )
    return messages


# --- durations ----------------------------------------------------------------------------------


def _in_range(name: str) -> float | None:
    """The value when its type is right and it is within its declared range, else None."""
    value = _number(name)
    if value is None or not SETTINGS[name].in_range(value):
        return None
    return value


@register(TAG)
@_safe
def check_ranges(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for name, setting in SETTINGS.items():
        bound = setting.range_text()
        if not bound:
            continue
        value = _number(name)
        if value is None or setting.in_range(value):
            continue
        default = setting.default
        messages.append(
            Error(
                f"{PREFIX}{name} must be a finite number {bound}, not "
                f"{_shown(name, conf.raw(name))}.",
                hint=f"Set {PREFIX}{name} = {default!r} (the default) or another value {bound}.",
                obj=f"{PREFIX}{name}",
                id="django_arena_scale.E031",
            )
        )
    return messages


def _probe_timeout() -> tuple[float | None, str]:
    """The timeout probes get and the setting it comes from.

    With a valid ``ARENA_SCALE_DEPLOY`` that is the spec's ``probe_timeout``: the generated
    nginx locations, compose healthchecks and Kubernetes probes all use it.
    """
    spec = _deploy_spec()
    if spec is not None:
        return float(spec.probe_timeout), _spec_field("probe_timeout", f"{spec.probe_timeout} s")
    probe = _in_range("PROBE_TIMEOUT")
    return probe, f"{PREFIX}PROBE_TIMEOUT ({probe or 0:g} s)"


@register(TAG)
@_safe
def check_ready_deadline(app_configs: Any = None, **kwargs: Any) -> Messages:
    deadline = _in_range("READY_DEADLINE")
    probe, source = _probe_timeout()
    if deadline is None or probe is None or deadline < probe:
        return []
    raise_it = (
        f"raise {PREFIX}DEPLOY['probe_timeout'] and re-run generate_lb_config"
        if source.startswith(f"{PREFIX}DEPLOY")
        else f"raise the probe's timeout and {PREFIX}PROBE_TIMEOUT together"
    )
    return [
        Error(
            f"{PREFIX}READY_DEADLINE ({deadline:g} s) must be below {source}, or the load "
            f"balancer gives up before /ready/ answers.",
            hint=f"Set {PREFIX}READY_DEADLINE = {round(probe * 0.8, 3):g} (0.8 x the probe "
            f"timeout), or {raise_it}.",
            obj=f"{PREFIX}READY_DEADLINE",
            id="django_arena_scale.E030",
        )
    ]


@register(TAG)
@_safe
def check_check_timeout(app_configs: Any = None, **kwargs: Any) -> Messages:
    timeout, deadline = _in_range("CHECK_TIMEOUT"), _in_range("READY_DEADLINE")
    if timeout is None or deadline is None or timeout <= deadline:
        return []
    return [
        Warning(
            f"{PREFIX}CHECK_TIMEOUT ({timeout:g} s) exceeds {PREFIX}READY_DEADLINE "
            f"({deadline:g} s): slow checks are cut off by the deadline instead.",
            hint=f"Set {PREFIX}CHECK_TIMEOUT = {deadline:g} or less.",
            obj=f"{PREFIX}CHECK_TIMEOUT",
            id="django_arena_scale.W030",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_cache_ttl(app_configs: Any = None, **kwargs: Any) -> Messages:
    ttl = _in_range("CHECK_CACHE_TTL")
    if ttl is None or ttl <= MAX_SENSIBLE_CACHE_TTL:
        return []
    return [
        Warning(
            f"{PREFIX}CHECK_CACHE_TTL is {ttl:g} s: /ready/ would keep answering from a result "
            f"that old, longer than the default 10 s probe period, after a dependency fails.",
            hint=f"Set {PREFIX}CHECK_CACHE_TTL = 1.0 (the default); one evaluation per second "
            "is already shared by all concurrent probes.",
            obj=f"{PREFIX}CHECK_CACHE_TTL",
            id="django_arena_scale.W031",
        )
    ]


# --- the deployment spec agrees with the app ----------------------------------------------------
# generate_lb_config renders probe paths, timeouts and the drain file from the DeploymentSpec;
# the replicas run with this project's ARENA_SCALE_* settings.  Nothing else ties the two, so
# these checks compare them whenever ARENA_SCALE_DEPLOY is set (the spec is built as the command
# builds it, without its command-line overrides).


def _deploy_mapping() -> Mapping[str, Any] | None:
    """``ARENA_SCALE_DEPLOY`` when set to a non-empty dict (E002 reports another type)."""
    value = conf.raw("DEPLOY")
    if not SETTINGS["DEPLOY"].accepts(value) or not value:
        return None
    return value  # type: ignore[no-any-return]


def _deploy_spec_or_error() -> tuple[DeploymentSpec | None, str | None]:
    """(spec, None), (None, why the spec is invalid), or (None, None) when not set."""
    mapping = _deploy_mapping()
    if mapping is None:
        return None, None
    from django_arena_scale.deploy.spec import DeploymentSpec

    try:
        return DeploymentSpec.from_sources(None, mapping), None
    except (TypeError, ValueError) as exc:  # SpecError is a ValueError
        text = str(exc)
        return None, text if len(text) <= 300 else text[:297] + "..."


def _deploy_spec() -> DeploymentSpec | None:
    """The spec generate_lb_config renders, or None when unset or invalid (W050 says why)."""
    return _deploy_spec_or_error()[0]


def _spec_field(name: str, shown: str) -> str:
    """How a message names a spec field and its value, saying when it is the default."""
    mapping = _deploy_mapping() or {}
    key = f"{PREFIX}DEPLOY[{name!r}]"
    return f"{key} ({shown})" if name in mapping else f"{key} ({shown}, the default)"


def _explicit(name: str) -> bool:
    """Whether the settings define ``ARENA_SCALE_<name>`` (rather than relying on the default)."""
    return f"{PREFIX}{name}" in conf.names_in_settings()


@register(TAG)
@_safe
def check_deploy_spec(app_configs: Any = None, **kwargs: Any) -> Messages:
    _, error = _deploy_spec_or_error()
    if error is None:
        return []
    return [
        Warning(
            f"{PREFIX}DEPLOY is not a valid deployment spec: {error} generate_lb_config "
            f"refuses it, and the checks that compare it with the app's settings are skipped.",
            hint="Fix that key of ARENA_SCALE_DEPLOY; `manage.py generate_lb_config --help` "
            "lists every field with its default and range.",
            obj=f"{PREFIX}DEPLOY",
            id="django_arena_scale.W050",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_deploy_probe_prefix(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    if spec is None or not SETTINGS["PROBE_PREFIX"].accepts(conf.raw("PROBE_PREFIX")):
        return []
    app, generated = conf.PROBE_PREFIX, spec.probe_prefix
    if app == generated:
        return []
    return [
        Warning(
            f"ProbeMiddleware answers under {PREFIX}PROBE_PREFIX {app!r} ({app}ready/), but the "
            f"configs generated from {_spec_field('probe_prefix', repr(generated))} probe "
            f"{spec.probe_paths['ready']}: nginx, the compose healthchecks and the Kubernetes "
            f"probes get no probe answer and take every replica out.",
            hint=f"Set {PREFIX}DEPLOY['probe_prefix'] = {app!r} and re-run `manage.py "
            f"generate_lb_config`, or, if the probes must move, {PREFIX}PROBE_PREFIX = "
            f"{generated!r} (the generated configs also pass it in the environment).",
            obj=f"{PREFIX}PROBE_PREFIX",
            id="django_arena_scale.W051",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_deploy_shutdown_budget(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    hook = _in_range("SHUTDOWN_HOOK_TIMEOUT")
    if spec is None or hook is None or hook < spec.app_graceful_timeout:
        return []
    budget = spec.app_graceful_timeout
    return [
        Warning(
            f"{PREFIX}SHUTDOWN_HOOK_TIMEOUT ({hook:g} s per hook) is not below "
            f"{_spec_field('app_graceful_timeout', f'{budget} s')}, the time the generated "
            f"configs give the app to end its streams and run its shutdown hooks before the "
            f"server's graceful_timeout ({spec.graceful_timeout} s) kills the workers: one slow "
            f"hook takes the whole budget and later hooks never run.",
            hint=f"Set {PREFIX}SHUTDOWN_HOOK_TIMEOUT = {round(budget / 4, 3):g} (a quarter of "
            f"the app's budget), or raise {PREFIX}DEPLOY['app_graceful_timeout'] (with "
            f"graceful_timeout above it) and re-run `manage.py generate_lb_config`.",
            obj=f"{PREFIX}SHUTDOWN_HOOK_TIMEOUT",
            id="django_arena_scale.W052",
        )
    ]


def _generated_drain_files(spec: DeploymentSpec) -> dict[str, str]:
    """Where the generated configs set ``ARENA_SCALE_DRAIN_FILE``: file -> path."""
    from django_arena_scale.deploy import k8s

    found = {
        "docker-compose.yml": spec.app_environment.get(f"{PREFIX}DRAIN_FILE"),
        "the Kubernetes ConfigMap": k8s.config_map_env(spec).get(f"{PREFIX}DRAIN_FILE"),
    }
    return {where: path for where, path in found.items() if path}


@register(TAG, deploy=True)
@_safe
def check_deploy_drain_file(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    # The local variant's runner gives every replica a drain file of its own at start.
    if spec is None or spec.target != "compose":
        return []
    if not SETTINGS["DRAIN_FILE"].accepts(conf.raw("DRAIN_FILE")):
        return []
    generated = _generated_drain_files(spec)
    value = conf.DRAIN_FILE
    if not generated or value in generated.values():
        return []
    shown = ", ".join(f"{path!r} in {where}" for where, path in generated.items())
    if value is None:
        problem = (
            f"{PREFIX}DRAIN_FILE is not set, but the configs generated from {PREFIX}DEPLOY "
            f"drain a replica with `manage.py drain on` (deploy.sh, the Kubernetes preStop "
            f"hook) and pass the path in its environment ({shown}): the drain fails and open "
            f"streams are cut at SIGTERM instead of reconnecting elsewhere."
        )
    else:
        problem = (
            f"{PREFIX}DRAIN_FILE is {_shown('DRAIN_FILE', value)}, not the path the configs "
            f"generated from {PREFIX}DEPLOY set in the replicas' environment ({shown}): the "
            f"settings override that variable, so the drain file is not where the generated "
            f"configs expect it (on Kubernetes the root file system is read-only: only the "
            f"mounted volumes are writable)."
        )
    return [
        Warning(
            problem,
            hint=f"Read it from the environment in settings: {PREFIX}DRAIN_FILE = "
            f"os.environ.get({PREFIX + 'DRAIN_FILE'!r}), and run `manage.py check --deploy` "
            "with the production environment.",
            obj=f"{PREFIX}DRAIN_FILE",
            id="django_arena_scale.W053",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_deploy_probe_timeout(app_configs: Any = None, **kwargs: Any) -> Messages:
    spec = _deploy_spec()
    declared = _in_range("PROBE_TIMEOUT")
    if spec is None or declared is None or not _explicit("PROBE_TIMEOUT"):
        return []
    if declared == spec.probe_timeout:
        return []
    return [
        Warning(
            f"{PREFIX}PROBE_TIMEOUT is {declared:g} s, but the configs generated from "
            f"{_spec_field('probe_timeout', f'{spec.probe_timeout} s')} give probes that "
            f"long (nginx probe locations, compose healthchecks, Kubernetes timeoutSeconds); the "
            f"readiness deadline check (E030) uses the spec's value.",
            hint=f"Set {PREFIX}PROBE_TIMEOUT = {spec.probe_timeout} or remove it; change the "
            f"probes' timeout with {PREFIX}DEPLOY['probe_timeout'].",
            obj=f"{PREFIX}PROBE_TIMEOUT",
            id="django_arena_scale.W054",
        )
    ]


def _static_url(value: Any) -> str | None:
    """STATIC_URL as the path nginx sees, or None when it is elsewhere (a CDN) or unset."""
    if not isinstance(value, str) or not value or value.startswith(("http://", "https://", "//")):
        return None
    # Django serves a relative STATIC_URL under SCRIPT_NAME, '/' behind the generated nginx.
    return value if value.startswith("/") else "/" + value


@register(TAG, deploy=True)
@_safe
def check_deploy_static_files(app_configs: Any = None, **kwargs: Any) -> Messages:
    from django.apps import apps

    spec = _deploy_spec()
    if spec is None or not apps.is_installed("django.contrib.staticfiles"):
        return []
    messages: Messages = []
    url = _static_url(_setting("STATIC_URL"))
    if url is not None and url != spec.static_url:
        messages.append(
            Warning(
                f"STATIC_URL is {_setting('STATIC_URL')!r}, but the nginx generated from "
                f"{_spec_field('static_url', repr(spec.static_url))} serves the collected "
                f"static files there: pages link to files nginx passes on to Django, which does "
                f"not serve them in production.",
                hint=f"Set {PREFIX}DEPLOY['static_url'] = {url!r} and re-run `manage.py "
                f"generate_lb_config`, or STATIC_URL = {spec.static_url!r}.",
                obj="STATIC_URL",
                id="django_arena_scale.W055",
            )
        )
    root = _setting("STATIC_ROOT")
    # Only the compose target mounts a static volume (the local variant serves its own dir).
    if spec.target == "compose" and str(root or "").rstrip("/") != spec.static_root.rstrip("/"):
        messages.append(
            Warning(
                f"STATIC_ROOT is {'not set' if root is None else repr(str(root))}, but "
                f"docker-compose.yml generated from "
                f"{_spec_field('static_root', repr(spec.static_root))} mounts the static "
                f"volume nginx serves there: collectstatic (deploy.sh) does not fill the "
                f"directory nginx serves.",
                hint=f"Set STATIC_ROOT = {spec.static_root!r}, or {PREFIX}DEPLOY['static_root'] "
                "to your STATIC_ROOT and re-run `manage.py generate_lb_config`.",
                obj="STATIC_ROOT",
                id="django_arena_scale.W055",
            )
        )
    return messages


# --- several replicas: per-process state --------------------------------------------------------


def _backend(entry: Any) -> str:
    backend = entry.get("BACKEND") if isinstance(entry, Mapping) else None
    return backend if isinstance(backend, str) else ""


def _replica_note(replicas: int) -> str:
    return f"while {replicas} replicas are declared ({PREFIX}REPLICAS / {PREFIX}DEPLOY)"


def _session_engine() -> str:
    engine = _setting("SESSION_ENGINE", "django.contrib.sessions.backends.db")
    return engine if isinstance(engine, str) else ""


def _session_alias() -> str:
    alias = _setting("SESSION_CACHE_ALIAS", "default")
    return alias if isinstance(alias, str) else "default"


@register(TAG, deploy=True)
@_safe
def check_per_process_cache(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    messages: Messages = []
    for alias, entry in _mapping("CACHES").items():
        kind = PER_PROCESS_CACHES.get(_backend(entry))
        if kind is None:
            continue
        messages.append(
            Warning(
                f"CACHES[{alias!r}] uses {kind}, which every replica keeps to itself, "
                f"{_replica_note(replicas)}: cached values and counters differ per replica.",
                hint=f"Put the cache on Redis: CACHES = redis_cache(os.environ['REDIS_URL']) "
                f"(from {HELPERS_HINT} import redis_cache).",
                obj=f"CACHES[{alias!r}]",
                id="django_arena_scale.W010",
            )
        )
    return messages


@register(TAG, deploy=True)
@_safe
def check_per_process_sessions(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    engine = _session_engine()
    if engine == FILE_SESSION_ENGINE:
        return [
            Error(
                f"SESSION_ENGINE stores sessions in files on each replica "
                f"{_replica_note(replicas)}: users are logged out when the next request "
                f"reaches another replica.",
                hint="Use Redis sessions: globals().update(redis_sessions("
                f"os.environ['REDIS_SESSIONS_URL'], caches=CACHES)) (from {HELPERS_HINT}), "
                "or SESSION_ENGINE = 'django.contrib.sessions.backends.db'.",
                obj="SESSION_ENGINE",
                id="django_arena_scale.E011",
            )
        ]
    if engine not in CACHE_SESSION_ENGINES:
        return []
    alias = _session_alias()
    kind = PER_PROCESS_CACHES.get(_backend(_mapping("CACHES").get(alias)))
    if kind is None:
        return []
    return [
        Error(
            f"Sessions are cached in CACHES[{alias!r}], a {kind} that every replica keeps to "
            f"itself, {_replica_note(replicas)}: a login or logout is not seen by the "
            f"other replicas.",
            hint="Use Redis sessions: globals().update(redis_sessions("
            f"os.environ['REDIS_SESSIONS_URL'], caches=CACHES)) (from {HELPERS_HINT}), "
            "or SESSION_ENGINE = 'django.contrib.sessions.backends.db'.",
            obj="SESSION_ENGINE",
            id="django_arena_scale.E010",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_per_process_channel_layer(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    if replicas <= 1:
        return []
    return [
        Error(
            f"CHANNEL_LAYERS[{alias!r}] is the in-memory channel layer "
            f"{_replica_note(replicas)}: group messages never reach consumers on other "
            f"replicas.",
            hint="Use Redis: CHANNEL_LAYERS = channel_layers(os.environ['REDIS_CHANNELS_URL']) "
            f"(from {HELPERS_HINT} import channel_layers).",
            obj=f"CHANNEL_LAYERS[{alias!r}]",
            id="django_arena_scale.E012",
        )
        for alias, entry in _mapping("CHANNEL_LAYERS").items()
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
    for alias, entry in _mapping("CACHES").items():
        if alias == exclude:
            continue
        for server, shown in _servers(redis_helpers.cache_redis_urls(entry)).items():
            found.setdefault(server, (alias, shown))
    return found


SHARED_HINT = (
    "Give {role} a Redis server of its own with maxmemory-policy noeviction (a different db "
    "number is not enough: eviction is per server), e.g. {example}."
)


@register(TAG, deploy=True)
@_safe
def check_sessions_share_cache_redis(app_configs: Any = None, **kwargs: Any) -> Messages:
    # cached_db keeps the database as the source of truth: an evicted copy costs one query.
    if _session_engine() != "django.contrib.sessions.backends.cache":
        return []
    alias = _session_alias()
    session_servers = _servers(redis_helpers.cache_redis_urls(_mapping("CACHES").get(alias, {})))
    if not session_servers:
        return []
    hint = SHARED_HINT.format(
        role="sessions",
        example="globals().update(redis_sessions(os.environ['REDIS_SESSIONS_URL'], caches=CACHES))",
    )
    if alias == "default":
        return [
            Warning(
                "Sessions are stored in the general 'default' cache (SESSION_CACHE_ALIAS): "
                "evicting cache entries logs users out.",
                hint=hint,
                obj="SESSION_CACHE_ALIAS",
                id="django_arena_scale.W020",
            )
        ]
    caches = _cache_servers(exclude=alias)
    return [
        Warning(
            f"Sessions (CACHES[{alias!r}], {shown}) are on the same Redis server as "
            f"CACHES[{caches[server][0]!r}]: evicting cache entries logs users out.",
            hint=hint,
            obj="SESSION_CACHE_ALIAS",
            id="django_arena_scale.W020",
        )
        for server, shown in session_servers.items()
        if server in caches
    ]


@register(TAG, deploy=True)
@_safe
def check_channels_share_cache_redis(app_configs: Any = None, **kwargs: Any) -> Messages:
    exclude = (
        _session_alias() if _session_engine() == "django.contrib.sessions.backends.cache" else None
    )
    caches = _cache_servers(exclude=exclude)
    messages: Messages = []
    for layer_alias, entry in _mapping("CHANNEL_LAYERS").items():
        for server, shown in _servers(redis_helpers.channel_layer_redis_urls(entry)).items():
            if server not in caches:
                continue
            messages.append(
                Warning(
                    f"CHANNEL_LAYERS[{layer_alias!r}] ({shown}) is on the same Redis server as "
                    f"CACHES[{caches[server][0]!r}]: evicting cache entries drops channel "
                    f"messages and group memberships.",
                    hint=SHARED_HINT.format(
                        role="the channel layer",
                        example="CHANNEL_LAYERS = channel_layers(os.environ['REDIS_CHANNELS_URL'])",
                    ),
                    obj=f"CHANNEL_LAYERS[{layer_alias!r}]",
                    id="django_arena_scale.W021",
                )
            )
    return messages


# --- databases ----------------------------------------------------------------------------------


@register(TAG, deploy=True)
@_safe
def check_persistent_connections(app_configs: Any = None, **kwargs: Any) -> Messages:
    return persistent_connection_messages(_mapping("DATABASES"))


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
        if not persistent or entry.get("CONN_HEALTH_CHECKS", False):
            continue
        messages.append(
            Warning(
                f"DATABASES[{alias!r}] keeps connections open (CONN_MAX_AGE={max_age!r}) "
                f"without CONN_HEALTH_CHECKS: after a database restart or failover each "
                f"worker's first query fails on its dead connection.",
                hint=f"Add 'CONN_HEALTH_CHECKS': True to DATABASES[{alias!r}].",
                obj=f"DATABASES[{alias!r}]",
                id="django_arena_scale.W040",
            )
        )
    return messages


# --- several replicas: who is let in ------------------------------------------------------------

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
GENERATE_SECRET_HINT = (
    "Set SECRET_KEY from the environment (SECRET_KEY = os.environ['SECRET_KEY']) to a long "
    "random value, the same on every replica: "
    'python -c "import secrets; print(secrets.token_urlsafe(50))".'
)


@register(TAG, deploy=True)
@_safe
def check_allowed_hosts_wildcard(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    hosts = _setting("ALLOWED_HOSTS", [])
    if replicas <= 1 or not isinstance(hosts, (list, tuple)) or "*" not in hosts:
        return []
    return [
        Warning(
            f"ALLOWED_HOSTS contains '*' {_replica_note(replicas)}: Django accepts any Host "
            f"header (password-reset links, absolute URLs and redirects built from it point "
            f"wherever a client says) and Channels' AllowedHostsOriginValidator accepts "
            f"WebSocket handshakes from any Origin (cross-site WebSocket hijacking of logged-in "
            f"users).",
            hint="List the public host names the load balancer serves, e.g. ALLOWED_HOSTS = "
            "os.environ['ALLOWED_HOSTS'].split(',') with ALLOWED_HOSTS=arena.example.com; the "
            "probes need no entry (ProbeMiddleware answers them before host validation).",
            obj="ALLOWED_HOSTS",
            id="django_arena_scale.W060",
        )
    ]


def _placeholder_part(key: str) -> str | None:
    lowered = key.lower()
    if lowered.startswith("django-insecure"):
        return None  # Django's security.W009 reports that prefix
    return next((part for part in PLACEHOLDER_SECRET_PARTS if part in lowered), None)


@register(TAG, deploy=True)
@_safe
def check_secret_key_placeholder(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = declared_replicas()
    key = _setting("SECRET_KEY")
    if replicas <= 1 or not isinstance(key, str):
        return []
    part = _placeholder_part(key)
    if part is None:
        return []
    # Never the key itself: only the published fragment it contains.
    return [
        Warning(
            f"SECRET_KEY contains {part!r}: it looks like a published placeholder or "
            f"development value, {_replica_note(replicas)}. Anyone who knows it can forge "
            f"session data, password-reset tokens and signed cookies that every replica "
            f"accepts (Django's security.W009 only checks its length and the "
            f"'django-insecure-' prefix).",
            hint=GENERATE_SECRET_HINT,
            obj="SECRET_KEY",
            id="django_arena_scale.W061",
        )
    ]


@register(TAG, deploy=True)
@_safe
def check_secret_key_from_environment(app_configs: Any = None, **kwargs: Any) -> Messages:
    import os

    replicas = declared_replicas()
    from_env = os.environ.get("SECRET_KEY")
    key = _setting("SECRET_KEY")
    if replicas <= 1 or not from_env or not isinstance(key, str) or key == from_env:
        return []
    return [
        Warning(
            f"The SECRET_KEY environment variable is set (the generated compose env file and "
            f"Kubernetes Secret pass it to every replica), but settings.SECRET_KEY is another "
            f"value, {_replica_note(replicas)}: a key the settings make up (a fallback, or one "
            f"generated per process) differs between replicas, so a session or CSRF token "
            f"signed by one replica is refused by the next.",
            hint=GENERATE_SECRET_HINT,
            obj="SECRET_KEY",
            id="django_arena_scale.W062",
        )
    ]
