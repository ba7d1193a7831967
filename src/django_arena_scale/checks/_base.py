"""What every check module shares: the tag, the no-crash wrapper and settings readers.

The readers never raise on a malformed value: they return an empty or ``None`` result, and the
check that owns the value (E002 for ``ARENA_SCALE_*`` types, Django's own checks for the rest)
reports it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning

from django_arena_scale import redis as redis_helpers
from django_arena_scale._conf import PREFIX, SETTINGS, conf

TAG = "django_arena_scale"
HELPERS_HINT = "django_arena_scale.redis"
CACHE_SESSION_ENGINES = redis_helpers.CACHE_SESSION_ENGINES
CACHE_ONLY_SESSION_ENGINES = redis_helpers.CACHE_ONLY_SESSION_ENGINES

Messages = list[CheckMessage]
CheckFunc = Callable[..., Messages]


def W099(check: str, error: BaseException) -> Warning:
    # Only the type: the text of an arbitrary error may quote a secret setting.
    return Warning(
        f"django-arena-scale could not run its {check} check ({type(error).__name__}).",
        hint="Fix the setting the other messages name; if there is none, report this as a bug.",
        id="django_arena_scale.W099",
    )


def safe(func: CheckFunc) -> CheckFunc:
    """Turn an unexpected exception into W099: a check must never crash ``manage.py``."""

    @functools.wraps(func)
    def wrapper(app_configs: Any = None, **kwargs: Any) -> Messages:
        try:
            return func(app_configs, **kwargs)
        except Exception as exc:
            return [W099(func.__name__, exc)]

    return wrapper


# --- reading settings ---------------------------------------------------------------------------


def setting(name: str, default: Any = None) -> Any:
    return getattr(settings, name, default)


def mapping(name: str) -> Mapping[str, Any]:
    value = setting(name, {})
    return value if isinstance(value, Mapping) else {}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(name: str) -> float | None:
    """A numeric ARENA_SCALE_* value, or None when its type is wrong (E002 reports that)."""
    value = conf.raw(name)
    if not SETTINGS[name].accepts(value) or value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float: out of range, not a crash
        return math.inf


def in_range(name: str) -> float | None:
    """The value when its type is right and it is within its declared range, else None."""
    value = number(name)
    if value is None or not SETTINGS[name].in_range(value):
        return None
    return value


def explicit(name: str) -> bool:
    """Whether the settings define ``ARENA_SCALE_<name>`` (rather than relying on the default)."""
    return f"{PREFIX}{name}" in conf.names_in_settings()


def shown(name: str, value: Any) -> str:
    """``value`` as a message may show it: URL passwords redacted, the token hidden, short."""
    if name == "STATUS_TOKEN":
        return "value hidden"
    try:
        text = repr(redis_helpers.redact_url(value) if isinstance(value, str) else value)
    except Exception:  # e.g. an int beyond sys.get_int_max_str_digits(), or a broken __repr__
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= 60 else text[:57] + "..."


def session_engine() -> str:
    engine = setting("SESSION_ENGINE", "django.contrib.sessions.backends.db")
    return engine if isinstance(engine, str) else ""


def session_alias() -> str:
    alias = setting("SESSION_CACHE_ALIAS", "default")
    return alias if isinstance(alias, str) else "default"


# --- how many replicas ----------------------------------------------------------------------------


def _spec_default_replicas() -> int:
    """``DeploymentSpec``'s default replica count (what generate_lb_config renders)."""
    try:
        import dataclasses

        from django_arena_scale.deploy._spec import DeploymentSpec

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
    if is_int(replicas):
        counts.append(replicas)
    deploy = conf.raw("DEPLOY")
    if isinstance(deploy, Mapping) and deploy:
        if "replicas" not in deploy:
            counts.append(_spec_default_replicas())
        elif is_int(deploy["replicas"]):
            counts.append(deploy["replicas"])
    return max(counts)


def replica_note(replicas: int) -> str:
    return f"while {replicas} replicas are declared ({PREFIX}REPLICAS / {PREFIX}DEPLOY)"
