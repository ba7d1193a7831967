"""Thin Django adapter: provider options and the coordination Redis URL from ``conf``.

Installed by the registry on first use when Django is imported (the core imports no Django);
also forwards every breaker event to the :data:`breaker_event` signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from django_arena_scale.resilience._errors import GuardConfigError
from django_arena_scale.resilience._events import BreakerEvent, add_listener, remove_listener
from django_arena_scale.resilience._policy import split_options

if TYPE_CHECKING:
    from django_arena_scale.resilience._registry import Registry

__all__ = ["breaker_event", "install", "provider_options"]

breaker_event = Signal()
"""Sent with ``event=BreakerEvent`` (sender: the breaker name) for every breaker event."""


def _settings_ready() -> bool:
    from django.conf import settings

    return bool(settings.configured)


def provider_options(name: str) -> Mapping[str, Any] | None:
    """``ARENA_SCALE_LLM_PROVIDERS[name]``, validated (unknown keys raise GuardConfigError)."""
    if not _settings_ready():
        return None
    from django_arena_scale._conf import conf

    providers = conf.LLM_PROVIDERS
    options = providers.get(name)
    if options is None:
        return None
    if not isinstance(options, Mapping):
        msg = f"ARENA_SCALE_LLM_PROVIDERS[{name!r}] should be a dict of options, got {options!r}."
        raise GuardConfigError(msg)
    split_options(options, owner=f"ARENA_SCALE_LLM_PROVIDERS[{name!r}]")
    return options


def _send(event: BreakerEvent) -> None:
    breaker_event.send(sender=event.breaker, event=event)


def install(registry: Registry) -> None:
    """Point ``registry`` at the Django settings and forward events to the signal."""
    registry.options_source = provider_options
    remove_listener(_send)
    add_listener(_send)
    if not _settings_ready():
        return
    from django_arena_scale._conf import conf

    url = conf.BREAKER_REDIS_URL
    if url:
        registry.configure(redis_url=url)
        registry.options_source = provider_options
