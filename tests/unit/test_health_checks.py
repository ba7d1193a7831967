"""Check model, registry (settings, decorator, duplicates), redaction, access, DB built-ins."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from django_arena_scale._redact import redact, redact_all
from django_arena_scale.health import (
    Check,
    Reason,
    Status,
    duplicate_check_names,
    get_checks,
    invalid_check_paths,
    register_check,
    unregister_check,
)
from django_arena_scale.health._access import (
    bearer_token_matches,
    client_address,
    invalid_networks,
    parse_ip,
)
from django_arena_scale.health._builtin import (
    database_checks,
    redis_checks,
    redis_key,
    redis_usages,
)
from django_arena_scale.health._runner import Runner

MODULE_CHECK = Check("module-check", lambda: None, tags={"custom"})


def plain_function_check() -> None:
    return None


@pytest.fixture(autouse=True)
def _no_builtins(settings: Any) -> None:
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_CHECKS = []


# --- model ------------------------------------------------------------------------------------
def test_check_rejects_empty_name() -> None:
    """A check needs a non-empty name."""
    with pytest.raises(ValueError, match="non-empty"):
        Check("  ", lambda: None)


def test_check_rejects_non_callable() -> None:
    """A check needs a callable."""
    with pytest.raises(TypeError, match="callable"):
        Check("x", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), True])
def test_check_rejects_bad_timeout(timeout: Any) -> None:
    """A timeout must be a positive finite number."""
    with pytest.raises(ValueError, match="positive number"):
        Check("x", lambda: None, timeout=timeout)


def test_check_tags_become_frozenset() -> None:
    """Tags given as a set or list are stored as a frozenset."""
    assert Check("x", lambda: None, tags=["a", "b"]).tags == frozenset({"a", "b"})  # type: ignore[arg-type]


def test_check_repr_hides_target() -> None:
    """repr names the check without its (possibly secret) target."""
    check = Check("redis", lambda: None, target="redis://:pw@h/0")
    assert "pw" not in repr(check)


def test_reason_enum_values() -> None:
    """The reasons are the fixed enum of the issue."""
    assert {r.value for r in Reason} == {"timeout", "error", "unavailable", "draining", "starting"}


# --- registry ---------------------------------------------------------------------------------
def test_register_check_decorator_adds_check() -> None:
    """@register_check(name=...) adds a check with that name."""

    @register_check(name="custom-one", tags=["x"], critical=False, timeout=0.2)
    def custom() -> None:
        return None

    try:
        check = next(c for c in get_checks() if c.name == "custom-one")
        assert (check.critical, check.timeout, check.tags) == (False, 0.2, frozenset({"x"}))
    finally:
        unregister_check("custom-one")


def test_register_check_bare_decorator_uses_qualified_name() -> None:
    """@register_check names the check after the function's dotted path."""

    @register_check
    def bare() -> None:
        return None

    name = f"{__name__}.test_register_check_bare_decorator_uses_qualified_name.<locals>.bare"
    try:
        assert name in [c.name for c in get_checks()]
    finally:
        unregister_check(name)


def test_register_check_returns_function_unchanged() -> None:
    """The decorator returns the function itself."""

    def f() -> None:
        return None

    try:
        assert register_check(name="same-f")(f) is f
    finally:
        unregister_check("same-f")


def test_settings_check_instance_path(settings: Any) -> None:
    """ARENA_SCALE_CHECKS may name a Check instance."""
    settings.ARENA_SCALE_CHECKS = [f"{__name__}.MODULE_CHECK"]
    assert [c.name for c in get_checks()] == ["module-check"]


def test_settings_check_function_path(settings: Any) -> None:
    """ARENA_SCALE_CHECKS may name a plain function (named after its path)."""
    path = f"{__name__}.plain_function_check"
    settings.ARENA_SCALE_CHECKS = [path]
    assert [c.name for c in get_checks()] == [path]


def test_duplicate_check_names_reported(settings: Any) -> None:
    """Two checks with one name are reported by duplicate_check_names()."""
    settings.ARENA_SCALE_CHECKS = [f"{__name__}.MODULE_CHECK", Check("module-check", lambda: None)]
    assert duplicate_check_names() == ["module-check"]


def test_duplicate_check_names_empty_when_unique(settings: Any) -> None:
    """No duplicates -> empty list."""
    settings.ARENA_SCALE_CHECKS = [f"{__name__}.MODULE_CHECK"]
    assert duplicate_check_names() == []


def test_duplicate_between_decorator_and_settings(settings: Any) -> None:
    """A decorated check clashing with a settings one is a duplicate too."""
    settings.ARENA_SCALE_CHECKS = [f"{__name__}.MODULE_CHECK"]
    register_check(name="module-check")(lambda: None)
    try:
        assert duplicate_check_names() == ["module-check"]
    finally:
        unregister_check("module-check")


def test_invalid_check_paths_reported(settings: Any) -> None:
    """Unimportable or unusable entries are listed for the system check."""
    settings.ARENA_SCALE_CHECKS = ["nope.nothing", f"{__name__}.SECRET_NUMBER"]
    assert sorted(invalid_check_paths()) == sorted(["nope.nothing", f"{__name__}.SECRET_NUMBER"])


SECRET_NUMBER = 42


# --- built-in database check ------------------------------------------------------------------
def test_database_checks_one_per_alias(settings: Any) -> None:
    """DATABASE_CHECKS=True makes one check per alias."""
    settings.ARENA_SCALE_DATABASE_CHECKS = True
    assert [c.name for c in database_checks()] == [f"database:{a}" for a in settings.DATABASES]


def test_database_checks_only_listed_aliases(settings: Any) -> None:
    """A list selects aliases (unknown ones ignored)."""
    settings.ARENA_SCALE_DATABASE_CHECKS = ["default", "missing"]
    assert [c.name for c in database_checks()] == ["database:default"]


@pytest.mark.django_db
def test_database_check_passes_in_helper_thread(settings: Any) -> None:
    """SELECT 1 in a helper thread passes."""
    settings.ARENA_SCALE_DATABASE_CHECKS = True
    report = Runner().evaluate(database_checks(), deadline=5, default_timeout=5)
    assert report.status is Status.PASS


@pytest.mark.django_db
def test_database_check_closes_its_thread_connection(settings: Any) -> None:
    """The connection opened in the helper thread is closed before the thread ends."""
    from django.db import connections

    settings.ARENA_SCALE_DATABASE_CHECKS = True
    seen: list[Any] = []
    check = database_checks()[0]

    def run() -> None:
        check.func()
        seen.append(connections["default"].connection)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert seen == [None]


@pytest.mark.django_db
def test_database_check_never_writes(settings: Any) -> None:
    """The database check only runs SELECT 1."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    settings.ARENA_SCALE_DATABASE_CHECKS = True
    with CaptureQueriesContext(connections["default"]) as ctx:
        database_checks()[0].func()  # same thread: the test's connection stays open
    assert [q["sql"] for q in ctx.captured_queries] == ["SELECT 1"]


@pytest.mark.django_db
def test_database_check_unreachable_is_unavailable(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that refuses connections is reported unavailable, not error."""
    from django.db import OperationalError
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refuse(self: Any) -> None:
        raise OperationalError("could not connect: password=hunter2")

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", refuse)
    settings.ARENA_SCALE_DATABASE_CHECKS = True
    report = Runner().evaluate(database_checks(), deadline=5, default_timeout=5)
    assert report.critical_failures == {"database:default": "unavailable"}


# --- Redis discovery (no server needed: only settings are read) ------------------------------
def test_redis_usages_from_caches_sessions_channels(settings: Any) -> None:
    """Caches, cache-backed sessions and channels_redis layers are all discovered."""
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://a:6379/0"},
        "sessions": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://b:6379/1"},
    }
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    settings.SESSION_CACHE_ALIAS = "sessions"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://c:6379/2"}]},
        }
    }
    roles = [(role, url) for role, url, _ in redis_usages()]
    assert roles == [
        ("cache.default", "redis://a:6379/0"),
        ("sessions", "redis://b:6379/1"),
        ("channels.default", "redis://c:6379/2"),
    ]


def test_redis_checks_one_per_distinct_url(settings: Any) -> None:
    """The same server+db used by two roles is checked once, tagged with both roles."""
    settings.ARENA_SCALE_REDIS_CHECKS = True
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://a:6379/0"},
    }
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [("a", 6379)]},
        }
    }
    checks = redis_checks()
    assert [(c.name, sorted(c.tags)) for c in checks] == [
        ("redis:cache.default", ["cache.default", "channels.default", "redis"])
    ]


def test_redis_checks_disabled(settings: Any) -> None:
    """ARENA_SCALE_REDIS_CHECKS=False disables them."""
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://a:6379/0"},
    }
    assert redis_checks() == []


def test_redis_key_normalises_default_port_and_db() -> None:
    """redis://h and redis://h:6379/0 are the same server."""
    assert redis_key("redis://h") == redis_key("redis://:pw@h:6379/0")


# --- redaction --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("postgres://user:pa55@db/x", "postgres://user:***@db/x"),
        ("rediss://u:p@h/0?ssl_cert_reqs=none", "rediss://u:***@h/0?ssl_cert_reqs=none"),
        ("host=db password=hunter2 dbname=x", "host=db password=*** dbname=x"),
        ("https://h/x?api_key=abc&x=1", "https://h/x?api_key=***&x=1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_removes_credentials(text: str, expected: str) -> None:
    """Passwords and token-like values are masked; the rest stays readable."""
    assert redact(text) == expected


def test_redact_all_nested() -> None:
    """redact_all walks dicts and lists."""
    assert redact_all({"a": ["redis://:x@h/0"], "n": 1}) == {"a": ["redis://:***@h/0"], "n": 1}


# --- access -----------------------------------------------------------------------------------
def test_bearer_token_matches_exact_token() -> None:
    """The exact token under Bearer matches."""
    assert bearer_token_matches("Bearer abc", "abc")


def test_bearer_token_rejects_prefix() -> None:
    """A prefix of the token does not match."""
    assert not bearer_token_matches("Bearer ab", "abc")


def test_client_address_ignores_xff_without_trusted_proxy() -> None:
    """Without trusted proxies, REMOTE_ADDR is the client."""
    meta = {"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "10.0.0.1"}
    assert str(client_address(meta, [])) == "192.0.2.1"


def test_client_address_skips_trusted_hops() -> None:
    """Trusted hops at the right of X-Forwarded-For are skipped."""
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.2"}
    assert str(client_address(meta, ["127.0.0.1", "10.0.0.0/8"])) == "203.0.113.9"


def test_parse_ip_strips_port_and_maps_v4() -> None:
    """Ports are stripped and IPv4-mapped IPv6 addresses become IPv4."""
    assert [str(parse_ip("10.0.0.1:80")), str(parse_ip("::ffff:10.0.0.1"))] == ["10.0.0.1"] * 2


def test_invalid_networks_listed() -> None:
    """invalid_networks() names the entries that are not networks."""
    assert invalid_networks(["10.0.0.0/8", "nonsense", "::1"]) == ["nonsense"]


def test_runner_report_status_enum() -> None:
    """Report.status combines results (pass when everything passes)."""
    report = Runner().evaluate([MODULE_CHECK], deadline=1, default_timeout=1)
    assert report.status is Status.PASS


def test_custom_checks_blank_entry_gets_a_name(settings: Any) -> None:
    """A blank ARENA_SCALE_CHECKS entry becomes a named failing check, not a crash."""
    from django_arena_scale.health._registry import custom_checks

    settings.ARENA_SCALE_CHECKS = ["", "  "]
    names = [check.name for check in custom_checks()]
    assert names == ["ARENA_SCALE_CHECKS[0]", "ARENA_SCALE_CHECKS[1]"]
