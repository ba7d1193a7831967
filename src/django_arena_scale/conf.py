"""Typed, lazy view of the ``ARENA_SCALE_*`` settings.

Every setting is declared once in :data:`SETTINGS` (name, default, accepted types, one line of
documentation).  Values are read from ``django.conf.settings`` on each access, so
``override_settings`` works in tests.  The system checks (``checks.py``) use the same registry
to reject unknown names and wrong types, so a new setting is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "ARENA_SCALE_"


@dataclass(frozen=True)
class Setting:
    """One ``ARENA_SCALE_*`` setting: its default, the types it accepts and what it does."""

    name: str
    default: Any
    types: tuple[type, ...]
    doc: str
    nullable: bool = False

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

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


_NUM = (int, float)
_SEQ = (list, tuple)

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        # --- probes -------------------------------------------------------------------------
        Setting("PROBE_PREFIX", "/", (str,), "URL prefix of the probe paths, e.g. '/' or '/-/'."),
        Setting(
            "PROBE_TIMEOUT",
            1.0,
            _NUM,
            "Timeout (s) the load balancer or kubelet gives a probe; the readiness deadline must "
            "stay below it.",
        ),
        Setting("READY_DEADLINE", 0.8, _NUM, "Overall deadline (s) for one readiness evaluation."),
        Setting("CHECK_TIMEOUT", 0.5, _NUM, "Default per-check timeout (s)."),
        Setting("CHECK_CACHE_TTL", 1.0, _NUM, "Seconds a readiness result is reused per process."),
        Setting("CHECKS", [], _SEQ, "Dotted paths of extra checks (Check instances or callables)."),
        Setting(
            "DATABASE_CHECKS",
            True,
            (bool, list, tuple),
            "True: check every database alias; a list: only these aliases; False: none.",
        ),
        Setting("REDIS_CHECKS", True, (bool,), "Check each distinct Redis URL in use."),
        Setting(
            "CHANNEL_LAYER_CHECK", False, (bool,), "Add a channel-layer round-trip check (opt-in)."
        ),
        Setting(
            "READY_INCLUDE_SHARED",
            False,
            (bool, list, tuple),
            "Whether checks of dependencies every replica shares (database, Redis, channel "
            "layer: scope 'shared') also fail /ready/. False: reported in /status/ and logged "
            "only; True: all of them; a list: only these check names or tags, e.g. "
            "['database:default', 'redis'].",
        ),
        Setting(
            "STATUS_TOKEN",
            None,
            (str,),
            "Bearer token that unlocks the detailed /status/ body.",
            nullable=True,
        ),
        Setting(
            "STATUS_ALLOWED_CIDRS",
            [],
            _SEQ,
            "Source networks that see the detailed /status/ body.",
        ),
        Setting(
            "TRUSTED_PROXIES",
            [],
            _SEQ,
            "Networks whose X-Forwarded-For / X-Real-IP headers are believed "
            "(private networks only: E008).",
        ),
        Setting(
            "HEARTBEAT_TIMEOUT",
            30.0,
            _NUM,
            "A worker heartbeat older than this (s) makes /live/ answer 503.",
        ),
        # --- lifecycle ----------------------------------------------------------------------
        Setting(
            "DRAIN_FILE",
            None,
            (str,),
            "Path whose existence puts the replica in DRAINING (k8s preStop writes it).",
            nullable=True,
        ),
        Setting("WARMUPS", [], _SEQ, "Dotted paths of callables run before the replica is READY."),
        Setting("SHUTDOWN_HOOK_TIMEOUT", 5.0, _NUM, "Time limit (s) for each shutdown hook."),
        Setting(
            "INSTALL_SIGNAL_HANDLERS",
            False,
            (bool,),
            "Install SIGTERM/SIGINT handlers that drain (only on request, never by default).",
        ),
        Setting(
            "SSE_RECONNECT_MS", 1000, (int,), "retry: value sent to SSE clients when draining."
        ),
        # --- deployment ---------------------------------------------------------------------
        Setting(
            "REPLICAS",
            1,
            (int,),
            "How many replicas this project runs; >1 enables the shared-state checks.",
        ),
        Setting(
            "DEPLOY",
            {},
            (dict,),
            "DeploymentSpec fields for generate_lb_config (CLI options override them).",
        ),
        # --- resilience ---------------------------------------------------------------------
        Setting(
            "LLM_PROVIDERS",
            {},
            (dict,),
            "Per-provider breaker and retry options, keyed by provider name.",
        ),
        Setting(
            "BREAKER_REDIS_URL",
            None,
            (str,),
            "Redis URL that coordinates circuit breakers across replicas.",
            nullable=True,
        ),
    ]
}


class ArenaScaleSettings:
    """Attribute access to ``ARENA_SCALE_*`` settings with defaults, read on every access."""

    def _get(self, name: str) -> Any:
        from django.conf import settings

        setting = SETTINGS[name]
        return getattr(settings, setting.full_name, setting.default)

    def raw(self, name: str) -> Any:
        """The value as written in the settings (or the default), unconverted: for checks.py."""
        return self._get(name)

    def names_in_settings(self) -> list[str]:
        """Every ``ARENA_SCALE_*`` name the settings define, known or not (for checks.py)."""
        from django.conf import settings

        return sorted(name for name in dir(settings) if name.startswith(PREFIX))

    @property
    def PROBE_PREFIX(self) -> str:
        value: str = self._get("PROBE_PREFIX")
        if not value.startswith("/"):
            value = "/" + value
        if not value.endswith("/"):
            value += "/"
        return value

    @property
    def PROBE_TIMEOUT(self) -> float:
        return float(self._get("PROBE_TIMEOUT"))

    @property
    def READY_DEADLINE(self) -> float:
        return float(self._get("READY_DEADLINE"))

    @property
    def CHECK_TIMEOUT(self) -> float:
        return float(self._get("CHECK_TIMEOUT"))

    @property
    def CHECK_CACHE_TTL(self) -> float:
        return float(self._get("CHECK_CACHE_TTL"))

    @property
    def CHECKS(self) -> Sequence[Any]:
        return list(self._get("CHECKS"))

    @property
    def DATABASE_CHECKS(self) -> bool | Sequence[str]:
        value = self._get("DATABASE_CHECKS")
        return value if isinstance(value, bool) else list(value)

    @property
    def REDIS_CHECKS(self) -> bool:
        return bool(self._get("REDIS_CHECKS"))

    @property
    def CHANNEL_LAYER_CHECK(self) -> bool:
        return bool(self._get("CHANNEL_LAYER_CHECK"))

    @property
    def READY_INCLUDE_SHARED(self) -> bool | tuple[str, ...]:
        value = self._get("READY_INCLUDE_SHARED")
        if isinstance(value, bool):
            return value
        return tuple(str(item) for item in value)

    @property
    def STATUS_TOKEN(self) -> str | None:
        value: str | None = self._get("STATUS_TOKEN")
        return value or None

    @property
    def STATUS_ALLOWED_CIDRS(self) -> Sequence[str]:
        return list(self._get("STATUS_ALLOWED_CIDRS"))

    @property
    def TRUSTED_PROXIES(self) -> Sequence[str]:
        return list(self._get("TRUSTED_PROXIES"))

    @property
    def HEARTBEAT_TIMEOUT(self) -> float:
        return float(self._get("HEARTBEAT_TIMEOUT"))

    @property
    def DRAIN_FILE(self) -> str | None:
        value: str | None = self._get("DRAIN_FILE")
        return value or None

    @property
    def WARMUPS(self) -> Sequence[Any]:
        return list(self._get("WARMUPS"))

    @property
    def SHUTDOWN_HOOK_TIMEOUT(self) -> float:
        return float(self._get("SHUTDOWN_HOOK_TIMEOUT"))

    @property
    def INSTALL_SIGNAL_HANDLERS(self) -> bool:
        return bool(self._get("INSTALL_SIGNAL_HANDLERS"))

    @property
    def SSE_RECONNECT_MS(self) -> int:
        return int(self._get("SSE_RECONNECT_MS"))

    @property
    def REPLICAS(self) -> int:
        return int(self._get("REPLICAS"))

    @property
    def DEPLOY(self) -> Mapping[str, Any]:
        return dict(self._get("DEPLOY"))

    @property
    def LLM_PROVIDERS(self) -> Mapping[str, Any]:
        return dict(self._get("LLM_PROVIDERS"))

    @property
    def BREAKER_REDIS_URL(self) -> str | None:
        value: str | None = self._get("BREAKER_REDIS_URL")
        return value or None


conf = ArenaScaleSettings()
