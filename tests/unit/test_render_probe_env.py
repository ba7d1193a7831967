"""The probe settings the generated configs pass to the app, and their cross-file check."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from django_arena_scale._conf import PREFIX, SETTINGS
from django_arena_scale.deploy import Rendered, render_all
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy._crosscheck import K8S_CONFIG_MAP, problems
from django_arena_scale.deploy._spec import DeploymentSpec

EXAMPLE_SETTINGS = Path(__file__).resolve().parents[2] / "example_project/arena_project/settings.py"
MOVED = DeploymentSpec(probe_prefix="/-/", probe_timeout=3)


def rendered(spec: DeploymentSpec) -> Rendered:
    return render_all(spec)


def _app_environment(render: Rendered) -> dict[str, str]:
    """The ``environment`` of compose's shared app block (as built, before it is written)."""
    environment: dict[str, str] = render.data["docker-compose.yml"]["x-app"]["environment"]
    return environment


def _config_map_data(render: Rendered) -> dict[str, str]:
    data: dict[str, str] = render.data[K8S_CONFIG_MAP][0]["data"]
    return data


@pytest.mark.parametrize("spec", [DeploymentSpec(), MOVED], ids=["defaults", "moved"])
def test_render_app_environment_carries_the_probe_settings(spec: DeploymentSpec) -> None:
    """docker-compose.yml's app environment has the spec's probe prefix and timeout."""
    env = spec.app_environment
    assert (env["ARENA_SCALE_PROBE_PREFIX"], env["ARENA_SCALE_PROBE_TIMEOUT"]) == (
        spec.probe_prefix,
        str(spec.probe_timeout),
    )


def test_render_config_map_carries_the_probe_settings() -> None:
    """The Kubernetes ConfigMap passes the same probe prefix and timeout."""
    env = k8s.config_map_env(MOVED)
    assert (env["ARENA_SCALE_PROBE_PREFIX"], env["ARENA_SCALE_PROBE_TIMEOUT"]) == ("/-/", "3")


def test_render_local_stack_replicas_get_the_probe_settings(tmp_path: Path) -> None:
    """run_lb_stack's replicas get the spec's probe prefix and timeout in their environment."""
    from django_arena_scale.stack._runner import LocalStack

    spec = DeploymentSpec(target="local", probe_prefix="/-/", probe_timeout=3)
    env = LocalStack(spec, tmp_path).replica_env("web-1")
    assert (env["ARENA_SCALE_PROBE_PREFIX"], env["ARENA_SCALE_PROBE_TIMEOUT"]) == ("/-/", "3")


@pytest.mark.parametrize("spec", [DeploymentSpec(), MOVED], ids=["defaults", "moved"])
def test_render_crosscheck_probe_settings_agree(spec: DeploymentSpec) -> None:
    """A fresh render has no probe-settings disagreement."""
    assert problems(spec, rendered(spec)) == []


def test_render_crosscheck_catches_a_compose_probe_prefix_nginx_lacks() -> None:
    """A compose probe prefix without its nginx location (and k8s probe) is reported."""
    spec = DeploymentSpec()
    render = rendered(spec)
    assert _app_environment(render)["ARENA_SCALE_PROBE_PREFIX"] == "/"
    _app_environment(render)["ARENA_SCALE_PROBE_PREFIX"] = "/x/"
    found = problems(spec, render)
    assert "docker-compose.yml: nginx.conf has no location = /x/ready/" in found
    assert any("k8s/30-deployment-web.yaml's readinessProbe /ready/" in p for p in found)


def test_render_crosscheck_catches_a_config_map_probe_timeout() -> None:
    """A ConfigMap probe timeout other than the probes' is reported."""
    spec = DeploymentSpec()
    render = rendered(spec)
    assert _config_map_data(render)["ARENA_SCALE_PROBE_TIMEOUT"] == str(spec.probe_timeout)
    _config_map_data(render)["ARENA_SCALE_PROBE_TIMEOUT"] = "9"
    found = problems(spec, render)
    assert f"{K8S_CONFIG_MAP}: probe timeout 9s is not nginx's /ready/ one" in found


def test_render_crosscheck_catches_missing_probe_settings() -> None:
    """An app environment without the probe settings is reported."""
    spec = DeploymentSpec()
    render = rendered(spec)
    del _app_environment(render)["ARENA_SCALE_PROBE_PREFIX"]
    assert "docker-compose.yml does not pass ARENA_SCALE_PROBE_PREFIX/_TIMEOUT to the app" in (
        problems(spec, render)
    )


def _example_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    module_spec = importlib.util.spec_from_file_location("_example_settings", EXAMPLE_SETTINGS)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_render_example_settings_take_every_generated_arena_scale_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example project reads each ARENA_SCALE_* the generated environment sets, typed."""
    env = MOVED.app_environment
    module = _example_settings(monkeypatch, env)
    for key in (k for k in env if k.startswith(PREFIX)):
        value = getattr(module, key)
        assert SETTINGS[key[len(PREFIX) :]].accepts(value), key
        assert str(value).removesuffix(".0") == env[key], key
