"""database_settings() and parse_database_url(): DATABASES from URLs, errors redacted."""

from __future__ import annotations

import pytest

from django_arena_scale.db import REPLICA_ENGINE, ROUTER, database_settings, parse_database_url

SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}
PRIMARY = "postgres://arena:s3cret@db.internal:6432/arena?sslmode=require"


def test_primary_url_becomes_default_with_fail_fast_options() -> None:
    result = database_settings(PRIMARY)
    assert result == {
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "arena",
                "USER": "arena",
                "PASSWORD": "s3cret",
                "HOST": "db.internal",
                "PORT": "6432",
                "OPTIONS": {"sslmode": "require", "connect_timeout": 2},
                "CONN_MAX_AGE": 60,
                "CONN_HEALTH_CHECKS": True,
            }
        }
    }


def test_replicas_get_aliases_router_and_mirror() -> None:
    result = database_settings(
        PRIMARY, "postgres://ro:pw@r1/arena, postgres://ro:pw@r2:5433/arena", conn_max_age=60
    )
    databases = result["DATABASES"]
    assert list(databases) == ["default", "replica_1", "replica_2"]
    assert databases["replica_2"]["ENGINE"] == REPLICA_ENGINE
    assert databases["replica_2"]["PORT"] == "5433"
    assert databases["replica_1"]["TEST"] == {"MIRROR": "default"}
    assert databases["replica_1"]["CONN_MAX_AGE"] == 60
    assert result["DATABASE_ROUTERS"] == [ROUTER]
    assert result["ARENA_SCALE_READ_REPLICAS"] == ["replica_1", "replica_2"]
    assert "ARENA_SCALE_PGBOUNCER" not in result


def test_pgbouncer_disables_server_side_cursors_and_turns_the_checks_on() -> None:
    result = database_settings(PRIMARY, ["postgres://ro:pw@r1/arena"], pgbouncer=["default"])
    assert result["DATABASES"]["default"]["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert "DISABLE_SERVER_SIDE_CURSORS" not in result["DATABASES"]["replica_1"]
    assert result["ARENA_SCALE_PGBOUNCER"] == ["default"]
    assert database_settings(PRIMARY, pgbouncer=True)["ARENA_SCALE_PGBOUNCER"] is True


def test_no_url_is_the_default_entry() -> None:
    assert database_settings(None, default=SQLITE) == {"DATABASES": {"default": SQLITE}}
    assert database_settings("  ", None, default=SQLITE) == {"DATABASES": {"default": SQLITE}}


def test_sqlite_urls() -> None:
    assert parse_database_url("sqlite:///db.sqlite3")["NAME"] == "db.sqlite3"
    assert parse_database_url("sqlite:////var/lib/arena.db")["NAME"] == "/var/lib/arena.db"
    assert parse_database_url("sqlite://:memory:")["NAME"] == ":memory:"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u:s3cret@h/db", "scheme 'mysql'"),
        ("db.internal/arena", "has no scheme"),
        ("postgres://u:s3cret@/arena", "has no host"),
        ("postgres://u:s3cret@h", "has no database name"),
        ("postgres://u:s3cret@h:99999/arena", "has a port that cannot be parsed"),
        ("postgres://u:s3/cret@h/arena", "'@' after the host"),
    ],
)
def test_bad_url_names_the_problem_and_never_the_password(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match="expected postgres://") as info:
        parse_database_url(url)
    message = str(info.value)
    assert reason in message
    assert "s3cret" not in message
    assert "s3" not in message.replace("postgres", "")


def test_bad_arguments_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="without a primary URL"):
        database_settings(None, "postgres://ro:pw@r1/arena", default=SQLITE)
    with pytest.raises(ValueError, match="no primary URL and no default"):
        database_settings("")
    with pytest.raises(ValueError, match=r"connect_timeout must be >= 2.*1"):
        database_settings(PRIMARY, connect_timeout=1)
    with pytest.raises(ValueError, match=r"conn_max_age .* -1"):
        database_settings(PRIMARY, conn_max_age=-1)
    with pytest.raises(ValueError, match=r"pgbouncer names \['replica_9'\]"):
        database_settings(PRIMARY, pgbouncer=["replica_9"])
    with pytest.raises(ValueError, match="read replica but not PostgreSQL"):
        database_settings(PRIMARY, "sqlite:///r.db")
    with pytest.raises(TypeError, match="replica URLs must be str, not int"):
        database_settings(PRIMARY, [1])  # type: ignore[list-item]
