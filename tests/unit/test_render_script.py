"""The deploy.sh renderer: every name, path and number in the script comes from the spec."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _nginx as nginx
from django_arena_scale.deploy import _script as script
from django_arena_scale.deploy._spec import DeploymentSpec

SPECS = {
    "n1": DeploymentSpec(replicas=1),
    "n2": DeploymentSpec(replicas=2, server_name="arena.example.com"),
    "n10": DeploymentSpec(),
    "n50": DeploymentSpec(replicas=50, backup_replicas=2),
    "single": DeploymentSpec(replicas=3, topology="single", app_server="uvicorn"),
    "pgbouncer-shared": DeploymentSpec(replicas=4, pgbouncer=True, redis_roles="shared"),
    "custom": DeploymentSpec(
        replicas=2,
        app_port=9000,
        http_port=8080,
        probe_prefix="/-/",
        drain_delay=3,
        env_file="secrets/prod.env",
        image="registry.example.com/arena/backend:1.2.3",
    ),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> DeploymentSpec:
    return SPECS[request.param]


def _text(spec: DeploymentSpec) -> str:
    return script.render(spec)[script.SCRIPT]


def _array(text: str, name: str) -> list[str]:
    match = re.search(rf"^readonly {name}=\((.*?)^\)", text, re.M | re.S)
    assert match, name
    return [shlex.split(line)[0] for line in match.group(1).splitlines() if line.strip()]


def _scalar(text: str, name: str) -> str:
    match = re.search(rf"^readonly {name}=(.*)$", text, re.M)
    assert match, name
    (value,) = shlex.split(match.group(1))
    return value


def test_script_render_is_deterministic(spec: DeploymentSpec) -> None:
    """Two renders are identical; the only file is deploy.sh, written executable."""
    assert script.render(spec) == script.render(spec)
    assert list(script.render(spec)) == [script.SCRIPT]
    assert script.SCRIPT in script.EXECUTABLE


def test_script_is_strict_bash(spec: DeploymentSpec) -> None:
    """A bash shebang and set -euo pipefail before any command."""
    lines = _text(spec).splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    code = [line for line in lines if line and not line.startswith("#")]
    assert code[0] == "set -euo pipefail"


def test_script_names_exactly_the_spec_web_services(spec: DeploymentSpec) -> None:
    """The web-<i> names anywhere in the script are exactly web-1..web-N."""
    found = set(re.findall(r"\bweb-(\d+)\b", _text(spec)))
    assert {f"web-{i}" for i in found} == set(spec.web_names)
    assert _array(_text(spec), "WEB_SERVICES") == list(spec.web_names)


def test_script_app_services_follow_spec_order(spec: DeploymentSpec) -> None:
    """Rolling restarts walk web, backup and stream services in the spec's order."""
    assert _array(_text(spec), "APP_SERVICES") == list(spec.app_services)


def test_script_upstream_addresses_match_nginx_lines(spec: DeploymentSpec) -> None:
    """Each service's address is the second word of its line in an nginx upstream include."""
    text = _text(spec)
    includes = _array(text, "UPSTREAM_INCLUDES")
    rendered = nginx.render(spec)
    assert set(includes) <= set(rendered)
    lines = [line.split() for path in includes for line in rendered[path].splitlines()]
    addresses = {words[1] for words in lines if words and words[0] == "server"}
    for service in spec.app_services:
        case = re.search(rf"^    {re.escape(service)}\) printf '%s\\n' (\S+) ;;$", text, re.M)
        assert case, service
        assert case.group(1) == spec.address(service)
        assert spec.address(service) in addresses


def test_script_data_services_are_compose_services(spec: DeploymentSpec) -> None:
    """start brings up Redis per role, PostgreSQL and (when enabled) PgBouncer."""
    expected = set(spec.redis_services.values()) | {spec.postgres_service}
    if spec.pgbouncer:
        expected.add(spec.pgbouncer_service)
    assert set(_array(_text(spec), "DATA_SERVICES")) == expected


def test_script_timeouts_come_from_the_chain(spec: DeploymentSpec) -> None:
    """Stop grace, drain delay, probe timeout and the ready budget are the spec's figures."""
    text, chain = _text(spec), spec.chain
    assert _scalar(text, "STOP_GRACE") == str(chain.stop_grace_period)
    assert _scalar(text, "DRAIN_DELAY") == str(chain.drain_delay)
    assert _scalar(text, "PROBE_TIMEOUT") == str(chain.probe)
    budget = chain.probe_period * chain.startup_failure_threshold
    assert _scalar(text, "READY_TIMEOUT_DEFAULT") == str(budget)


def test_script_ports_paths_and_files_come_from_the_spec(spec: DeploymentSpec) -> None:
    """Ports, probe paths, the env file, the image and service names are the spec's."""
    text = _text(spec)
    assert _scalar(text, "APP_PORT") == str(spec.app_port)
    assert _scalar(text, "HTTP_PORT") == str(spec.http_port)
    assert _scalar(text, "READY_PATH") == spec.probe_paths["ready"]
    assert _scalar(text, "LIVE_PATH") == spec.probe_paths["live"]
    assert _scalar(text, "ENV_FILE") == spec.env_file
    assert _scalar(text, "IMAGE") == spec.image
    assert _scalar(text, "NGINX_SERVICE") == spec.nginx_service
    assert _scalar(text, "MANAGE_SERVICE") == spec.manage_service


def test_script_values_sit_only_in_the_variable_block(spec: DeploymentSpec) -> None:
    """The body after the variable block is the same text for every spec."""
    body = _text(spec).split("# --- constant body", 1)[1]
    other = _text(DeploymentSpec(replicas=7, app_port=8123)).split("# --- constant body", 1)[1]
    assert body == other


def test_script_services_are_the_compose_services(spec: DeploymentSpec) -> None:
    """Every service the script names exists in docker-compose.yml, and every app service there
    is one the script restarts."""
    text = _text(spec)
    services = yaml.safe_load(compose.render(spec)[compose.COMPOSE_FILE])["services"]
    named = {
        *_array(text, "APP_SERVICES"),
        *_array(text, "DATA_SERVICES"),
        _scalar(text, "NGINX_SERVICE"),
        _scalar(text, "MANAGE_SERVICE"),
    }
    assert named == set(services)
    assert _scalar(text, "COMPOSE_FILE") in compose.render(spec)
