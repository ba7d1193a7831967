"""``django_arena_scale._conf``: each setting declared once, everything else derived from it."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from django.test import override_settings

from django_arena_scale._conf import PREFIX, SETTINGS, ArenaScaleSettings, Setting, conf
from django_arena_scale.health import _fastconf as fastconf

# The bounds the range check (E031) has always applied: (lowest value, inclusive).
EXPECTED_BOUNDS = {
    "PROBE_TIMEOUT": (0.0, False),
    "READY_DEADLINE": (0.0, False),
    "CHECK_TIMEOUT": (0.0, False),
    "CHECK_CACHE_TTL": (0.0, True),
    "HEARTBEAT_TIMEOUT": (0.0, False),
    "SHUTDOWN_HOOK_TIMEOUT": (0.0, False),
    "SSE_RECONNECT_MS": (0.0, True),
    "REPLICAS": (1.0, True),
    "READ_YOUR_WRITES": (0.0, True),
    "REPLICA_MAX_LAG": (0.0, False),
    "REPLICA_CHECK_INTERVAL": (0.0, False),
    "REPLICA_CHECK_TIMEOUT": (0.0, False),
}


def test_conf_registry_is_the_class_declarations() -> None:
    """SETTINGS holds exactly the Setting attributes of ArenaScaleSettings, named after them."""
    declared = {k: v for k, v in vars(ArenaScaleSettings).items() if isinstance(v, Setting)}
    assert declared == SETTINGS
    assert all(setting.name == name for name, setting in SETTINGS.items())
    assert all(s.full_name == PREFIX + name for name, s in SETTINGS.items())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_conf_accessor_unset_is_the_typed_default(name: str) -> None:
    """conf.<NAME> with nothing in the settings is the declared default, converted."""
    setting = SETTINGS[name]
    with override_settings():
        from django.conf import settings

        if hasattr(settings, setting.full_name):
            delattr(settings, setting.full_name)
        assert getattr(conf, name) == setting.default_value()
        assert setting.accepts(setting.default)


def test_conf_accessor_follows_override_settings() -> None:
    """Values are read on each access and converted by the declaration."""
    assert conf.PROBE_TIMEOUT == 1.0
    with override_settings(ARENA_SCALE_PROBE_TIMEOUT=3, ARENA_SCALE_PROBE_PREFIX="-"):
        assert (conf.PROBE_TIMEOUT, type(conf.PROBE_TIMEOUT)) == (3.0, float)
        assert conf.PROBE_PREFIX == "/-/"
    with override_settings(ARENA_SCALE_STATUS_TOKEN="", ARENA_SCALE_DATABASE_CHECKS=("a",)):
        assert conf.STATUS_TOKEN is None
        assert conf.DATABASE_CHECKS == ["a"]
    assert conf.PROBE_TIMEOUT == 1.0


def test_conf_accessor_converts_containers_to_fresh_copies() -> None:
    """A list or dict setting is copied, so callers cannot change the settings through it."""
    with override_settings(ARENA_SCALE_DEPLOY={"replicas": 2}, ARENA_SCALE_CHECKS=("x.y",)):
        deploy = conf.DEPLOY
        deploy["replicas"] = 9
        assert conf.DEPLOY == {"replicas": 2}
        assert conf.CHECKS == ["x.y"]


def test_conf_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        conf.NO_SUCH_SETTING  # type: ignore[attr-defined]  # noqa: B018


def test_conf_class_attribute_is_the_declaration() -> None:
    """On the class, a setting is its declaration (for docs and checks), not a value."""
    assert ArenaScaleSettings.REPLICAS is SETTINGS["REPLICAS"]
    assert conf.raw("REPLICAS") == 1


# --- ranges -------------------------------------------------------------------------------------


def test_conf_ranges_are_the_ones_e031_applies() -> None:
    """Every bound lives in the declaration, with the values the range check always used."""
    declared = {name: s.bounds for name, s in SETTINGS.items() if s.bounds is not None}
    assert declared == EXPECTED_BOUNDS


def test_conf_every_numeric_setting_declares_a_range() -> None:
    """A number without bounds would escape E031: each int/float setting has a lowest value."""
    numeric = [
        n for n, s in SETTINGS.items() if {int, float} & set(s.types) and bool not in s.types
    ]
    assert sorted(numeric) == sorted(EXPECTED_BOUNDS)


@pytest.mark.parametrize(
    ("name", "value", "inside"),
    [
        ("PROBE_TIMEOUT", 0.0, False),
        ("PROBE_TIMEOUT", 1e-9, True),
        ("CHECK_CACHE_TTL", 0.0, True),
        ("CHECK_CACHE_TTL", -1e-9, False),
        ("REPLICAS", 1, True),
        ("REPLICAS", 0, False),
        ("HEARTBEAT_TIMEOUT", math.inf, False),
        ("HEARTBEAT_TIMEOUT", math.nan, False),
        ("PROBE_PREFIX", 0.0, True),
    ],
)
def test_conf_in_range(name: str, value: float, inside: bool) -> None:
    assert SETTINGS[name].in_range(value) is inside


def test_conf_range_text() -> None:
    assert [SETTINGS[n].range_text() for n in ("PROBE_TIMEOUT", "REPLICAS", "CHECKS")] == [
        "> 0",
        ">= 1",
        "",
    ]


# --- the probe path (fastconf) ------------------------------------------------------------------


def test_fastconf_reads_the_declaration_and_follows_override_settings() -> None:
    assert fastconf.get("READY_DEADLINE") == 0.8
    with override_settings(ARENA_SCALE_READY_DEADLINE=0.3):
        assert fastconf.get("READY_DEADLINE") == 0.3
    assert fastconf.get("READY_DEADLINE") == 0.8


@pytest.mark.parametrize(
    ("name", "wrong"),
    [("READY_DEADLINE", "fast"), ("PROBE_PREFIX", 42), ("STATUS_ALLOWED_CIDRS", 5)],
)
def test_fastconf_unconvertible_value_falls_back_to_the_default(
    name: str, wrong: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A probe gets the declared default (and a log line), never an exception."""
    with override_settings(**{PREFIX + name: wrong}), caplog.at_level(logging.WARNING):
        assert fastconf.get(name) == SETTINGS[name].default_value()
    assert f"{PREFIX}{name} is invalid" in caplog.text
