"""Probe-path settings: ``conf`` values memoised until Django says a setting changed.

A probe reads a few ``ARENA_SCALE_*`` values on every request; reading them through
``django.conf.settings`` costs an ``AttributeError`` per unset setting.  Values are cached here
and the cache is dropped on ``setting_changed`` (sent by ``override_settings``), so tests that
override settings still see their values.  A value its declaration (``conf.Setting``) cannot
convert falls back to the declared default (``manage.py check`` reports it): a probe must not
fail because of it, since a failing ``/live/`` makes the orchestrator restart the process in a
loop.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.signals import setting_changed

from django_arena_scale._conf import PREFIX, SETTINGS

logger = logging.getLogger("django_arena_scale.health")

_cache: dict[str, Any] = {}


def get(name: str) -> Any:
    """The typed value of ``ARENA_SCALE_<name>`` (the default if it is invalid)."""
    try:
        return _cache[name]
    except KeyError:
        pass
    setting = SETTINGS[name]
    try:
        value = setting.value()
    except Exception:
        logger.warning("%s is invalid; using its default.", setting.full_name, exc_info=True)
        value = setting.default_value()
    _cache[name] = value
    return value


def clear() -> None:
    _cache.clear()


def _on_setting_changed(*, setting: str = "", **kwargs: Any) -> None:
    if setting.startswith(PREFIX):
        _cache.clear()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_arena_scale.health._fastconf")
