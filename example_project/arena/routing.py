from __future__ import annotations

from django.urls import path

from arena.consumers import ChatConsumer

websocket_urlpatterns = [path("ws/chat/<str:room>/", ChatConsumer.as_asgi())]
