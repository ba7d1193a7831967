from __future__ import annotations

from django.urls import path

from arena import views

urlpatterns = [
    path("auth/login/", views.login_view, name="login"),
    path("auth/logout/", views.logout_view, name="logout"),
    path("api/ping/", views.ping, name="ping"),
    path("api/whoami/", views.whoami, name="whoami"),
    path("api/messages/", views.messages, name="messages"),
    path("messages/stream/", views.stream, name="stream"),
    path("messages/stream/mine/", views.my_stream, name="my_stream"),
]
