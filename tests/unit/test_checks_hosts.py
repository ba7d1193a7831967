"""W060-W062: who several replicas let in (ALLOWED_HOSTS, SECRET_KEY), under check --deploy."""

from __future__ import annotations

import pytest
from django.core.checks import CheckMessage, run_checks
from django.test import override_settings

from django_arena_scale import checks

STRONG_KEY = "q3V9xYk2-Lr7pW0sT5uZ8aB1cD4eF6gH9iJ2kM5nO8pQ1rS4tU7vW0xY3z"
OLD_EXAMPLE_FALLBACK = "dev-only-insecure-key-set-SECRET_KEY-in-production"


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id is not None]


def deploy_ids() -> list[str]:
    return ids(run_checks(tags=[checks.TAG], include_deployment_checks=True))


# --- W060 ALLOWED_HOSTS = ['*'] ------------------------------------------------------------------


@override_settings(ALLOWED_HOSTS=["*"], ARENA_SCALE_REPLICAS=3)
def test_check_w060_wildcard_allowed_hosts_with_replicas() -> None:
    messages = checks.check_allowed_hosts_wildcard()
    assert ids(messages) == ["django_arena_scale.W060"]
    assert "Origin" in messages[0].msg
    assert "ALLOWED_HOSTS=arena.example.com" in (messages[0].hint or "")


@override_settings(ALLOWED_HOSTS=["arena.example.com", "*"], ARENA_SCALE_DEPLOY={"replicas": 2})
def test_check_w060_wildcard_among_others_and_replicas_from_deploy_spec() -> None:
    assert ids(checks.check_allowed_hosts_wildcard()) == ["django_arena_scale.W060"]


@override_settings(ALLOWED_HOSTS=["*"], ARENA_SCALE_REPLICAS=3)
def test_check_w060_is_deploy_only() -> None:
    assert "django_arena_scale.W060" in deploy_ids()
    assert "django_arena_scale.W060" not in ids(run_checks(tags=[checks.TAG]))


@pytest.mark.parametrize(
    ("hosts", "replicas"),
    [([".example.com", "arena.example.com"], 3), (["*"], 1), ("*", 3), ([], 3)],
)
def test_check_w060_quiet(hosts: object, replicas: int) -> None:
    """Named hosts, a single replica, or a malformed value (Django's business) raise nothing."""
    with override_settings(ALLOWED_HOSTS=hosts, ARENA_SCALE_REPLICAS=replicas):
        assert checks.check_allowed_hosts_wildcard() == []


# --- W061 a published placeholder SECRET_KEY ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        OLD_EXAMPLE_FALLBACK,
        "change-me-" + "x" * 50,
        "CHANGEME" + STRONG_KEY,
        "tests-only-not-secret",
    ],
)
def test_check_w061_placeholder_secret_key(key: str) -> None:
    with override_settings(SECRET_KEY=key, ARENA_SCALE_REPLICAS=2):
        messages = checks.check_secret_key_placeholder()
    assert ids(messages) == ["django_arena_scale.W061"]
    # The message names the published fragment, never the key.
    assert key not in messages[0].msg
    assert "secrets.token_urlsafe(50)" in (messages[0].hint or "")


def test_check_w061_old_example_fallback_passes_djangos_w009() -> None:
    """The key the example used to fall back to is exactly what Django's W009 lets through."""
    from django.core.checks.security.base import check_secret_key

    with override_settings(SECRET_KEY=OLD_EXAMPLE_FALLBACK, ARENA_SCALE_REPLICAS=2):
        assert check_secret_key(None) == []
        assert "django_arena_scale.W061" in deploy_ids()


@pytest.mark.parametrize(
    ("key", "replicas"),
    [
        (STRONG_KEY, 3),
        ("django-insecure-" + "x" * 50, 3),  # Django's security.W009 already reports it
        (OLD_EXAMPLE_FALLBACK, 1),
    ],
)
def test_check_w061_quiet(key: str, replicas: int) -> None:
    with override_settings(SECRET_KEY=key, ARENA_SCALE_REPLICAS=replicas):
        assert checks.check_secret_key_placeholder() == []


# --- W062 settings.SECRET_KEY is not the SECRET_KEY the replicas are given ----------------------


@override_settings(SECRET_KEY=STRONG_KEY, ARENA_SCALE_REPLICAS=3)
def test_check_w062_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "another-" + STRONG_KEY)
    messages = checks.check_secret_key_from_environment()
    assert ids(messages) == ["django_arena_scale.W062"]
    assert STRONG_KEY not in messages[0].msg


@pytest.mark.parametrize(("env", "replicas"), [(STRONG_KEY, 3), (None, 3), ("other", 1)])
def test_check_w062_quiet(monkeypatch: pytest.MonkeyPatch, env: str | None, replicas: int) -> None:
    if env is None:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("SECRET_KEY", env)
    with override_settings(SECRET_KEY=STRONG_KEY, ARENA_SCALE_REPLICAS=replicas):
        assert checks.check_secret_key_from_environment() == []
