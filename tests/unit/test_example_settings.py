"""The example project's settings: no public fallback SECRET_KEY, fault injection opt-in.

Each case imports ``arena_project.settings`` in a fresh interpreter with a chosen environment
(settings are read once per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"
PRINT = (
    "import json, arena_project.settings as s; "
    "print(json.dumps([s.DEBUG, s.SECRET_KEY, s.ARENA_EXAMPLE_FAULT_INJECTION]))"
)
CONTROLLED = ("SECRET_KEY", "DJANGO_DEBUG", "ARENA_EXAMPLE_FAULT_INJECTION")


def load(**env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    full.update(env, PYTHONPATH=str(EXAMPLE), DJANGO_SETTINGS_MODULE="arena_project.settings")
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=EXAMPLE,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_secret_key_without_debug_refuses_to_start() -> None:
    """DEBUG off and no SECRET_KEY: ImproperlyConfigured naming SECRET_KEY and how to make one."""
    result = load()
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr
    assert "dev-only-insecure-key" not in result.stdout


def test_empty_secret_key_refuses_too() -> None:
    assert "SECRET_KEY is not set" in load(SECRET_KEY="").stderr


def test_secret_key_from_environment() -> None:
    result = load(SECRET_KEY="a-real-secret-from-the-environment")
    assert json.loads(result.stdout) == [False, "a-real-secret-from-the-environment", False]


def test_debug_uses_the_fixed_dev_key_and_fault_injection_follows_debug_only_in_views() -> None:
    """DJANGO_DEBUG=1 may run without SECRET_KEY: a fixed dev key (shared by dev replicas)."""
    debug, key, injection = json.loads(load(DJANGO_DEBUG="1").stdout)
    assert debug is True
    assert key.startswith("django-insecure-")
    assert injection is False


def test_fault_injection_setting_from_environment() -> None:
    for raw, expected in [("1", True), ("true", True), ("0", False), ("", False)]:
        result = load(SECRET_KEY="s" * 50, ARENA_EXAMPLE_FAULT_INJECTION=raw)
        assert json.loads(result.stdout)[2] is expected, raw
