"""Every system check id of ``django_arena_scale.checks``, positive and negative."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_arena_scale import checks
from django_arena_scale._conf import SETTINGS
from django_arena_scale.checks import safe
from django_arena_scale.health import register_check, unregister_check
from django_arena_scale.redis import channel_layers, redis_cache, redis_sessions

PROBE = "django_arena_scale.middleware.ProbeMiddleware"
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CACHE_URL = "redis://:cachepw@redis-cache:6379/0"
SESSIONS_URL = "redis://:sesspw@redis-sessions:6379/0"
CHANNELS_URL = "redis://:chanpw@redis-channels:6379/0"
SEPARATE_REDIS = {
    **redis_sessions(SESSIONS_URL, caches=redis_cache(CACHE_URL)),
    "CHANNEL_LAYERS": channel_layers(CHANNELS_URL),
}


def healthy_check() -> None:
    """A loadable custom health check for ARENA_SCALE_CHECKS."""


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id is not None]


def run_ours(*, deploy: bool = True) -> list[CheckMessage]:
    """Run only this package's checks, through Django's registry."""
    return run_checks(tags=[checks.TAG], include_deployment_checks=deploy)


# --- registration -------------------------------------------------------------------------------


def test_checks_every_id_is_tested() -> None:
    """Each id the check modules define is asserted by some unit test."""
    package = Path(checks.__file__).parent
    sources = [*package.glob("*.py"), package.parent / "deploy" / "_checks.py"]
    pattern = r'id="(django_arena_scale\.[EW]\d{3})"'
    defined = {i for path in sources for i in re.findall(pattern, path.read_text("utf-8"))}
    tests = "".join(
        path.read_text("utf-8")
        for path in Path(__file__).parent.glob("test_*.py")
        if path.name != "test_readme.py"
    )
    assert len(defined) > 30
    assert sorted(i for i in defined if f'"{i}"' not in tests) == []


def test_checks_test_settings_are_clean() -> None:
    """The tests' own settings raise no message, even under --deploy."""
    assert ids(run_ours()) == []


@override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"])
def test_checks_deploy_only_messages_absent_without_deploy() -> None:
    """W001 (deploy-only) appears with --deploy and not without it."""
    assert "django_arena_scale.W001" in ids(run_ours(deploy=True))
    assert "django_arena_scale.W001" not in ids(run_ours(deploy=False))


@override_settings(ARENA_SCALE_READY_DEADLINE="fast")
def test_checks_type_errors_run_without_deploy() -> None:
    """Setting type errors (E002) are reported by a plain `manage.py check`."""
    assert "django_arena_scale.E002" in ids(run_ours(deploy=False))


@override_settings(ARENA_SCALE_REPLICAS=3, CHANNEL_LAYERS=channel_layers(None))
def test_checks_manage_py_check_deploy_fails_on_errors() -> None:
    """`manage.py check --deploy` exits with the error id and its hint."""
    with pytest.raises(SystemCheckError, match=r"django_arena_scale\.E012") as excinfo:
        call_command("check", deploy=True, tag=[checks.TAG])
    assert "channel_layers(" in str(excinfo.value)


@override_settings(ARENA_SCALE_REPLICAS=3, CHANNEL_LAYERS=channel_layers(None))
def test_checks_manage_py_check_skips_replica_checks() -> None:
    """Plain `manage.py check` leaves the replica checks to --deploy."""
    call_command("check", tag=[checks.TAG], stdout=io.StringIO())


def test_checks_every_message_has_a_hint(settings: Any) -> None:
    """Each message produced by a thoroughly wrong configuration carries a hint."""
    settings.MIDDLEWARE = ["django.middleware.common.CommonMiddleware", PROBE]
    settings.ARENA_SCALE_REPLICAS = 3
    settings.ARENA_SCALE_READY_DEADLNE = 2
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.file"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    messages = run_ours()
    assert len(messages) >= 4
    assert all(m.hint for m in messages)


# --- E001 / W001: ProbeMiddleware ----------------------------------------------------------------


@override_settings(MIDDLEWARE=["django.middleware.security.SecurityMiddleware", PROBE])
def test_check_e001_probe_middleware_not_first() -> None:
    """ProbeMiddleware after another middleware is E001, naming the one before it."""
    messages = checks.check_probe_middleware_first()
    assert ids(messages) == ["django_arena_scale.E001"]
    assert "SecurityMiddleware" in messages[0].msg


@override_settings(MIDDLEWARE=[PROBE, "django.middleware.security.SecurityMiddleware"])
def test_check_e001_probe_middleware_first_is_fine() -> None:
    """ProbeMiddleware first raises nothing."""
    assert checks.check_probe_middleware_first() == []


@override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"])
def test_check_w001_probe_middleware_missing() -> None:
    """No ProbeMiddleware at all is W001."""
    assert ids(checks.check_probe_middleware_present()) == ["django_arena_scale.W001"]


@override_settings(MIDDLEWARE=[PROBE])
def test_check_w001_probe_middleware_present() -> None:
    """ProbeMiddleware present raises no W001."""
    assert checks.check_probe_middleware_present() == []


@override_settings(MIDDLEWARE=["tests.unit.test_checks.SubclassedProbe"])
def test_check_w001_subclass_counts_as_probe_middleware() -> None:
    """A subclass of ProbeMiddleware placed first satisfies both checks."""
    assert checks.check_probe_middleware_present() + checks.check_probe_middleware_first() == []


def _subclass() -> type:
    from django_arena_scale.middleware import ProbeMiddleware

    return type("SubclassedProbe", (ProbeMiddleware,), {})


SubclassedProbe = _subclass()


# --- E002 / W002: ARENA_SCALE_* names and types --------------------------------------------------


@override_settings(ARENA_SCALE_READY_DEADLINE="0.8")
def test_check_e002_wrong_type() -> None:
    """A str where a number is expected is E002 naming the setting and the expected type."""
    messages = checks.check_setting_types()
    assert ids(messages) == ["django_arena_scale.E002"]
    assert "ARENA_SCALE_READY_DEADLINE must be int or float, not str" in messages[0].msg


@override_settings(ARENA_SCALE_REPLICAS=True)
def test_check_e002_bool_is_not_a_count() -> None:
    """True is not accepted as a replica count."""
    assert ids(checks.check_setting_types()) == ["django_arena_scale.E002"]


@override_settings(ARENA_SCALE_STATUS_TOKEN=12345678)
def test_check_e002_hides_token_value() -> None:
    """A wrongly typed status token is reported without its value."""
    messages = checks.check_setting_types()
    assert ids(messages) == ["django_arena_scale.E002"]
    assert "12345678" not in messages[0].msg


@override_settings(ARENA_SCALE_READY_DEADLINE=0.5, ARENA_SCALE_STATUS_TOKEN=None)
def test_check_e002_right_types_are_fine() -> None:
    """Values of the declared types (and None where nullable) raise nothing."""
    assert checks.check_setting_types() == []


@override_settings(ARENA_SCALE_READY_DEADLNE=0.5)
def test_check_w002_unknown_name_suggests_the_close_one() -> None:
    """A misspelt setting is W002 with a did-you-mean hint."""
    messages = checks.check_unknown_settings()
    assert ids(messages) == ["django_arena_scale.W002"]
    assert messages[0].hint == "Did you mean ARENA_SCALE_READY_DEADLINE?"


@override_settings(ARENA_SCALE_XYZZY=1)
def test_check_w002_unknown_name_without_close_match() -> None:
    """An unknown name with no close match points at the registry instead."""
    messages = checks.check_unknown_settings()
    assert ids(messages) == ["django_arena_scale.W002"]
    assert "django_arena_scale._conf.SETTINGS" in (messages[0].hint or "")


@override_settings(ARENA_SCALE_READY_DEADLINE=0.5)
def test_check_w002_known_names_are_fine() -> None:
    """Known ARENA_SCALE_* names raise no W002."""
    assert checks.check_unknown_settings() == []


# --- E003: Redis URLs ----------------------------------------------------------------------------


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://:hunter2pw@cache:port/0",
        }
    }
)
def test_check_e003_bad_cache_url_is_redacted() -> None:
    """A malformed cache URL is E003, naming the alias, without the password."""
    messages = checks.check_redis_urls()
    assert ids(messages) == ["django_arena_scale.E003"]
    assert "CACHES['default']" in messages[0].msg
    assert "hunter2pw" not in messages[0].msg


@override_settings(
    CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "cache:6379"}}
)
def test_check_e003_cache_location_without_scheme() -> None:
    """A Redis cache LOCATION without redis:// is E003."""
    assert ids(checks.check_redis_urls()) == ["django_arena_scale.E003"]


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["amqp://broker/"]},
        }
    }
)
def test_check_e003_bad_channel_layer_url() -> None:
    """A non-Redis URL in the channel layer hosts is E003."""
    assert ids(checks.check_redis_urls()) == ["django_arena_scale.E003"]


@override_settings(ARENA_SCALE_BREAKER_REDIS_URL="redis//cache:6379")
def test_check_e003_bad_breaker_url() -> None:
    """A malformed ARENA_SCALE_BREAKER_REDIS_URL is E003."""
    assert ids(checks.check_redis_urls()) == ["django_arena_scale.E003"]


@override_settings(**SEPARATE_REDIS, ARENA_SCALE_BREAKER_REDIS_URL="redis://b:6379/1")
def test_check_e003_valid_urls_are_fine() -> None:
    """URLs made by the helpers (and a valid breaker URL) raise nothing."""
    assert checks.check_redis_urls() == []


# --- E007: sessions cache alias ------------------------------------------------------------------


@override_settings(
    CACHES=LOCMEM,
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
    SESSION_CACHE_ALIAS="sessions",
)
def test_check_e007_session_cache_alias_missing() -> None:
    """Cache sessions on an alias CACHES does not define is E007."""
    messages = checks.check_session_cache_alias()
    assert ids(messages) == ["django_arena_scale.E007"]
    assert "'sessions'" in messages[0].msg


@override_settings(**SEPARATE_REDIS)
def test_check_e007_session_cache_alias_defined_is_fine() -> None:
    """The alias added by redis_sessions raises nothing."""
    assert checks.check_session_cache_alias() == []


@override_settings(CACHES=LOCMEM, SESSION_CACHE_ALIAS="nowhere")
def test_check_e007_database_sessions_ignore_the_alias() -> None:
    """Database sessions do not use SESSION_CACHE_ALIAS, so a stray value is fine."""
    assert checks.check_session_cache_alias() == []


# --- E004 / E005: health-check registry ----------------------------------------------------------


@pytest.fixture
def two_checks_named_alike() -> Iterator[None]:
    def first() -> None: ...

    def second() -> None: ...

    register_check(name="llm")(first)
    register_check(name="llm")(second)
    yield
    unregister_check("llm")


@pytest.mark.usefixtures("two_checks_named_alike")
def test_check_e004_duplicate_health_check_names() -> None:
    """Two health checks registered under one name are E004."""
    messages = checks.check_health_check_names()
    assert ids(messages) == ["django_arena_scale.E004"]
    assert "'llm'" in messages[0].msg


def test_check_e004_unique_names_are_fine() -> None:
    """Distinct health-check names raise nothing."""
    assert checks.check_health_check_names() == []


@override_settings(ARENA_SCALE_CHECKS=["tests.unit.test_checks.no_such_check"])
def test_check_e005_check_path_cannot_be_loaded() -> None:
    """An ARENA_SCALE_CHECKS path that does not import is E005."""
    messages = checks.check_health_check_paths()
    assert ids(messages) == ["django_arena_scale.E005"]
    assert "no_such_check" in messages[0].msg


@override_settings(ARENA_SCALE_CHECKS=["tests.unit.test_checks.healthy_check"])
def test_check_e005_loadable_path_is_fine() -> None:
    """A loadable ARENA_SCALE_CHECKS path raises nothing."""
    assert checks.check_health_check_paths() == []


# --- E006: networks ------------------------------------------------------------------------------


@override_settings(ARENA_SCALE_TRUSTED_PROXIES=["10.0.0.0/8", "10.0.0.300"])
def test_check_e006_bad_network() -> None:
    """An entry that is not an IP network is E006 naming it."""
    messages = checks.check_networks()
    assert ids(messages) == ["django_arena_scale.E006"]
    assert "'10.0.0.300'" in messages[0].msg


@override_settings(ARENA_SCALE_STATUS_ALLOWED_CIDRS=["10.0.0.0/8", "192.168.1.7", "fd00::/8"])
def test_check_e006_networks_are_fine() -> None:
    """Networks and single addresses, IPv4 and IPv6, raise nothing."""
    assert checks.check_networks() == []


# --- E010 / E011 / E012 / W010: per-process state with several replicas --------------------------


@override_settings(
    ARENA_SCALE_REPLICAS=2,
    CACHES=LOCMEM,
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
)
def test_check_e010_cache_sessions_on_local_memory() -> None:
    """Cache sessions on a LocMemCache with 2 replicas is E010."""
    assert ids(checks.check_per_process_sessions()) == ["django_arena_scale.E010"]


@override_settings(
    ARENA_SCALE_DEPLOY={"replicas": 2},
    CACHES=LOCMEM,
    SESSION_ENGINE="django.contrib.sessions.backends.cached_db",
)
def test_check_e010_cached_db_sessions_on_local_memory() -> None:
    """cached_db on a per-process cache (replicas from ARENA_SCALE_DEPLOY) is E010 too."""
    assert ids(checks.check_per_process_sessions()) == ["django_arena_scale.E010"]


@override_settings(
    ARENA_SCALE_REPLICAS=1, CACHES=LOCMEM, SESSION_ENGINE="django.contrib.sessions.backends.cache"
)
def test_check_e010_single_replica_is_fine() -> None:
    """With one replica, per-process sessions are not reported."""
    assert checks.check_per_process_sessions() == []


@override_settings(ARENA_SCALE_REPLICAS=4, **SEPARATE_REDIS)
def test_check_e010_redis_sessions_are_fine() -> None:
    """Sessions on Redis raise nothing with several replicas."""
    assert checks.check_per_process_sessions() == []


@override_settings(ARENA_SCALE_DEPLOY={"replicas": 3}, SESSION_ENGINE=checks.FILE_SESSION_ENGINE)
def test_check_e011_file_sessions() -> None:
    """File sessions with several replicas is E011."""
    assert ids(checks.check_per_process_sessions()) == ["django_arena_scale.E011"]


@override_settings(ARENA_SCALE_REPLICAS=1, SESSION_ENGINE=checks.FILE_SESSION_ENGINE)
def test_check_e011_file_sessions_single_replica_is_fine() -> None:
    """File sessions with one replica raise nothing."""
    assert checks.check_per_process_sessions() == []


@override_settings(ARENA_SCALE_REPLICAS=2, CHANNEL_LAYERS=channel_layers(None))
def test_check_e012_in_memory_channel_layer() -> None:
    """The in-memory channel layer with several replicas is E012."""
    assert ids(checks.check_per_process_channel_layer()) == ["django_arena_scale.E012"]


@override_settings(ARENA_SCALE_REPLICAS=2, CHANNEL_LAYERS=channel_layers(CHANNELS_URL))
def test_check_e012_redis_channel_layer_is_fine() -> None:
    """A Redis channel layer raises nothing."""
    assert checks.check_per_process_channel_layer() == []


@override_settings(ARENA_SCALE_REPLICAS=2, CACHES=LOCMEM)
def test_check_w010_local_memory_cache() -> None:
    """A LocMemCache alias with several replicas is W010."""
    assert ids(checks.check_per_process_cache()) == ["django_arena_scale.W010"]


@override_settings(ARENA_SCALE_REPLICAS=2, CACHES=redis_cache(CACHE_URL))
def test_check_w010_redis_cache_is_fine() -> None:
    """A Redis cache raises no W010."""
    assert checks.check_per_process_cache() == []


@override_settings(ARENA_SCALE_DEPLOY={"target": "compose"}, CACHES=LOCMEM)
def test_check_w010_deploy_spec_defaults_to_several_replicas() -> None:
    """A deployment spec without 'replicas' declares the spec's default (several) replicas."""
    assert checks.declared_replicas() > 1
    assert ids(checks.check_per_process_cache()) == ["django_arena_scale.W010"]


@override_settings(ARENA_SCALE_DEPLOY={"replicas": 1}, CACHES=LOCMEM)
def test_check_w010_deploy_spec_with_one_replica_is_fine() -> None:
    """ARENA_SCALE_DEPLOY with replicas=1 declares a single replica."""
    assert checks.check_per_process_cache() == []


@override_settings(ARENA_SCALE_REPLICAS="2", CACHES=LOCMEM)
def test_check_w010_malformed_replicas_counts_as_one() -> None:
    """A wrongly typed replica count is left to E002 and means one replica here."""
    assert checks.check_per_process_cache() == []


# --- W020 / W021: Redis roles sharing one server -------------------------------------------------


@override_settings(
    **redis_sessions(
        "redis://:sesspw@127.0.0.1:6379/5", caches=redis_cache("redis://localhost:6379/0")
    )
)
def test_check_w020_sessions_on_the_cache_server() -> None:
    """Sessions on the cache's Redis server (another db number) are W020, password hidden."""
    messages = checks.check_sessions_share_cache_redis()
    assert ids(messages) == ["django_arena_scale.W020"]
    assert "sesspw" not in messages[0].msg


@override_settings(
    CACHES=redis_cache(CACHE_URL),
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
    SESSION_CACHE_ALIAS="default",
)
def test_check_w020_sessions_in_the_default_cache() -> None:
    """Sessions stored in the general default Redis cache are W020."""
    assert ids(checks.check_sessions_share_cache_redis()) == ["django_arena_scale.W020"]


@override_settings(**SEPARATE_REDIS)
def test_check_w020_separate_servers_are_fine() -> None:
    """Sessions on their own Redis raise nothing."""
    assert checks.check_sessions_share_cache_redis() == []


@override_settings(
    **redis_sessions(
        "redis://localhost:6379/5",
        caches=redis_cache("redis://localhost:6379/0"),
        engine="cached_db",
    )
)
def test_check_w020_cached_db_sessions_are_fine() -> None:
    """cached_db sessions may share the cache server: the database stays the source of truth."""
    assert checks.check_sessions_share_cache_redis() == []


@override_settings(
    CACHES=redis_cache("redis://:cachepw@redis-cache:6379/0"),
    CHANNEL_LAYERS=channel_layers("redis://redis-cache:6379/3"),
)
def test_check_w021_channels_on_the_cache_server() -> None:
    """The channel layer on the cache's Redis server is W021."""
    messages = checks.check_channels_share_cache_redis()
    assert ids(messages) == ["django_arena_scale.W021"]
    assert "cachepw" not in messages[0].msg


@override_settings(**SEPARATE_REDIS)
def test_check_w021_separate_servers_are_fine() -> None:
    """A channel layer on its own Redis raises nothing."""
    assert checks.check_channels_share_cache_redis() == []


@override_settings(
    **redis_sessions(CHANNELS_URL, caches=redis_cache(CACHE_URL)),
    CHANNEL_LAYERS=channel_layers(CHANNELS_URL),
)
def test_check_w021_channels_with_sessions_are_fine() -> None:
    """Channels may share the (non-evicting) sessions Redis."""
    assert checks.check_channels_share_cache_redis() == []


# --- E030 / E031 / W030 / W031: durations --------------------------------------------------------


@override_settings(ARENA_SCALE_READY_DEADLINE=1.0, ARENA_SCALE_PROBE_TIMEOUT=1)
def test_check_e030_deadline_not_below_probe_timeout() -> None:
    """A readiness deadline equal to the probe timeout is E030 with a suggested value."""
    messages = checks.check_ready_deadline()
    assert ids(messages) == ["django_arena_scale.E030"]
    assert "ARENA_SCALE_READY_DEADLINE = 0.8" in (messages[0].hint or "")


@override_settings(ARENA_SCALE_READY_DEADLINE=0.8, ARENA_SCALE_PROBE_TIMEOUT=1)
def test_check_e030_deadline_below_probe_timeout_is_fine() -> None:
    """A deadline below the probe timeout raises nothing."""
    assert checks.check_ready_deadline() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROBE_TIMEOUT", 0),
        ("READY_DEADLINE", -0.5),
        ("CHECK_TIMEOUT", float("nan")),
        ("CHECK_CACHE_TTL", -1),
        ("HEARTBEAT_TIMEOUT", float("inf")),
        ("SHUTDOWN_HOOK_TIMEOUT", 0.0),
        ("SSE_RECONNECT_MS", -1),
        ("REPLICAS", 0),
        pytest.param("PROBE_TIMEOUT", 10**5000, id="PROBE_TIMEOUT-huge-int"),
    ],
)
def test_check_e031_out_of_range(name: str, value: float) -> None:
    """A non-positive, NaN or infinite duration (or a replica count of 0) is E031."""
    with override_settings(**{f"ARENA_SCALE_{name}": value}):
        messages = checks.check_ranges()
    assert ids(messages) == ["django_arena_scale.E031"]
    assert f"ARENA_SCALE_{name}" in messages[0].msg


@override_settings(ARENA_SCALE_CHECK_CACHE_TTL=0, ARENA_SCALE_SSE_RECONNECT_MS=0)
def test_check_e031_zero_where_allowed_is_fine() -> None:
    """A cache TTL of 0 (no reuse) and an SSE retry of 0 ms are allowed."""
    assert checks.check_ranges() == []


@override_settings(ARENA_SCALE_CHECK_TIMEOUT=2.0, ARENA_SCALE_READY_DEADLINE=0.8)
def test_check_w030_check_timeout_above_deadline() -> None:
    """A per-check timeout above the readiness deadline is W030."""
    assert ids(checks.check_check_timeout()) == ["django_arena_scale.W030"]


@override_settings(ARENA_SCALE_CHECK_TIMEOUT=0.8, ARENA_SCALE_READY_DEADLINE=0.8)
def test_check_w030_check_timeout_within_deadline_is_fine() -> None:
    """A per-check timeout equal to the deadline raises nothing."""
    assert checks.check_check_timeout() == []


@override_settings(ARENA_SCALE_CHECK_CACHE_TTL=30)
def test_check_w031_long_cache_ttl() -> None:
    """Reusing a readiness result for 30 s is W031."""
    assert ids(checks.check_cache_ttl()) == ["django_arena_scale.W031"]


@override_settings(ARENA_SCALE_CHECK_CACHE_TTL=1.0)
def test_check_w031_default_cache_ttl_is_fine() -> None:
    """The default 1 s TTL raises nothing."""
    assert checks.check_cache_ttl() == []


# --- W040: persistent database connections -------------------------------------------------------


@pytest.mark.parametrize("max_age", [60, None])
def test_check_w040_persistent_connections_without_health_checks(max_age: int | None) -> None:
    """CONN_MAX_AGE > 0 or None without CONN_HEALTH_CHECKS is W040."""
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "CONN_MAX_AGE": max_age}}
    assert ids(checks.persistent_connection_messages(databases)) == ["django_arena_scale.W040"]


@pytest.mark.parametrize(
    "extra", [{"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}, {"CONN_MAX_AGE": 0}, {}]
)
def test_check_w040_health_checked_or_short_lived_is_fine(extra: dict[str, Any]) -> None:
    """Health-checked or per-request connections raise nothing."""
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", **extra}}
    assert checks.persistent_connection_messages(databases) == []


def test_check_w040_reads_the_databases_setting() -> None:
    """The registered check looks at DATABASES (the tests' SQLite has no CONN_MAX_AGE)."""
    assert checks.check_persistent_connections() == []


# --- W099 and robustness: checks never raise -----------------------------------------------------


def test_check_w099_unexpected_error_becomes_a_warning() -> None:
    """A check that hits an unexpected error reports W099 instead of raising."""

    @safe
    def broken(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
        raise RuntimeError("secret-in-message")

    messages = broken()
    assert ids(messages) == ["django_arena_scale.W099"]
    assert "secret-in-message" not in messages[0].msg


@override_settings(
    MIDDLEWARE="not a list",
    CACHES="not a dict",
    CHANNEL_LAYERS={"default": "nonsense"},
    SESSION_ENGINE=None,
    SESSION_CACHE_ALIAS=5,
    ARENA_SCALE_DEPLOY={"replicas": "many"},
)
def test_checks_survive_malformed_django_settings() -> None:
    """Malformed non-ARENA settings never crash or trip the W099 safety net."""
    assert "django_arena_scale.W099" not in ids(run_ours())


def test_checks_report_every_wrongly_typed_setting() -> None:
    """Every ARENA_SCALE_* setting set to a wrong type gives exactly one E002 each, no crash."""
    wrong = {s.full_name: object() for s in SETTINGS.values()}
    with override_settings(**wrong):
        found = ids(run_ours())
    assert found.count("django_arena_scale.E002") == len(SETTINGS)
    assert "django_arena_scale.W099" not in found


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=12), st.integers()), max_size=3),
    st.dictionaries(st.sampled_from(["replicas", "x"]), st.integers(), max_size=2),
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.dictionaries(st.sampled_from(sorted(SETTINGS)), ANY_VALUE, max_size=6))
def test_checks_never_raise_on_arbitrary_setting_values(values: dict[str, Any]) -> None:
    """Any mix of ARENA_SCALE_* values is reported by checks, never raised or swallowed."""
    with override_settings(**{f"ARENA_SCALE_{k}": v for k, v in values.items()}):
        found = ids(run_ours())
    assert "django_arena_scale.W099" not in found


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "8.8.8.0/24", "10.0.0.0/7"])
def test_e008_trusted_proxies_must_be_private(network: str) -> None:
    """A trusted proxy network holding public addresses: E008 naming the entry."""
    with override_settings(ARENA_SCALE_TRUSTED_PROXIES=[network]):
        errors = [m for m in checks.check_networks() if m.id == "django_arena_scale.E008"]
    assert [repr(network) in e.msg for e in errors] == [True]


def test_e008_private_trusted_proxies_pass() -> None:
    """Loopback, RFC 1918 and ULA networks are accepted."""
    with override_settings(ARENA_SCALE_TRUSTED_PROXIES=["10.0.0.0/8", "127.0.0.1", "fd00::/8"]):
        assert checks.check_networks() == []
