"""django-arena-scale: run a Django LLM arena backend as N replicas behind nginx or Kubernetes.

Importing this package never touches ``django.conf.settings``.  Each subpackage's ``__init__``
exports its public names; modules named with a leading underscore are private.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("django-arena-scale")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["SETTINGS", "ArenaScaleError", "__version__"]

if TYPE_CHECKING:
    from django_arena_scale._conf import SETTINGS


def __getattr__(name: str) -> Any:
    # ``SETTINGS``: every ``ARENA_SCALE_*`` declaration by name (default, types, doc), for a
    # settings file that reads them from the environment.  Loaded on first use.
    if name == "SETTINGS":
        from django_arena_scale._conf import SETTINGS

        return SETTINGS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ArenaScaleError(Exception):
    """Base class of every error this package raises on purpose."""
