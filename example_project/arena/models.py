from __future__ import annotations

from django.conf import settings
from django.db import models


class Message(models.Model):
    """A chat message posted through the JSON API."""

    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    text = models.CharField(max_length=2000)
    replica = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text[:50]

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "author": self.author.get_username() if self.author else None,
            "text": self.text,
            "replica": self.replica,
            "created_at": self.created_at.isoformat(),
        }


class Vote(models.Model):
    """A vote for the better of the two simulated answers to a prompt (the demo page)."""

    WINNERS = ("a", "b", "tie")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    prompt = models.CharField(max_length=500)
    winner = models.CharField(max_length=3, choices=[(w, w) for w in WINNERS])
    replica = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.winner}: {self.prompt[:40]}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "user": self.user.get_username() if self.user else None,
            "prompt": self.prompt,
            "winner": self.winner,
            "replica": self.replica,
            "created_at": self.created_at.isoformat(),
        }
