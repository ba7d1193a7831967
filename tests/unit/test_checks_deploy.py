"""Checks comparing ``ARENA_SCALE_DEPLOY`` (the generated configs) with the app's settings."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import CheckMessage, run_checks
from django.core.management import call_command
from django.test import override_settings

from django_arena_scale import checks
from django_arena_scale.deploy import RENDERERS
from django_arena_scale.deploy import _checks as deploy_checks
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy._spec import DeploymentSpec

DEFAULT_SPEC = DeploymentSpec()
COMPOSE_DRAIN_FILE = DEFAULT_SPEC.app_environment["ARENA_SCALE_DRAIN_FILE"]
K8S_DRAIN_FILE = k8s.config_map_env(DEFAULT_SPEC)["ARENA_SCALE_DRAIN_FILE"]
# A valid spec, and the drain file docker-compose.yml sets (so W053 stays quiet).
DEPLOY = {"replicas": 2}
QUIET = {"ARENA_SCALE_DRAIN_FILE": COMPOSE_DRAIN_FILE}
BROKEN_DEPLOY = {"replicas": "many", "probe_prefix": 5, "no_such_field": 1}


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id is not None]


def run_ours(*, deploy: bool = True) -> list[CheckMessage]:
    return run_checks(tags=[checks.TAG], include_deployment_checks=deploy)


# --- W050: ARENA_SCALE_DEPLOY is not a valid spec -------------------------------------------------


@override_settings(ARENA_SCALE_DEPLOY={"replicas": 0})
def test_check_w050_invalid_deploy_spec() -> None:
    """A spec generate_lb_config would refuse is W050, quoting the spec's own error."""
    messages = checks.check_deploy_spec()
    assert ids(messages) == ["django_arena_scale.W050"]
    assert "replicas must be an integer" in messages[0].msg


@override_settings(ARENA_SCALE_DEPLOY={"replicass": 3})
def test_check_w050_unknown_field_suggests_the_close_one() -> None:
    """A misspelt spec field is W050 with the spec's "did you mean"."""
    assert "'replicas'" in checks.check_deploy_spec()[0].msg


@override_settings(ARENA_SCALE_DEPLOY=DEPLOY)
def test_check_w050_valid_deploy_spec_is_fine() -> None:
    """A valid spec raises nothing."""
    assert checks.check_deploy_spec() == []


@override_settings(ARENA_SCALE_DEPLOY=["replicas", 3])
def test_check_w050_wrong_type_is_left_to_e002() -> None:
    """A DEPLOY that is not a dict is E002's, not W050's."""
    assert checks.check_deploy_spec() == []


@override_settings(ARENA_SCALE_DEPLOY=BROKEN_DEPLOY)
def test_check_w050_runs_without_deploy() -> None:
    """A plain `manage.py check` reports an invalid spec."""
    assert "django_arena_scale.W050" in ids(run_ours(deploy=False))


@override_settings(ARENA_SCALE_DEPLOY=BROKEN_DEPLOY, ARENA_SCALE_PROBE_PREFIX="/-/")
def test_checks_broken_deploy_spec_does_not_crash_check() -> None:
    """`manage.py check --deploy` with a broken spec reports W050 and exits normally."""
    stderr = io.StringIO()
    call_command("check", deploy=True, tag=[checks.TAG], stdout=io.StringIO(), stderr=stderr)
    assert "django_arena_scale.W050" in stderr.getvalue()
    assert "django_arena_scale.W099" not in stderr.getvalue()


@override_settings(ARENA_SCALE_DEPLOY=BROKEN_DEPLOY, ARENA_SCALE_PROBE_TIMEOUT=5)
def test_checks_broken_deploy_spec_skips_the_comparisons() -> None:
    """With an invalid spec only W050 speaks for it: no comparison runs on a half-built spec."""
    found = ids(run_ours())
    assert found.count("django_arena_scale.W050") == 1
    assert not {f"django_arena_scale.W05{n}" for n in range(1, 5)} & set(found)


# --- W051: probe prefix --------------------------------------------------------------------------


@override_settings(**QUIET, ARENA_SCALE_DEPLOY={**DEPLOY, "probe_prefix": "/-/"})
def test_check_w051_probe_prefix_differs() -> None:
    """The generated probes under another prefix than ProbeMiddleware's is W051."""
    messages = checks.check_deploy_probe_prefix()
    assert ids(messages) == ["django_arena_scale.W051"]
    assert "ARENA_SCALE_PROBE_PREFIX '/'" in messages[0].msg
    assert "ARENA_SCALE_DEPLOY['probe_prefix'] ('/-/')" in messages[0].msg
    assert "ARENA_SCALE_DEPLOY['probe_prefix'] = '/'" in (messages[0].hint or "")


@override_settings(**QUIET, ARENA_SCALE_DEPLOY=DEPLOY, ARENA_SCALE_PROBE_PREFIX="/-/")
def test_check_w051_default_spec_prefix_differs() -> None:
    """A moved app prefix against the spec's default prefix is W051, naming the default."""
    messages = checks.check_deploy_probe_prefix()
    assert ids(messages) == ["django_arena_scale.W051"]
    assert "the default" in messages[0].msg


@override_settings(
    **QUIET, ARENA_SCALE_DEPLOY={**DEPLOY, "probe_prefix": "/-/"}, ARENA_SCALE_PROBE_PREFIX="-"
)
def test_check_w051_same_prefix_is_fine() -> None:
    """Prefixes equal once normalised ('-' is '/-/') raise nothing."""
    assert checks.check_deploy_probe_prefix() == []


@override_settings(ARENA_SCALE_PROBE_PREFIX="/-/")
def test_check_w051_needs_a_deploy_spec() -> None:
    """Without ARENA_SCALE_DEPLOY there is no generated config to disagree with."""
    assert checks.check_deploy_probe_prefix() == []


@override_settings(**QUIET, ARENA_SCALE_DEPLOY={**DEPLOY, "probe_prefix": "/-/"})
def test_check_w051_is_deploy_only() -> None:
    """The comparison runs with --deploy (production settings and environment) only."""
    assert "django_arena_scale.W051" in ids(run_ours(deploy=True))
    assert "django_arena_scale.W051" not in ids(run_ours(deploy=False))


# --- W052: shutdown hooks within the app's graceful budget ---------------------------------------


@override_settings(
    **QUIET,
    ARENA_SCALE_DEPLOY={**DEPLOY, "app_graceful_timeout": 5},
    ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT=5,
)
def test_check_w052_hook_timeout_not_below_app_graceful_timeout() -> None:
    """A per-hook limit as long as the app's whole drain budget is W052."""
    messages = checks.check_deploy_shutdown_budget()
    assert ids(messages) == ["django_arena_scale.W052"]
    assert "ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT (5 s per hook)" in messages[0].msg
    assert "ARENA_SCALE_DEPLOY['app_graceful_timeout'] (5 s)" in messages[0].msg
    assert "ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT = 1.25" in (messages[0].hint or "")


@override_settings(
    **QUIET,
    ARENA_SCALE_DEPLOY={**DEPLOY, "app_graceful_timeout": 5},
    ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT=4.9,
)
def test_check_w052_hook_timeout_below_app_graceful_timeout_is_fine() -> None:
    """A per-hook limit below the app's budget raises nothing."""
    assert checks.check_deploy_shutdown_budget() == []


@override_settings(ARENA_SCALE_SHUTDOWN_HOOK_TIMEOUT=600)
def test_check_w052_needs_a_deploy_spec() -> None:
    """Without ARENA_SCALE_DEPLOY the hook limit has no budget to be compared with."""
    assert checks.check_deploy_shutdown_budget() == []


# --- W053: drain file ----------------------------------------------------------------------------


@override_settings(ARENA_SCALE_DEPLOY=DEPLOY, ARENA_SCALE_DRAIN_FILE=None)
def test_check_w053_drain_file_not_set() -> None:
    """No drain file while the generated configs drain with `manage.py drain on` is W053."""
    messages = checks.check_deploy_drain_file()
    assert ids(messages) == ["django_arena_scale.W053"]
    assert "ARENA_SCALE_DRAIN_FILE is not set" in messages[0].msg
    assert repr(COMPOSE_DRAIN_FILE) in messages[0].msg
    assert "os.environ.get('ARENA_SCALE_DRAIN_FILE')" in (messages[0].hint or "")


@override_settings(ARENA_SCALE_DEPLOY=DEPLOY, ARENA_SCALE_DRAIN_FILE="/srv/app/drain")
def test_check_w053_drain_file_elsewhere() -> None:
    """A drain file other than the one the generated environment sets is W053."""
    messages = checks.check_deploy_drain_file()
    assert ids(messages) == ["django_arena_scale.W053"]
    assert "'/srv/app/drain'" in messages[0].msg
    assert repr(K8S_DRAIN_FILE) in messages[0].msg


@pytest.mark.parametrize("path", [COMPOSE_DRAIN_FILE, K8S_DRAIN_FILE])
def test_check_w053_generated_drain_file_is_fine(path: str) -> None:
    """The compose or the Kubernetes drain file (read from the environment) raises nothing."""
    with override_settings(ARENA_SCALE_DEPLOY=DEPLOY, ARENA_SCALE_DRAIN_FILE=path):
        assert checks.check_deploy_drain_file() == []


@override_settings(ARENA_SCALE_DEPLOY={**DEPLOY, "target": "local"}, ARENA_SCALE_DRAIN_FILE=None)
def test_check_w053_local_target_is_fine() -> None:
    """The local variant's runner sets a drain file per replica itself."""
    assert checks.check_deploy_drain_file() == []


@override_settings(ARENA_SCALE_DRAIN_FILE=None)
def test_check_w053_needs_a_deploy_spec() -> None:
    """Without ARENA_SCALE_DEPLOY nothing says the replicas are drained by a script."""
    assert checks.check_deploy_drain_file() == []


# --- W054 / E030: probe timeout ------------------------------------------------------------------


@override_settings(**QUIET, ARENA_SCALE_DEPLOY=DEPLOY, ARENA_SCALE_PROBE_TIMEOUT=1)
def test_check_w054_probe_timeout_differs() -> None:
    """An explicit ARENA_SCALE_PROBE_TIMEOUT other than the spec's is W054."""
    messages = checks.check_deploy_probe_timeout()
    assert ids(messages) == ["django_arena_scale.W054"]
    assert "ARENA_SCALE_PROBE_TIMEOUT is 1 s" in messages[0].msg
    shown = f"ARENA_SCALE_DEPLOY['probe_timeout'] ({DEFAULT_SPEC.probe_timeout} s, the default)"
    assert shown in messages[0].msg
    assert f"ARENA_SCALE_PROBE_TIMEOUT = {DEFAULT_SPEC.probe_timeout}" in (messages[0].hint or "")


@override_settings(
    **QUIET, ARENA_SCALE_DEPLOY={**DEPLOY, "probe_timeout": 3}, ARENA_SCALE_PROBE_TIMEOUT=3.0
)
def test_check_w054_same_probe_timeout_is_fine() -> None:
    """An explicit probe timeout equal to the spec's raises nothing."""
    assert checks.check_deploy_probe_timeout() == []


@override_settings(**QUIET, ARENA_SCALE_DEPLOY=DEPLOY)
def test_check_w054_default_probe_timeout_is_fine() -> None:
    """The registry's default PROBE_TIMEOUT (unset) is no declaration: the spec's value rules."""
    assert checks.check_deploy_probe_timeout() == []


@override_settings(
    **QUIET,
    ARENA_SCALE_DEPLOY={**DEPLOY, "probe_timeout": 2},
    ARENA_SCALE_PROBE_TIMEOUT=5,
    ARENA_SCALE_READY_DEADLINE=2.5,
)
def test_check_e030_uses_the_spec_probe_timeout() -> None:
    """With ARENA_SCALE_DEPLOY set, E030 compares the deadline with the spec's probe timeout."""
    messages = checks.check_ready_deadline()
    assert ids(messages) == ["django_arena_scale.E030"]
    assert "ARENA_SCALE_DEPLOY['probe_timeout'] (2 s)" in messages[0].msg
    assert "ARENA_SCALE_READY_DEADLINE = 1.6" in (messages[0].hint or "")


@override_settings(
    **QUIET,
    ARENA_SCALE_DEPLOY={**DEPLOY, "probe_timeout": 3},
    ARENA_SCALE_PROBE_TIMEOUT=1,
    ARENA_SCALE_READY_DEADLINE=2.5,
)
def test_check_e030_spec_probe_timeout_above_deadline_is_fine() -> None:
    """A deadline below the spec's probe timeout passes, whatever PROBE_TIMEOUT says."""
    assert checks.check_ready_deadline() == []


@override_settings(
    ARENA_SCALE_DEPLOY={"probe_timeout": 99},
    ARENA_SCALE_PROBE_TIMEOUT=1,
    ARENA_SCALE_READY_DEADLINE=2,
)
def test_check_e030_invalid_spec_falls_back_to_probe_timeout() -> None:
    """An invalid spec (W050) leaves E030 on ARENA_SCALE_PROBE_TIMEOUT."""
    messages = checks.check_ready_deadline()
    assert ids(messages) == ["django_arena_scale.E030"]
    assert "ARENA_SCALE_PROBE_TIMEOUT (1 s)" in messages[0].msg


# --- the whole set -------------------------------------------------------------------------------


@override_settings(**QUIET, ARENA_SCALE_DEPLOY=DEPLOY)
def test_checks_deploy_spec_matching_settings_are_clean() -> None:
    """A spec that agrees with the settings adds no message to the tests' clean settings."""
    found = ids(run_ours())
    assert [i for i in found if i.startswith("django_arena_scale.W05")] == []


# --- W055: static files --------------------------------------------------------------------------

WITH_STATICFILES = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "django_arena_scale",
]
STATIC_OK = {
    **QUIET,
    "ARENA_SCALE_DEPLOY": DEPLOY,
    "INSTALLED_APPS": WITH_STATICFILES,
    "STATIC_URL": DEFAULT_SPEC.static_url,
    "STATIC_ROOT": DEFAULT_SPEC.static_root,
}


def test_check_w055_matching_static_settings_are_fine() -> None:
    """STATIC_URL and STATIC_ROOT where the generated nginx and volume are raise nothing."""
    with override_settings(**STATIC_OK):
        assert checks.check_deploy_static_files() == []


def test_check_w055_relative_static_url_is_fine() -> None:
    """A relative STATIC_URL ('static/') is the same path behind the generated nginx."""
    with override_settings(**{**STATIC_OK, "STATIC_URL": DEFAULT_SPEC.static_url.lstrip("/")}):
        assert checks.check_deploy_static_files() == []


def test_check_w055_static_url_differs() -> None:
    """A STATIC_URL nginx does not serve from the collected files is W055."""
    with override_settings(**{**STATIC_OK, "STATIC_URL": "/assets/"}):
        messages = checks.check_deploy_static_files()
    assert ids(messages) == ["django_arena_scale.W055"]
    assert "STATIC_URL is '/assets/'" in messages[0].msg
    assert "ARENA_SCALE_DEPLOY['static_url'] = '/assets/'" in (messages[0].hint or "")


def test_check_w055_static_root_differs() -> None:
    """A STATIC_ROOT other than the mounted static volume is W055."""
    with override_settings(**{**STATIC_OK, "STATIC_ROOT": "/srv/static"}):
        messages = checks.check_deploy_static_files()
    assert ids(messages) == ["django_arena_scale.W055"]
    assert "STATIC_ROOT is '/srv/static'" in messages[0].msg
    assert repr(DEFAULT_SPEC.static_root) in messages[0].msg


def test_check_w055_cdn_static_url_is_fine() -> None:
    """Static files on another host are not nginx's business."""
    with override_settings(**{**STATIC_OK, "STATIC_URL": "https://cdn.example.com/static/"}):
        assert checks.check_deploy_static_files() == []


def test_check_w055_needs_staticfiles() -> None:
    """Without django.contrib.staticfiles there is nothing to collect or serve."""
    apps = [app for app in WITH_STATICFILES if app != "django.contrib.staticfiles"]
    with override_settings(**{**STATIC_OK, "INSTALLED_APPS": apps, "STATIC_URL": "/assets/"}):
        assert checks.check_deploy_static_files() == []


# --- where the deployment checks live ------------------------------------------------------------


def test_checks_deploy_checks_read_the_spec_not_the_renderers() -> None:
    """The check modules import no renderer: they compare the spec's data with the settings."""
    renderers = {name for names in RENDERERS.values() for name in names}
    sources = [Path(deploy_checks.__file__), *Path(checks.__file__).parent.glob("*.py")]
    imported: set[str] = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
    assert "django_arena_scale.deploy._spec" in imported
    assert sorted(imported & renderers) == []


def test_checks_deploy_checks_importable_first() -> None:
    """Importing django_arena_scale.deploy._checks before the package registers all the checks."""
    code = (
        "import django_arena_scale.deploy._checks\n"
        "import django\n"
        "django.setup()\n"
        "from django.core.checks import run_checks\n"
        "from django.test.utils import override_settings\n"
        "from django_arena_scale.checks import TAG, check_deploy_spec\n"
        "with override_settings(ARENA_SCALE_DEPLOY={'replicas': 0}):\n"
        "    print({m.id for m in run_checks(tags=[TAG], include_deployment_checks=True)})\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "django_arena_scale.W050" in done.stdout
