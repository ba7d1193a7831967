"""The example project's URLs plus django-health-check 4 with its database and cache checks."""

from __future__ import annotations

from django.urls import include, path
from health_check.views import HealthCheckView

urlpatterns = [
    path(
        "ht/",
        HealthCheckView.as_view(
            checks=["health_check.checks.Database", "health_check.checks.Cache"]
        ),
    ),
    path("", include("arena_project.urls")),
]
