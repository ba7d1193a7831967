"""Django system checks for django-arena-scale (filled in below; ids are stable)."""

from __future__ import annotations
