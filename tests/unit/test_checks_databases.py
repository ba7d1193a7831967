"""PgBouncer (E040-E042, W041) and read-replica (E043, E044, W042, W043) checks, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import CheckMessage, run_checks
from django.test import override_settings

from django_arena_scale import checks
from django_arena_scale.db import MIDDLEWARE as RYW
from django_arena_scale.db import ROUTER, database_settings

# The checks only read DATABASES; no connection is opened.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")

PG = "postgres://arena:s3cret@pgbouncer:6432/arena"


def ids(**settings: Any) -> list[str]:
    with override_settings(**settings):
        messages: list[CheckMessage] = run_checks(tags=[checks.TAG])
    return [m.id for m in messages if m.id is not None]


def db(**extra: Any) -> dict[str, Any]:
    entry = database_settings(PG, pgbouncer=True)["DATABASES"]["default"]
    entry.update(extra)
    return {"default": entry}


def test_the_helpers_pgbouncer_settings_pass_every_check() -> None:
    settings = database_settings(PG, "postgres://ro:pw@r1/arena", pgbouncer=True)
    assert ids(**settings, MIDDLEWARE=[RYW]) == []


@pytest.mark.parametrize("value", [False, None, "yes"])
def test_e040_server_side_cursors_behind_pgbouncer(value: Any) -> None:
    assert "django_arena_scale.E040" in ids(
        DATABASES=db(DISABLE_SERVER_SIDE_CURSORS=value), ARENA_SCALE_PGBOUNCER=True
    )
    # Without PgBouncer declared (or for another alias) nothing is said.
    assert "django_arena_scale.E040" not in ids(DATABASES=db(DISABLE_SERVER_SIDE_CURSORS=value))
    assert "django_arena_scale.E040" not in ids(
        DATABASES={**db(DISABLE_SERVER_SIDE_CURSORS=value), "other": db()["default"]},
        ARENA_SCALE_PGBOUNCER=["other"],
    )


def test_e041_prepared_statements_behind_pgbouncer() -> None:
    options = {"prepare_threshold": 5, "connect_timeout": 2}
    found = ids(DATABASES=db(OPTIONS=options), ARENA_SCALE_PGBOUNCER=["default"])
    assert "django_arena_scale.E041" in found
    assert "django_arena_scale.E041" not in ids(
        DATABASES=db(OPTIONS={"prepare_threshold": None}), ARENA_SCALE_PGBOUNCER=True
    )
    assert "django_arena_scale.E041" not in ids(DATABASES=db(OPTIONS=options))


@pytest.mark.parametrize(
    "options", [{"assume_role": "reporting"}, {"options": "-c search_path=tenant"}]
)
def test_e042_session_state_behind_pgbouncer(options: dict[str, str]) -> None:
    assert "django_arena_scale.E042" in ids(
        DATABASES=db(OPTIONS=options), ARENA_SCALE_PGBOUNCER=True
    )
    assert "django_arena_scale.E042" not in ids(DATABASES=db(OPTIONS=options))
    assert "django_arena_scale.E042" not in ids(
        DATABASES=db(OPTIONS={"sslmode": "require"}), ARENA_SCALE_PGBOUNCER=True
    )


@pytest.mark.parametrize("max_age", [60, None])
def test_w041_kept_connections_without_health_checks(max_age: Any) -> None:
    unchecked = db(CONN_MAX_AGE=max_age, CONN_HEALTH_CHECKS=False)
    assert "django_arena_scale.W041" in ids(DATABASES=unchecked, ARENA_SCALE_PGBOUNCER=True)
    assert "django_arena_scale.W041" not in ids(DATABASES=unchecked)
    checked = db(CONN_MAX_AGE=max_age, CONN_HEALTH_CHECKS=True)
    assert "django_arena_scale.W041" not in ids(DATABASES=checked, ARENA_SCALE_PGBOUNCER=True)
    closed = db(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    assert "django_arena_scale.W041" not in ids(DATABASES=closed, ARENA_SCALE_PGBOUNCER=True)


def test_e043_unknown_aliases_and_e044_primary_as_replica() -> None:
    found = ids(
        DATABASES=db(),
        ARENA_SCALE_READ_REPLICAS=["replica_9"],
        ARENA_SCALE_PGBOUNCER=["bouncer"],
        DATABASE_ROUTERS=[ROUTER],
        MIDDLEWARE=[RYW],
    )
    assert found.count("django_arena_scale.E043") == 2
    assert "django_arena_scale.E043" not in ids(DATABASES=db(), ARENA_SCALE_PGBOUNCER=["default"])
    assert "django_arena_scale.E044" in ids(
        DATABASES=db(), ARENA_SCALE_READ_REPLICAS=["default"], DATABASE_ROUTERS=[ROUTER]
    )
    assert "django_arena_scale.E044" not in ids(DATABASES=db())


def test_w042_w043_replicas_without_router_or_middleware() -> None:
    settings = database_settings(PG, "postgres://ro:pw@r1/arena")
    found = ids(DATABASES=settings["DATABASES"], ARENA_SCALE_READ_REPLICAS=["replica_1"])
    assert "django_arena_scale.W042" in found
    assert "django_arena_scale.W043" in found
    found = ids(**settings, MIDDLEWARE=["django_arena_scale.db.ReadYourWritesMiddleware"])
    assert "django_arena_scale.W042" not in found
    assert "django_arena_scale.W043" not in found
    assert ids(DATABASES=db()) == []  # no replicas: neither


def test_database_checks_never_crash_on_odd_values() -> None:
    odd = {"default": {"ENGINE": "x", "OPTIONS": "not a dict", "CONN_MAX_AGE": "soon"}}
    found = ids(DATABASES=odd, ARENA_SCALE_PGBOUNCER=True, ARENA_SCALE_READ_REPLICAS="r1")
    assert "django_arena_scale.W099" not in found
    assert "django_arena_scale.E002" in found  # READ_REPLICAS must be a list
