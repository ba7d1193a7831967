"""OPERATIONS.md: the quick reference names this deployment's services, limits and commands."""

from __future__ import annotations

import re

import pytest
import yaml

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy import _operations as operations
from django_arena_scale.deploy import _script as script
from django_arena_scale.deploy._spec import DeploymentSpec

SPECS = {
    "n1": DeploymentSpec(replicas=1),
    "n2": DeploymentSpec(replicas=2, server_name="arena.example.com"),
    "n10": DeploymentSpec(),
    "n50": DeploymentSpec(replicas=50, backup_replicas=2, pgbouncer=True),
    "single-shared": DeploymentSpec(
        replicas=3, topology="single", app_server="uvicorn", redis_roles="shared"
    ),
    "custom-limits": DeploymentSpec(
        replicas=4,
        rate_general=250,
        burst_general=500,
        rate_stream=7,
        burst_stream=3,
        rate_auth=2,
        burst_auth=4,
        conn_per_ip=33,
        max_conns=77,
        stream_read_timeout=900,
        drain_delay=12,
    ),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> DeploymentSpec:
    return SPECS[request.param]


def _text(spec: DeploymentSpec) -> str:
    return operations.render(spec)[operations.OPERATIONS]


def _compose_services(spec: DeploymentSpec) -> set[str]:
    return set(yaml.safe_load(compose.render(spec)[compose.COMPOSE_FILE])["services"])


def test_operations_render_is_deterministic(spec: DeploymentSpec) -> None:
    """Same spec, same text; a single OPERATIONS.md ending in one newline."""
    files = operations.render(spec)
    assert files == operations.render(spec)
    assert list(files) == ["OPERATIONS.md"]
    assert files["OPERATIONS.md"].endswith("\n")
    assert not files["OPERATIONS.md"].endswith("\n\n")


def test_operations_mentions_every_compose_service(spec: DeploymentSpec) -> None:
    """Each compose service appears by name (replica ranges as first .. last with a count)."""
    text = _text(spec)
    for service in _compose_services(spec):
        numbered = re.fullmatch(r"(.*-)(\d+)", service)
        if numbered and f"`{service}`" not in text:
            family = [s for s in _compose_services(spec) if s.startswith(numbered.group(1))]
            family = [s for s in family if re.fullmatch(re.escape(numbered.group(1)) + r"\d+", s)]
            ordered = sorted(family, key=lambda s: int(s.rsplit("-", 1)[1]))
            assert f"`{ordered[0]}` .. `{ordered[-1]}` ({len(ordered)})" in text, service
        else:
            assert f"`{service}`" in text, service


def test_operations_shows_every_limit(spec: DeploymentSpec) -> None:
    """Rates with bursts, per-IP connections, max_conns, passive health, body size."""
    text = _text(spec)
    assert f"{spec.rate_general} r/s, burst {spec.burst_general}" in text
    assert f"{spec.rate_stream} r/s, burst {spec.burst_stream}" in text
    assert f"{spec.rate_auth} r/s, burst {spec.burst_auth}" in text
    assert f"| Connections per client IP | {spec.conn_per_ip} |" in text
    assert f"| max_conns per replica | {spec.max_conns} |" in text
    assert f"max_fails={spec.max_fails}, fail_timeout={spec.fail_timeout}s" in text
    assert f"{spec.client_max_body_mb} MiB" in text


def test_operations_shows_the_timeout_chain(spec: DeploymentSpec) -> None:
    """The chain's figures, including the k8s termination grace, are in the text."""
    text, chain = _text(spec), spec.chain
    assert f"| {chain.app_graceful}s |" in text
    assert f"| {chain.server_graceful}s |" in text
    assert f"| {chain.drain_delay}s |" in text
    assert f"| {chain.stop_grace_period}s |" in text
    assert f"| {chain.stream_read}s |" in text
    assert f"terminationGracePeriodSeconds ({k8s.termination_grace_seconds(spec)}s)" in text


def test_operations_lists_every_deploy_script_command(spec: DeploymentSpec) -> None:
    """Every command the script's dispatcher accepts is documented."""
    body = script.render(spec)[script.SCRIPT]
    dispatch = body[body.index('case "$command" in') :]
    commands = re.findall(r"^    ([a-z-]+)\)", dispatch, re.M)
    assert commands
    text = _text(spec)
    for command in commands:
        assert f"`{command}" in text, command


def test_operations_describes_the_drain_sequence(spec: DeploymentSpec) -> None:
    """The five drain steps name the include, the drain command and the figures used."""
    text = _text(spec)
    section = text[text.index("## Drain sequence") : text.index("## Kubernetes")]
    assert spec.nginx_servers_include(spec.api_upstream) in section
    assert "python manage.py drain on" in section
    assert f"--timeout {spec.chain.stop_grace_period}" in section
    assert spec.probe_paths["ready"] in section
    assert re.findall(r"^(\d)\. ", section, re.M) == ["1", "2", "3", "4", "5"]


def test_operations_names_kubernetes_objects(spec: DeploymentSpec) -> None:
    """Namespace, Deployments, the Secret to create and the migration Job are named."""
    text = _text(spec)
    assert f"`{spec.namespace}`" in text
    for pool in k8s.pools(spec):
        assert f"`{pool['name']}`" in text
    assert f"create secret generic {k8s.secret_name(spec)}" in text
    assert f"job/{spec.project}-migrate" in text


def test_operations_capacity_matches_spec(spec: DeploymentSpec) -> None:
    """Capacity figures are the spec's derived numbers."""
    text, cap, budget = _text(spec), spec.capacity, spec.db_budget
    assert f"| {cap.api_processes} / {cap.api_threads} |" in text
    assert f"{budget.needed} / {budget.limit}" in text
    assert f"| {cap.stream_connections} |" in text


def test_operations_advises_pgbouncer_when_connections_run_out() -> None:
    """An exceeded database budget without PgBouncer gets the advice."""
    spec = DeploymentSpec(replicas=50)
    assert spec.db_budget.exceeded
    assert "enable PgBouncer (`--pgbouncer true`)" in _text(spec)
    assert "enable PgBouncer (`--pgbouncer true`)" not in _text(DeploymentSpec(replicas=2))


def test_operations_has_a_failure_guide(spec: DeploymentSpec) -> None:
    """The failure table covers 502, 503, 504, 429 and the rolling-restart stop."""
    section = _text(spec).split("## When something fails", 1)[1]
    for symptom in ("502", "503", "504", "429", "137", "rolling-restart"):
        assert symptom in section
