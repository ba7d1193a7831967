"""Typed, lazy view of the ``ARENA_SCALE_*`` settings.

Each setting is declared once, as a :class:`Setting` attribute of :class:`ArenaScaleSettings`:
its default, the types it accepts, the lowest value it may take, one line of documentation and
the function that turns the raw value into the typed one.  Everything else reads that
declaration: ``conf.<NAME>`` (the descriptor converts the value, read from
``django.conf.settings`` on each access, so ``override_settings`` works), :data:`SETTINGS`
(the same declarations by name), the probe-path cache (``health/_fastconf.py``), the system
checks (unknown names, wrong types, out-of-range values) and the README settings table
(``scripts/readme_settings.py``).  A new setting is one more attribute here and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Generic, TypeVar, overload

PREFIX = "ARENA_SCALE_"

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Setting(Generic[T]):
    """One ``ARENA_SCALE_*`` setting: default, accepted types, range, doc and typed value.

    Declared as a class attribute of :class:`ArenaScaleSettings`, which names it.  Read on an
    instance, it is the typed value (``convert`` applied to the raw value); read on the class,
    it is this declaration.  ``minimum`` (inclusive) and ``exclusive_minimum`` bound the numeric
    settings; ``manage.py check`` reports a value outside them (E031), the accessors do not.
    """

    default: Any
    types: tuple[type, ...]
    doc: str
    _: KW_ONLY
    convert: Callable[[Any], T]
    nullable: bool = False
    minimum: float | None = None
    exclusive_minimum: float | None = None
    name: str = field(default="", init=False)

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Setting[T] | T:
        if obj is None:
            return self
        return self.value()

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    def raw(self) -> Any:
        """The value as written in the settings (or the default), unconverted."""
        from django.conf import settings

        return getattr(settings, self.full_name, self.default)

    def value(self) -> T:
        """The typed value; raises when the raw value cannot be converted."""
        return self.convert(self.raw())

    def default_value(self) -> T:
        """The typed default."""
        return self.convert(self.default)

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        # bool is an int subclass: a float or int setting must not silently take True.
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def expected(self) -> str:
        names = [t.__name__ for t in self.types]
        if self.nullable:
            names.append("None")
        return " or ".join(names)

    @property
    def bounds(self) -> tuple[float, bool] | None:
        """(lowest allowed value, whether that value itself is allowed), or None if unbounded."""
        if self.exclusive_minimum is not None:
            return self.exclusive_minimum, False
        if self.minimum is not None:
            return self.minimum, True
        return None

    def in_range(self, number: float) -> bool:
        """Whether ``number`` is finite and within the declared bounds."""
        if math.isnan(number) or math.isinf(number):
            return False
        bounds = self.bounds
        if bounds is None:
            return True
        low, inclusive = bounds
        return number > low or (inclusive and number == low)

    def range_text(self) -> str:
        """The bounds as ``'> 0'`` / ``'>= 1'``, or ``''`` when there are none."""
        bounds = self.bounds
        if bounds is None:
            return ""
        low, inclusive = bounds
        return f"{'>=' if inclusive else '>'} {low:g}"


# --- converters: raw setting value -> typed value ----------------------------------------------


def _probe_prefix(value: Any) -> str:
    prefix: str = value
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    if not prefix.endswith("/"):
        prefix += "/"
    return prefix


def _header_name(value: Any) -> str:
    name = str(value).strip()
    if not name or not all(c.isascii() and (c.isalnum() or c == "-") for c in name):
        msg = f"A header name such as 'X-Request-ID' is expected, got {value!r}."
        raise ValueError(msg)
    return name


def _optional_str(value: Any) -> str | None:
    return value or None


def _list(value: Any) -> list[Any]:
    return list(value)


def _str_list(value: Any) -> list[str]:
    return list(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value)


def _all_or_names(value: Any) -> bool | list[str]:
    return value if isinstance(value, bool) else list(value)


def _all_or_name_tuple(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    return tuple(str(item) for item in value)


_NUM = (int, float)
_SEQ = (list, tuple)


class ArenaScaleSettings:
    """Attribute access to ``ARENA_SCALE_*`` settings with defaults, read on every access."""

    # --- probes -------------------------------------------------------------------------------
    PROBE_PREFIX = Setting(
        "/", (str,), "URL prefix of the probe paths, e.g. '/' or '/-/'.", convert=_probe_prefix
    )
    PROBE_TIMEOUT = Setting(
        1.0,
        _NUM,
        "Timeout (s) the load balancer or kubelet gives a probe; the readiness deadline must "
        "stay below it.",
        convert=float,
        exclusive_minimum=0,
    )
    READY_DEADLINE = Setting(
        0.8,
        _NUM,
        "Overall deadline (s) for one readiness evaluation.",
        convert=float,
        exclusive_minimum=0,
    )
    CHECK_TIMEOUT = Setting(
        0.5, _NUM, "Default per-check timeout (s).", convert=float, exclusive_minimum=0
    )
    CHECK_CACHE_TTL = Setting(
        1.0, _NUM, "Seconds a readiness result is reused per process.", convert=float, minimum=0
    )
    CHECKS = Setting(
        [], _SEQ, "Dotted paths of extra checks (Check instances or callables).", convert=_list
    )
    DATABASE_CHECKS = Setting(
        True,
        (bool, list, tuple),
        "True: check every database alias; a list: only these aliases; False: none.",
        convert=_all_or_names,
    )
    REDIS_CHECKS = Setting(True, (bool,), "Check each distinct Redis URL in use.", convert=bool)
    CHANNEL_LAYER_CHECK = Setting(
        False, (bool,), "Add a channel-layer round-trip check (opt-in).", convert=bool
    )
    READY_INCLUDE_SHARED = Setting(
        False,
        (bool, list, tuple),
        "Whether checks of dependencies every replica shares (database, Redis, channel "
        "layer: scope 'shared') also fail /ready/. False: reported in /status/ and logged "
        "only; True: all of them; a list: only these check names or tags, e.g. "
        "['database:default', 'redis'].",
        convert=_all_or_name_tuple,
    )
    STATUS_TOKEN = Setting(
        None,
        (str,),
        "Bearer token that unlocks the detailed /status/ body.",
        convert=_optional_str,
        nullable=True,
    )
    STATUS_ALLOWED_CIDRS = Setting(
        [], _SEQ, "Source networks that see the detailed /status/ body.", convert=_str_list
    )
    TRUSTED_PROXIES = Setting(
        [],
        _SEQ,
        "Networks whose X-Forwarded-For / X-Real-IP headers are believed "
        "(private networks only: E008).",
        convert=_str_list,
    )
    HEARTBEAT_TIMEOUT = Setting(
        30.0,
        _NUM,
        "A worker heartbeat older than this (s) makes /live/ answer 503.",
        convert=float,
        exclusive_minimum=0,
    )
    # --- lifecycle ----------------------------------------------------------------------------
    DRAIN_FILE = Setting(
        None,
        (str,),
        "Path whose existence puts the replica in DRAINING (k8s preStop writes it).",
        convert=_optional_str,
        nullable=True,
    )
    WARMUPS = Setting(
        [], _SEQ, "Dotted paths of callables run before the replica is READY.", convert=_list
    )
    SHUTDOWN_HOOK_TIMEOUT = Setting(
        5.0,
        _NUM,
        "Time limit (s) for each shutdown hook.",
        convert=float,
        exclusive_minimum=0,
    )
    INSTALL_SIGNAL_HANDLERS = Setting(
        False,
        (bool,),
        "Install SIGTERM/SIGINT handlers that drain (only on request, never by default).",
        convert=bool,
    )
    SSE_RECONNECT_MS = Setting(
        1000, (int,), "retry: value sent to SSE clients when draining.", convert=int, minimum=0
    )
    # --- deployment ---------------------------------------------------------------------------
    REPLICAS = Setting(
        1,
        (int,),
        "How many replicas this project runs; >1 enables the shared-state checks.",
        convert=int,
        minimum=1,
    )
    DEPLOY = Setting(
        {},
        (dict,),
        "DeploymentSpec fields for generate_lb_config (CLI options override them).",
        convert=_dict,
    )
    # --- databases ----------------------------------------------------------------------------
    READ_REPLICAS = Setting(
        [],
        _SEQ,
        "Database aliases ReplicaRouter sends reads to (database_settings() sets it); writes, "
        "transactions and recent writers use 'default', the primary.",
        convert=_str_list,
    )
    READ_YOUR_WRITES = Setting(
        5.0,
        _NUM,
        "Seconds a client's reads go to the primary after it wrote (recorded in the cache, "
        "keyed by user or session, so every app replica sees it); 0 turns it off.",
        convert=float,
        minimum=0,
    )
    READ_YOUR_WRITES_CACHE = Setting(
        "default",
        (str,),
        "Cache alias that records recent writers for READ_YOUR_WRITES (a shared Redis when "
        "several app replicas run).",
        convert=str,
    )
    REPLICA_MAX_LAG = Setting(
        5.0,
        _NUM,
        "A read replica further behind its primary than this (s) is skipped: its reads go to "
        "the primary.",
        convert=float,
        exclusive_minimum=0,
    )
    REPLICA_CHECK_INTERVAL = Setting(
        1.0,
        _NUM,
        "Seconds a read replica's health (reachable, lag) is reused per process.",
        convert=float,
        exclusive_minimum=0,
    )
    REPLICA_CHECK_TIMEOUT = Setting(
        0.5,
        _NUM,
        "Time limit (s) of one replica health check; a replica that does not answer in time "
        "is skipped until the next check.",
        convert=float,
        exclusive_minimum=0,
    )
    PGBOUNCER = Setting(
        False,
        (bool, list, tuple),
        "PgBouncer in transaction mode is in front of the database: True for every alias, a "
        "list for these aliases; turns on the PgBouncer checks (E040-E042, W041).",
        convert=_all_or_names,
    )
    # --- resilience ---------------------------------------------------------------------------
    LLM_PROVIDERS = Setting(
        {},
        (dict,),
        "Per-provider breaker and retry options, keyed by provider name.",
        convert=_dict,
    )
    BREAKER_REDIS_URL = Setting(
        None,
        (str,),
        "Redis URL that coordinates circuit breakers across replicas.",
        convert=_optional_str,
        nullable=True,
    )
    # --- observability ------------------------------------------------------------------------
    METRICS = Setting(
        True,
        (bool,),
        "Serve Prometheus metrics at <ARENA_SCALE_PROBE_PREFIX>metrics (same access rule as "
        "the /status/ details) and let MetricsMiddleware record requests.",
        convert=bool,
    )
    REQUEST_ID_HEADER = Setting(
        "X-Request-ID",
        (str,),
        "Header RequestIDMiddleware reads the request id from (kept when at most 128 "
        "characters of [A-Za-z0-9._:-], else 32 new random hex characters) and returns it in.",
        convert=_header_name,
    )

    def raw(self, name: str) -> Any:
        """The value as written in the settings (or the default), unconverted: for the checks."""
        return SETTINGS[name].raw()

    def names_in_settings(self) -> list[str]:
        """Every ``ARENA_SCALE_*`` name the settings define, known or not (for the checks)."""
        from django.conf import settings

        return sorted(name for name in dir(settings) if name.startswith(PREFIX))


#: Every declaration by name (``'PROBE_TIMEOUT'``), in declaration order.
SETTINGS: dict[str, Setting[Any]] = {
    name: value for name, value in vars(ArenaScaleSettings).items() if isinstance(value, Setting)
}

conf = ArenaScaleSettings()
