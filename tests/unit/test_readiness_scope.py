"""/ready/ is about this replica: shared-dependency checks show in /status/, not in /ready/.

Built-in database, Redis and channel-layer checks are ``scope="shared"``; custom checks default
to ``scope="replica"``.  ``ARENA_SCALE_READY_INCLUDE_SHARED`` opts shared checks back in.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from django_arena_scale._conf import SETTINGS, conf
from django_arena_scale.health import Scope, register_check, unregister_check
from django_arena_scale.health._builtin import channel_layer_check, database_check, redis_checks
from django_arena_scale.health._model import Check, CheckResult, Report, Status, Unavailable
from django_arena_scale.health._runner import Runner

TOKEN = "scope-status-token"


def _down() -> None:
    raise Unavailable("down")


@pytest.fixture(autouse=True)
def _scope_settings(settings: Any) -> None:
    settings.ARENA_SCALE_DATABASE_CHECKS = False
    settings.ARENA_SCALE_REDIS_CHECKS = False
    settings.ARENA_SCALE_STATUS_TOKEN = TOKEN
    settings.ARENA_SCALE_CHECKS = [
        Check("redis:sessions", _down, tags=frozenset({"redis", "sessions"}), scope="shared"),
        Check("local", lambda: None),
    ]


def _ready(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/ready/")
    return response.status_code, json.loads(response.content)


def _status(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/status/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return response.status_code, json.loads(response.content)


# --- model -----------------------------------------------------------------------------------
def test_custom_check_defaults_to_replica_scope() -> None:
    """A check says "this replica cannot serve" unless it is declared shared."""
    assert Check("c", lambda: None).scope is Scope.REPLICA


def test_scope_accepts_strings() -> None:
    """scope='shared' is converted to the enum."""
    assert Check("c", lambda: None, scope="shared").scope is Scope.SHARED  # type: ignore[arg-type]


def test_scope_wrong_value_is_a_clear_error() -> None:
    """An unknown scope names the check, the value and what is expected."""
    with pytest.raises(ValueError, match="scope should be") as info:
        Check("search", lambda: None, scope="global")  # type: ignore[arg-type]
    message = str(info.value)
    assert all(part in message for part in ("'search'", "'global'", "'replica'", "'shared'"))


def test_builtin_checks_are_shared(settings: Any) -> None:
    """Database, Redis and channel-layer checks describe dependencies every replica shares."""
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://a:6379/0"}
    }
    settings.ARENA_SCALE_REDIS_CHECKS = True
    checks = [database_check("default"), channel_layer_check("default"), *redis_checks()]
    assert [c.scope for c in checks] == [Scope.SHARED] * 3


def test_register_check_scope() -> None:
    """@register_check takes scope= too; a wrong value is refused at registration."""

    def probe() -> None:
        return None

    register_check(name="scoped", scope="shared")(probe)
    try:
        from django_arena_scale.health._registry import registered_checks

        scopes = [c.scope for c in registered_checks() if c.name == "scoped"]
        with pytest.raises(ValueError, match="'scoped2'"):
            register_check(name="scoped2", scope="everywhere")(probe)
    finally:
        unregister_check("scoped")
    assert scopes == [Scope.SHARED]


def _result(name: str, scope: Scope, critical: bool = True, tags: tuple[str, ...] = ()) -> Any:
    return CheckResult(
        name=name,
        status=Status.FAIL if critical else Status.WARN,
        reason=None,
        duration=0.0,
        critical=critical,
        tags=frozenset(tags),
        scope=scope,
    )


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        (False, {"local": "error"}),
        (True, {"local": "error", "redis:sessions": "error", "database:default": "error"}),
        (["redis"], {"local": "error", "redis:sessions": "error"}),
        (("database:default",), {"local": "error", "database:default": "error"}),
        ([], {"local": "error"}),
    ],
)
def test_report_ready_failures_by_policy(include: Any, expected: dict[str, str]) -> None:
    """Replica checks always decide; shared ones by name or tag, or all with True."""
    report = Report(
        results=(
            _result("local", Scope.REPLICA),
            _result("redis:sessions", Scope.SHARED, tags=("redis", "sessions")),
            _result("database:default", Scope.SHARED, tags=("database",)),
            _result("optional", Scope.REPLICA, critical=False),
        ),
        observed_at=0.0,
        duration=0.0,
    )
    assert report.ready_failures(include) == expected


def test_report_overall_warn_when_only_shared_fail() -> None:
    """A failing shared check alone makes the overall status warn, not fail."""
    report = Report(results=(_result("redis", Scope.SHARED),), observed_at=0.0, duration=0.0)
    assert (report.overall(), report.overall(True), report.status) == (
        Status.WARN,
        Status.FAIL,
        Status.FAIL,
    )


# --- setting ---------------------------------------------------------------------------------
def test_setting_registered_with_default_false() -> None:
    """The setting is in the registry (README table, system checks) with default False."""
    setting = SETTINGS["READY_INCLUDE_SHARED"]
    assert (setting.default, setting.types) == (False, (bool, list, tuple))


def test_setting_list_becomes_tuple_of_strings(settings: Any) -> None:
    """A list names checks or tags."""
    settings.ARENA_SCALE_READY_INCLUDE_SHARED = ["redis", "database:default"]
    assert conf.READY_INCLUDE_SHARED == ("redis", "database:default")


def test_setting_wrong_type_is_reported_by_system_checks(settings: Any) -> None:
    """A wrong type is a system-check error naming the setting (the registry drives it)."""
    from django.core import checks

    settings.ARENA_SCALE_READY_INCLUDE_SHARED = "redis"
    messages = [m for m in checks.run_checks() if "READY_INCLUDE_SHARED" in m.msg]
    assert [m.is_serious() for m in messages] == [True]


# --- /ready/ and /status/ ---------------------------------------------------------------------
def test_ready_ignores_failing_shared_check_by_default(client: Client) -> None:
    """A dead shared dependency does not make the replica unready (containment)."""
    assert _ready(client) == (200, {"status": "pass"})


def test_status_shows_failing_shared_check_by_default(client: Client) -> None:
    """... but /status/ shows it failing with its reason, not affecting readiness."""
    code, body = _status(client)
    entry = body["checks"]["redis:sessions"][0]
    assert (code, body["status"]) == (200, "warn")
    assert (entry["status"], entry["output"], entry["affectsReadiness"], entry["scope"]) == (
        "fail",
        "unavailable",
        False,
        "shared",
    )


def test_minimal_status_warns_for_failing_shared_check(client: Client) -> None:
    """Without credentials /status/ says warn (visible), still 200."""
    response = client.get("/status/")
    assert (response.status_code, json.loads(response.content)) == (200, {"status": "warn"})


def test_ready_fails_on_failing_replica_check(client: Client, settings: Any) -> None:
    """A replica-scope check that fails still makes /ready/ 503 with its reason."""
    settings.ARENA_SCALE_CHECKS = [Check("local", _down)]
    assert _ready(client) == (503, {"status": "fail", "checks": {"local": "unavailable"}})


@pytest.mark.parametrize("include", [True, ["redis"], ["redis:sessions"]])
def test_ready_opt_in_includes_shared_check(client: Client, settings: Any, include: Any) -> None:
    """Opted in (all, by tag or by name), the failing shared check fails /ready/ again."""
    settings.ARENA_SCALE_READY_INCLUDE_SHARED = include
    code, body = _status(client)
    assert _ready(client) == (503, {"status": "fail", "checks": {"redis:sessions": "unavailable"}})
    assert (code, body["status"], body["checks"]["redis:sessions"][0]["affectsReadiness"]) == (
        503,
        "fail",
        True,
    )


def test_ready_opt_in_other_name_leaves_check_out(client: Client, settings: Any) -> None:
    """Opting in another check does not include this one."""
    settings.ARENA_SCALE_READY_INCLUDE_SHARED = ["database:default"]
    assert _ready(client) == (200, {"status": "pass"})


def test_ready_builtin_database_down_stays_ready(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real built-in database check failing: /ready/ 200, /status/ shows it failing."""
    from django.db import OperationalError
    from django.db.backends.base.base import BaseDatabaseWrapper

    def refuse(self: Any) -> None:
        raise OperationalError("could not connect")

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", refuse)
    settings.ARENA_SCALE_CHECKS = []
    settings.ARENA_SCALE_DATABASE_CHECKS = True
    ready = _ready(client)
    _, status = _status(client)
    settings.ARENA_SCALE_READY_INCLUDE_SHARED = True
    from django_arena_scale.health._service import get_runner

    get_runner().clear()
    opted_in = _ready(client)
    assert ready == (200, {"status": "pass"})
    assert status["checks"]["database:default"][0]["output"] == "unavailable"
    assert opted_in == (503, {"status": "fail", "checks": {"database:default": "unavailable"}})


# --- transitions are logged once ---------------------------------------------------------------
def test_transitions_logged_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    """pass -> fail -> fail -> pass logs two lines at WARNING (the outage and the recovery)."""
    state = {"up": True}

    def flaky() -> None:
        if not state["up"]:
            raise Unavailable("down")

    runner = Runner()
    check = Check("redis:sessions", flaky, scope="shared")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="django_arena_scale.health"):
        for up in (True, False, False, False, True, True):
            state["up"] = up
            runner.evaluate([check], deadline=2, default_timeout=2)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        "Health check 'redis:sessions' (scope shared) is now fail (unavailable); was pass.",
        "Health check 'redis:sessions' (scope shared) is now pass; was fail (unavailable).",
    ]
