"""W003: DependencyErrorMiddleware with Django's own SessionMiddleware instead of the package's.

A failed session save after the view is a 500 then, not the 503 ``dependency_unavailable``
(``tests/unit/test_dependency_errors.py`` shows both answers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_arena_scale import checks
from django_arena_scale.middleware import DependencyErrorMiddleware

PROBE = "django_arena_scale.middleware.ProbeMiddleware"
GUARD = "django_arena_scale.middleware.DependencyErrorMiddleware"
SESSIONS = "django_arena_scale.middleware.SessionMiddleware"
DJANGO_SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
SECURITY = "django.middleware.security.SecurityMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
HERE = "tests.unit.test_checks_session_middleware"
EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


class Guard(DependencyErrorMiddleware):
    """A project's own subclass of DependencyErrorMiddleware."""


class OwnSessions(DjangoSessionMiddleware):
    """A project's own session middleware: what it does on a failed save is its business."""


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id is not None]


@override_settings(MIDDLEWARE=[PROBE, GUARD, SECURITY, DJANGO_SESSIONS, AUTH])
def test_check_w003_djangos_session_middleware_with_guard() -> None:
    """The message names the entry and its position; the hint says what to write."""
    messages = checks.check_session_middleware()
    assert ids(messages) == ["django_arena_scale.W003"]
    assert (messages[0].obj, "entry 4" in messages[0].msg, DJANGO_SESSIONS in messages[0].msg) == (
        "MIDDLEWARE",
        True,
        True,
    )
    assert f"Replace {DJANGO_SESSIONS!r} with {SESSIONS!r}" in (messages[0].hint or "")


@override_settings(MIDDLEWARE=(PROBE, GUARD, DJANGO_SESSIONS))
def test_check_w003_runs_without_deploy_and_does_not_stop_the_command() -> None:
    """A warning of plain `manage.py check` (tuple MIDDLEWARE too): reported, not fatal."""
    assert "django_arena_scale.W003" in ids(run_checks(tags=[checks.TAG]))
    call_command("check", tags=[checks.TAG])  # warnings do not raise SystemCheckError


@override_settings(MIDDLEWARE=[PROBE, f"{HERE}.Guard", DJANGO_SESSIONS])
def test_check_w003_subclass_of_the_guard() -> None:
    """A project's subclass of DependencyErrorMiddleware counts as installed."""
    assert ids(checks.check_session_middleware()) == ["django_arena_scale.W003"]


@pytest.mark.parametrize(
    "middleware",
    [
        [PROBE, GUARD, SECURITY, SESSIONS, AUTH],  # the package's SessionMiddleware
        [PROBE, SECURITY, DJANGO_SESSIONS, AUTH],  # no DependencyErrorMiddleware: nothing to warn
        [PROBE, GUARD, SECURITY],  # no sessions at all
        [PROBE, GUARD, f"{HERE}.OwnSessions"],  # a project's own subclass
        [PROBE, GUARD, "no.such.Middleware", 42],  # Django reports what it cannot import
        "not a list",
    ],
    ids=["package", "no-guard", "no-sessions", "own-subclass", "unimportable", "malformed"],
)
def test_check_w003_quiet(middleware: object) -> None:
    with override_settings(MIDDLEWARE=middleware):
        assert checks.check_session_middleware() == []


def test_check_w003_quiet_on_the_test_settings() -> None:
    """The tests' own settings use the package's SessionMiddleware."""
    assert checks.check_session_middleware() == []


def test_check_w003_quiet_on_the_example_settings() -> None:
    """The example project's MIDDLEWARE raises no W003; with Django's SessionMiddleware put
    back in its place it would."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE), "SECRET_KEY": "s" * 50}
    result = subprocess.run(
        [sys.executable, "-c", "import json, arena_project.settings as s; "
         "print(json.dumps(list(s.MIDDLEWARE)))"],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    example = json.loads(result.stdout)
    with_djangos = [DJANGO_SESSIONS if entry == SESSIONS else entry for entry in example]
    with override_settings(MIDDLEWARE=example):
        quiet = checks.check_session_middleware()
    with override_settings(MIDDLEWARE=with_djangos):
        warned = ids(checks.check_session_middleware())
    assert (SESSIONS in example, GUARD in example, quiet, warned) == (
        True,
        True,
        [],
        ["django_arena_scale.W003"],
    )


@override_settings(MIDDLEWARE=[PROBE, GUARD, DJANGO_SESSIONS])
def test_check_w003_fails_check_with_fail_level_warning() -> None:
    """`manage.py check --fail-level WARNING` (CI) stops on it."""
    with pytest.raises(SystemCheckError, match="W003"):
        call_command("check", tags=[checks.TAG], fail_level="WARNING")
