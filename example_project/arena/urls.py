from __future__ import annotations

from django.urls import path

from arena import views
from arena.views import with_replica

# Every JSON view answers with X-Replica (the demo page shows which replica served each call);
# the SSE streams name it in their first event instead.
urlpatterns = [
    path("", with_replica(views.index), name="index"),
    path("auth/login/", with_replica(views.login_view), name="login"),
    path("auth/logout/", with_replica(views.logout_view), name="logout"),
    path("api/ping/", with_replica(views.ping), name="ping"),
    path("api/whoami/", with_replica(views.whoami), name="whoami"),
    path("api/messages/", with_replica(views.messages), name="messages"),
    path("api/votes/", with_replica(views.votes), name="votes"),
    path("api/stack/", with_replica(views.stack), name="stack"),
    path("messages/stream/", views.stream, name="stream"),
    path("messages/stream/mine/", views.my_stream, name="my_stream"),
]
