"""Starting the warm-ups has one owner, ``django_arena_scale.lifecycle._warmup``.

``ProbeMiddleware`` (when Django builds the chain) and the first probe of a process that has
not claimed them both call ``start_warmups_or_log()``: a failure to start is logged on the
probes' logger and never breaks the caller.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from django_arena_scale.lifecycle import _warmup as warmup
from django_arena_scale.lifecycle._state import State, get_lifecycle

SRC = Path(warmup.__file__).resolve().parents[1]
#: Modules that may call ``start_warmups(`` itself: the owner, the public re-export in
#: ``lifecycle/__init__.py``, and the gunicorn worker hook (it lets a failure stop the boot).
DIRECT_CALLERS = {"lifecycle/_warmup.py", "lifecycle/__init__.py", "lifecycle/gunicorn.py"}


def _fail(*args: Any, **kwargs: Any) -> bool:
    raise RuntimeError("cannot start")


def test_start_warmups_or_log_logs_and_returns_false(monkeypatch: Any, caplog: Any) -> None:
    """A start that raises is logged on django_arena_scale.health and reported as not started."""
    monkeypatch.setattr(warmup, "start_warmups", _fail)
    with caplog.at_level(logging.ERROR, logger="django_arena_scale.health"):
        assert warmup.start_warmups_or_log() is False
    assert [r.getMessage() for r in caplog.records if r.name == "django_arena_scale.health"] == [
        "Starting the warm-ups failed."
    ]


def test_start_warmups_or_log_starts_them(settings: Any) -> None:
    """With nothing configured it starts them and the lifecycle is READY."""
    settings.ARENA_SCALE_WARMUPS = []
    assert warmup.start_warmups_or_log(background=False) is True
    assert get_lifecycle().state is State.READY


@pytest.mark.parametrize("caller", ["middleware", "probe"])
def test_callers_survive_a_failing_start(monkeypatch: Any, caplog: Any, caller: str) -> None:
    """Building ProbeMiddleware and answering /health/ both go through the owner's logged start."""
    from django_arena_scale.middleware import ProbeMiddleware

    monkeypatch.setattr(warmup, "start_warmups", _fail)
    with caplog.at_level(logging.ERROR, logger="django_arena_scale.health"):
        middleware = ProbeMiddleware(lambda request: HttpResponse())
        if caller == "probe":
            caplog.clear()
            response = middleware(RequestFactory().get("/health/"))
            assert response.status_code == 503  # still STARTING
    assert "Starting the warm-ups failed." in [r.getMessage() for r in caplog.records]


def test_warmups_are_started_only_through_the_owner() -> None:
    """No other module calls start_warmups() with its own error handling."""
    call = re.compile(r"\bstart_warmups\(")
    offenders = [
        path.relative_to(SRC).as_posix()
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).as_posix() not in DIRECT_CALLERS
        and call.search(path.read_text("utf-8"))
    ]
    assert offenders == []
    assert call.search((SRC / "lifecycle" / "_warmup.py").read_text("utf-8"))
