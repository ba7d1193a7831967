"""``path("", include("django_arena_scale.urls"))`` serves the probes as ordinary views."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from django_arena_scale import _views as views

app_name = "arena_scale"

urlpatterns: list[URLPattern] = [
    re_path(r"^live/?$", views.live, name="live"),
    re_path(r"^health/?$", views.health, name="health"),
    re_path(r"^ready/?$", views.ready, name="ready"),
    re_path(r"^status/?$", views.status, name="status"),
]
