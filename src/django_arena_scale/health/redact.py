"""Redaction for ``/status/``: re-exports the package's one implementation.

See :mod:`django_arena_scale._redact`.
"""

from __future__ import annotations

from django_arena_scale._redact import MASK, looks_secret, redact, redact_all, redact_url

__all__ = ["MASK", "looks_secret", "redact", "redact_all", "redact_url"]
