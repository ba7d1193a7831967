"""Example-project settings plus a django-health-check 4 view, for ``bench/probes.py`` only."""

from __future__ import annotations

from arena_project.settings import *  # noqa: F403
from arena_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "health_check"]
ROOT_URLCONF = "probes_urls"
