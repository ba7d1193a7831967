"""django-arena-scale: run a Django LLM arena backend as N replicas behind nginx or Kubernetes.

Importing this package never touches ``django.conf.settings``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("django-arena-scale")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["ArenaScaleError", "__version__"]


class ArenaScaleError(Exception):
    """Base class of every error this package raises on purpose."""
