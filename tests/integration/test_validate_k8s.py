"""Every generated manifest passes the real ``kubernetes-validate --strict`` (offline schemas).

``--strict`` rejects unknown fields, so a misspelt key fails here instead of being dropped
silently by the API server.  The newest Kubernetes release the validator ships is the
"current" version; the oldest still common one (1.30) is checked too.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec, SpecError
from tests.integration.test_generated_configs import materialize, specs

pytestmark = pytest.mark.integration

OLDEST_VERSION = "1.30.0"
SECRET_LOOKING = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|_KEY$|CREDENTIAL|DSN|_URL$", re.I)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-uvicorn": {"topology": "single", "app_server": "uvicorn"},
    "sticky-proxies": {"sticky": True, "trusted_proxies": ("10.0.0.0/8", "fd00::/8")},
    "named-host": {
        "server_name": "arena.example.com",
        "probe_prefix": "/-/",
        "auth_paths": (),
        "stream_paths": ("/messages/stream/", "/api/chat/stream/"),
    },
    "resources": {
        "cpu_limit": 2.5,
        "cpu_reservation": 0.25,
        "memory_limit_mb": 3072,
        "memory_reservation_mb": 1536,
        "hpa_max_replicas": 500,
        "namespace": "prod-arena",
        "project": "chat",
    },
}
MATRIX = [(n, name) for n in (1, 2, 10, 50) for name in VARIANTS]


@functools.lru_cache(maxsize=1)
def _newest_version() -> str:
    """The default (newest) Kubernetes version of the installed kubernetes-validate."""
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    words = proc.stdout.replace("\n", " ").split("Defaults to ", 1)[1].split()
    return words[0].rstrip(".")


def validate(root: Path, version: str | None = None) -> subprocess.CompletedProcess[str]:
    files = sorted(str(p) for p in (root / "k8s").glob("*.yaml"))
    assert files
    argv = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    argv += ["--kubernetes-version", version or _newest_version(), *files]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def assert_valid(proc: subprocess.CompletedProcess[str]) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "ERROR" not in output, output


def _k8s_files(spec: DeploymentSpec) -> dict[str, str]:
    return {p: c for p, c in render_all(spec).files.items() if p.startswith("k8s/")}


@pytest.mark.parametrize(("n", "variant"), MATRIX)
def test_k8s_manifests_pass_kubernetes_validate_strict(
    n: int, variant: str, tmp_path: Path
) -> None:
    """kubernetes-validate --strict accepts every manifest for the newest Kubernetes."""
    spec = DeploymentSpec(replicas=n, **VARIANTS[variant])
    assert_valid(validate(materialize(_k8s_files(spec), tmp_path)))


def test_k8s_manifests_pass_for_the_oldest_supported_version(tmp_path: Path) -> None:
    """The same manifests are valid for Kubernetes 1.30 (no field newer than that)."""
    spec = DeploymentSpec(replicas=3, server_name="arena.example.com")
    assert_valid(validate(materialize(_k8s_files(spec), tmp_path), OLDEST_VERSION))


def test_k8s_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The strict check can fail: a misspelt field in the Deployment is reported."""
    files = _k8s_files(DeploymentSpec(replicas=2))
    path = "k8s/30-deployment-web.yaml"
    files[path] = files[path].replace(
        "terminationGracePeriodSeconds:", "terminationGracePeriod:", 1
    )
    proc = validate(materialize(files, tmp_path))
    assert proc.returncode != 0
    assert "terminationGracePeriod" in proc.stdout + proc.stderr


def test_k8s_every_document_names_a_known_kind(tmp_path: Path) -> None:
    """Each file holds only the kinds its name announces, so kubectl apply order holds."""
    spec = DeploymentSpec(replicas=2, pgbouncer=True)
    kinds = {
        "00-namespace": {"Namespace"},
        "10-configmap": {"ConfigMap"},
        "20-job-migrate": {"Job"},
        "30-deployment": {"Deployment"},
        "35-pgbouncer": {"Deployment", "Service"},
        "40-service": {"Service"},
        "45-service-metrics": {"Service"},
        "50-ingress": {"Ingress"},
        "60-hpa": {"HorizontalPodAutoscaler"},
        "70-pdb": {"PodDisruptionBudget"},
    }
    for path, content in _k8s_files(spec).items():
        prefix = next(p for p in kinds if Path(path).name.startswith(p))
        found = {doc["kind"] for doc in yaml.safe_load_all(content) if doc}
        assert found == kinds[prefix], path


@st.composite
def k8s_specs(draw: st.DrawFn) -> DeploymentSpec:
    """The shared spec strategy, plus the fields only the manifests use."""
    base = draw(specs())
    cpu = draw(st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 4.0]))
    memory = draw(st.integers(128, 8192))
    extra = {
        "cpu_limit": cpu,
        "cpu_reservation": draw(st.sampled_from([0.05, cpu / 2, cpu])),
        "memory_limit_mb": memory,
        "memory_reservation_mb": draw(st.integers(64, memory)),
        "probe_prefix": draw(st.sampled_from(["/", "/-/", "/healthz/"])),
        "app_port": draw(st.integers(1024, 65535)),
        "drain_delay": draw(st.integers(0, 60)),
        "hpa_cpu_target": draw(st.integers(10, 100)),
        "namespace": draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)),
    }
    try:
        return base.replace(**extra)
    except SpecError:
        reject()


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=k8s_specs())
def test_k8s_manifests_valid_for_generated_specs(
    spec: DeploymentSpec, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hypothesis-drawn specs render manifests that kubernetes-validate --strict accepts."""
    root = tmp_path_factory.mktemp("k8s")
    assert_valid(validate(materialize(_k8s_files(spec), root)))
    for doc in (d for c in k8s.render(spec).values() for d in yaml.safe_load_all(c) if d):
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "pgbouncer":
            continue  # k8s/35-pgbouncer.yaml, not an app pool (tests/unit/test_render_database)
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            grace = pod["terminationGracePeriodSeconds"]
            assert grace >= spec.chain.drain_delay + spec.chain.server_graceful
            container = pod["containers"][0]
            assert container["readinessProbe"]["httpGet"]["path"] == spec.probe_paths["ready"]
            assert container["ports"][0]["containerPort"] == spec.app_port
        elif doc["kind"] == "ConfigMap":
            assert not [k for k in doc["data"] if SECRET_LOOKING.search(k)]
