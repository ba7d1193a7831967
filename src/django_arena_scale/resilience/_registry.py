"""Process-wide breaker registry, provider options source and Redis coordinator.

The core never imports Django.  When Django is already imported, the first use of the
registry asks the thin adapter (:mod:`django_arena_scale.resilience._django`) to install a
provider-options source (``ARENA_SCALE_LLM_PROVIDERS``) and the coordinator
(``ARENA_SCALE_BREAKER_REDIS_URL``); without Django, call :func:`configure` yourself.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django_arena_scale.resilience._breaker import CircuitBreaker
from django_arena_scale.resilience._coordination import RedisCoordinator
from django_arena_scale.resilience._policy import BreakerOptions

__all__ = ["Registry", "configure", "get_breaker", "registry", "reset"]

OptionsSource = Callable[[str], "Mapping[str, Any] | None"]


class Registry:
    """Breakers by name (``provider`` or ``provider:key``), sharing one optional coordinator."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self.coordinator: RedisCoordinator | None = None
        self.options_source: OptionsSource | None = None
        self._adapter_checked = False
        self.clock: Callable[[], float] = time.monotonic
        # Bumped on reset()/configure() so guards drop the breakers they cached.
        self.generation = 0

    def __repr__(self) -> str:
        return f"<Registry breakers={sorted(self._breakers)} coordinator={self.coordinator!r}>"

    def _ensure_adapter(self) -> None:
        if self._adapter_checked:
            return
        self._adapter_checked = True
        if "django" in sys.modules:
            adapter = importlib.import_module("django_arena_scale.resilience._django")
            adapter.install(self)

    def provider_options(self, name: str) -> Mapping[str, Any]:
        """Options configured for ``name`` (``provider:key`` falls back to ``provider``)."""
        self._ensure_adapter()
        source = self.options_source
        if source is None:
            return {}
        options = source(name)
        if options is None and ":" in name:
            options = source(name.partition(":")[0])
        return dict(options or {})

    def breaker(self, name: str, options: BreakerOptions | None = None) -> CircuitBreaker:
        """The breaker called ``name``, created with ``options`` on first use (first wins)."""
        found = self._breakers.get(name)
        if found is not None:
            return found
        self._ensure_adapter()
        with self._lock:
            found = self._breakers.get(name)
            if found is None:
                found = CircuitBreaker(name, options, clock=self.clock)
                if self.coordinator is not None:
                    self.coordinator.register(found)
                self._breakers[name] = found
        return found

    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self._breakers)

    def configure(
        self,
        *,
        redis_url: str | None = None,
        client: Any = None,
        refresh_interval: float = 1.0,
        timeout: float = 0.1,
        prefix: str = "arena-scale:breaker",
    ) -> RedisCoordinator | None:
        """Coordinate every breaker through Redis (or stop coordinating when both are None)."""
        self._adapter_checked = True
        with self._lock:
            if self.coordinator is not None:
                self.coordinator.close()
                self.coordinator = None
            if redis_url is None and client is None:
                return None
            coordinator = RedisCoordinator(
                redis_url,
                client=client,
                prefix=prefix,
                refresh_interval=refresh_interval,
                timeout=timeout,
                clock=self.clock,
            )
            for breaker in self._breakers.values():
                coordinator.register(breaker)
            self.coordinator = coordinator
            self.generation += 1
            return coordinator

    def reset(self) -> None:
        """Forget every breaker and the coordinator; settings are read again on next use."""
        with self._lock:
            if self.coordinator is not None:
                self.coordinator.close()
            self.coordinator = None
            self._breakers.clear()
            self.options_source = None
            self._adapter_checked = False
            self.generation += 1


registry = Registry()
get_breaker = registry.breaker
configure = registry.configure
reset = registry.reset
