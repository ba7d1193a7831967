"""The k8s/ renderer: manifests agree with the spec and with the compose files next to them."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy import _server as server
from django_arena_scale.deploy._spec import STOP_GRACE_MARGIN, DeploymentSpec

SPECS = {
    "n1": DeploymentSpec(replicas=1),
    "n2": DeploymentSpec(replicas=2, server_name="arena.example.com"),
    "n10": DeploymentSpec(),
    "n50": DeploymentSpec(replicas=50, stream_replicas=6, hpa_max_replicas=120),
    "single-uvicorn": DeploymentSpec(
        replicas=3, topology="single", app_server="uvicorn", probe_prefix="/-/"
    ),
    "sticky-pgbouncer": DeploymentSpec(
        replicas=4, sticky=True, pgbouncer=True, trusted_proxies=("10.0.0.0/8",)
    ),
    "chain": DeploymentSpec(
        replicas=2, drain_delay=25, graceful_timeout=90, app_graceful_timeout=60, app_port=9000
    ),
}
# Independent of the renderer's own filter: what a reviewer would call a secret.
SECRET_LOOKING = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL|DSN|_URL$", re.I)


@functools.cache
def _docs(spec: DeploymentSpec) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for content in k8s.render(spec).values():
        docs.extend(d for d in yaml.safe_load_all(content) if d is not None)
    return docs


def _kind(spec: DeploymentSpec, kind: str, *, apps_only: bool = True) -> list[dict[str, Any]]:
    """The objects of ``kind``; with ``apps_only``, not PgBouncer's (k8s/35-pgbouncer.yaml,
    tested on its own)."""
    return [
        d
        for d in _docs(spec)
        if d["kind"] == kind
        and not (
            apps_only and d["metadata"]["labels"].get("app.kubernetes.io/component") == "pgbouncer"
        )
    ]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> DeploymentSpec:
    return SPECS[request.param]


def test_k8s_render_is_deterministic_and_sorted(spec: DeploymentSpec) -> None:
    """Two renders are identical and the paths come sorted, all under k8s/."""
    first, second = k8s.render(spec), k8s.render(spec)
    assert first == second
    assert list(first) == sorted(first)
    assert all(path.startswith("k8s/") and path.endswith(".yaml") for path in first)


def test_k8s_every_object_is_namespaced_and_labelled(spec: DeploymentSpec) -> None:
    """Every object but the Namespace lives in the spec's namespace."""
    for doc in _docs(spec):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == spec.namespace
        else:
            assert doc["metadata"]["namespace"] == spec.namespace
            assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == spec.project


def test_k8s_one_deployment_per_pool(spec: DeploymentSpec) -> None:
    """A Deployment, Service, HPA and PDB per pool: web, plus stream in the split topology; and
    per pool the headless -metrics Service Prometheus discovers the pods through."""
    expected = {f"{spec.project}-web"}
    if spec.stream_names:
        expected.add(f"{spec.project}-stream")
    # With PgBouncer, its own Deployment and Service (no HPA, no PDB: one pod on purpose).
    pgbouncer = {spec.pgbouncer_service} if spec.pgbouncer else set()
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert {d["metadata"]["name"] for d in _kind(spec, kind)} == expected
    deployments = _kind(spec, "Deployment", apps_only=False)
    assert {d["metadata"]["name"] for d in deployments} == expected | pgbouncer
    services = {d["metadata"]["name"] for d in _kind(spec, "Service", apps_only=False)}
    assert services == expected | {f"{name}-metrics" for name in expected} | pgbouncer


def test_k8s_probe_paths_ports_and_host_match_spec(spec: DeploymentSpec) -> None:
    """readiness /ready/, startup /health/ on the app port, Host header set; liveness /live/ on
    uvicorn pods, a TCP connect on gthread pods (slow clients cannot starve it)."""
    for deployment in _kind(spec, "Deployment"):
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": spec.app_port}
        expected = {
            "readinessProbe": spec.probe_paths["ready"],
            "startupProbe": spec.probe_paths["health"],
        }
        live = container["livenessProbe"]
        if deployment["metadata"]["name"].endswith("-web") and spec.app_server == "gunicorn":
            assert live["tcpSocket"] == {"port": "http"}
            assert "httpGet" not in live
        else:
            expected["livenessProbe"] = spec.probe_paths["live"]
        assert live["timeoutSeconds"] == spec.chain.probe
        assert live["periodSeconds"] == spec.chain.probe_period
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path
            assert get["port"] == "http"
            headers = {h["name"]: h["value"] for h in get["httpHeaders"]}
            assert headers["Host"] == k8s.host_header(spec)
            assert container[probe]["timeoutSeconds"] == spec.chain.probe
            assert container[probe]["periodSeconds"] == spec.chain.probe_period


def test_k8s_liveness_tolerates_a_busy_worker(spec: DeploymentSpec) -> None:
    """Liveness fails only after longer than gunicorn's worker timeout."""
    for deployment in _kind(spec, "Deployment"):
        live = _container(deployment)["livenessProbe"]
        assert live["failureThreshold"] * live["periodSeconds"] > spec.chain.worker_timeout


def test_k8s_termination_grace_covers_prestop_and_graceful(spec: DeploymentSpec) -> None:
    """terminationGracePeriodSeconds = the chain's stop grace >= preStop + graceful + margin."""
    chain = spec.chain
    for deployment in _kind(spec, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace == chain.stop_grace_period
        command = _container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
        sleep = int(re.search(r"sleep (\d+)", command[-1]).group(1))  # type: ignore[union-attr]
        assert sleep == chain.drain_delay
        assert grace >= sleep + chain.server_graceful + STOP_GRACE_MARGIN


def test_k8s_prestop_drains_before_sleeping(spec: DeploymentSpec) -> None:
    """preStop runs manage.py drain on, then sleeps (the drain file is the app's setting)."""
    for deployment in _kind(spec, "Deployment"):
        script = _container(deployment)["lifecycle"]["preStop"]["exec"]["command"][-1]
        assert script.index("python manage.py drain on") < script.index("sleep")


def test_k8s_drain_file_lives_on_a_mounted_volume(spec: DeploymentSpec) -> None:
    """ARENA_SCALE_DRAIN_FILE points into a writable mount (the root file system is read-only)."""
    drain = k8s.config_map_env(spec)["ARENA_SCALE_DRAIN_FILE"]
    for deployment in _kind(spec, "Deployment"):
        container = _container(deployment)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
        assert any(drain.startswith(mount.rstrip("/") + "/") for mount in mounts)


def test_k8s_resources_come_from_spec(spec: DeploymentSpec) -> None:
    """requests = reservations, limits = limits, per replica."""
    for deployment in _kind(spec, "Deployment"):
        resources = _container(deployment)["resources"]
        assert resources["requests"]["memory"] == f"{spec.memory_reservation_mb}Mi"
        assert resources["limits"]["memory"] == f"{spec.memory_limit_mb}Mi"
        assert resources["requests"]["cpu"] == f"{round(spec.cpu_reservation * 1000)}m"
        assert resources["limits"]["cpu"] == f"{round(spec.cpu_limit * 1000)}m"


def test_k8s_command_matches_compose_services(spec: DeploymentSpec) -> None:
    """Each pool runs the same argv as its compose services."""
    services = yaml.safe_load(compose.render(spec)[compose.COMPOSE_FILE])["services"]
    commands = {d["metadata"]["name"]: _container(d)["command"] for d in _kind(spec, "Deployment")}
    assert commands[f"{spec.project}-web"] == services[spec.web_names[0]]["command"]
    if spec.stream_names:
        assert commands[f"{spec.project}-stream"] == services[spec.stream_names[0]]["command"]


def test_k8s_server_config_map_holds_the_rendered_server_configs(spec: DeploymentSpec) -> None:
    """The gunicorn configs mounted at config_dir are byte for byte the compose ones."""
    maps = {d["metadata"]["name"]: d for d in _kind(spec, "ConfigMap")}
    data = maps[k8s.server_config_name(spec)]["data"]
    assert data == server.render(spec)
    for deployment in _kind(spec, "Deployment"):
        command = _container(deployment)["command"]
        config = command[command.index("--config") + 1]
        directory, name = config.rsplit("/", 1)
        assert directory == spec.config_dir.rstrip("/")
        assert name in data


def test_k8s_config_map_has_no_secret_looking_keys(spec: DeploymentSpec) -> None:
    """No ConfigMap key looks like a credential, and no Secret is rendered at all."""
    env = _kind(spec, "ConfigMap")
    app_env = next(d for d in env if d["metadata"]["name"] == f"{spec.project}-config")
    assert not [key for key in app_env["data"] if SECRET_LOOKING.search(key)]
    assert not _kind(spec, "Secret")


def test_k8s_secrets_are_referenced_by_name(spec: DeploymentSpec) -> None:
    """Pods and the migration Job read the Secret through envFrom.secretRef."""
    pods = [d["spec"]["template"]["spec"] for d in _kind(spec, "Deployment") + _kind(spec, "Job")]
    for pod in pods:
        refs = [e["secretRef"]["name"] for e in pod["containers"][0]["envFrom"] if "secretRef" in e]
        assert refs == [k8s.secret_name(spec)]


def test_k8s_hpa_bounds_come_from_spec(spec: DeploymentSpec) -> None:
    """The web HPA keeps at least `replicas` pods and at most hpa_max."""
    hpas = {d["metadata"]["name"]: d["spec"] for d in _kind(spec, "HorizontalPodAutoscaler")}
    web = hpas[f"{spec.project}-web"]
    assert web["minReplicas"] == spec.replicas
    assert web["maxReplicas"] == spec.hpa_max
    target = web["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert target == spec.hpa_cpu_target
    if spec.stream_names:
        assert hpas[f"{spec.project}-stream"]["minReplicas"] == spec.stream_replicas


def test_k8s_deployments_leave_replicas_to_the_hpa(spec: DeploymentSpec) -> None:
    """Re-applying a Deployment must not reset the HPA's count."""
    for deployment in _kind(spec, "Deployment"):
        assert "replicas" not in deployment["spec"]


def test_k8s_pdb_always_allows_one_eviction(spec: DeploymentSpec) -> None:
    """maxUnavailable >= 1, so node drains never block, even with one replica."""
    for pdb in _kind(spec, "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] >= 1


def test_k8s_migration_job_runs_migrate(spec: DeploymentSpec) -> None:
    """A Job runs manage.py migrate once with the app image."""
    (job,) = _kind(spec, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert container["image"] == spec.image
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _ingresses(spec: DeploymentSpec) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].split("-", 1)[1]: d for d in _kind(spec, "Ingress")}


def _annotations(ingress: dict[str, Any]) -> dict[str, str]:
    prefix = "nginx.ingress.kubernetes.io/"
    return {k.removeprefix(prefix): v for k, v in ingress["metadata"]["annotations"].items()}


def _paths(ingress: dict[str, Any]) -> dict[str, str]:
    (rule,) = ingress["spec"]["rules"]
    return {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}


def test_k8s_ingress_rate_limits_match_spec(spec: DeploymentSpec) -> None:
    """API, stream and auth Ingresses carry the spec's r/s, bursts and per-IP connections."""
    ingresses = _ingresses(spec)
    for name, rate, burst in (
        ("api", spec.rate_general, spec.burst_general),
        ("stream", spec.rate_stream, spec.burst_stream),
        ("auth", spec.rate_auth, spec.burst_auth),
    ):
        notes = _annotations(ingresses[name])
        assert notes["limit-rps"] == str(rate)
        assert rate * int(notes["limit-burst-multiplier"]) >= burst
        assert notes["limit-connections"] == str(spec.conn_per_ip)


def test_k8s_stream_ingress_unbuffered_with_long_timeouts(spec: DeploymentSpec) -> None:
    """SSE and WebSocket paths: no proxy buffering, the stream read timeout, no replay."""
    stream = _ingresses(spec)["stream"]
    notes = _annotations(stream)
    assert notes["proxy-buffering"] == "off"
    assert notes["proxy-read-timeout"] == str(spec.chain.stream_read)
    assert notes["proxy-send-timeout"] == str(spec.chain.stream_read)
    assert "http_502" not in notes["proxy-next-upstream"]
    backend = f"{spec.project}-{'stream' if spec.stream_names else 'web'}"
    assert _paths(stream) == dict.fromkeys((*spec.stream_paths, spec.ws_path), backend)


def test_k8s_api_ingress_timeouts_match_spec(spec: DeploymentSpec) -> None:
    """The API Ingress uses the API read and connect timeouts and the body size."""
    notes = _annotations(_ingresses(spec)["api"])
    assert notes["proxy-read-timeout"] == str(spec.chain.api_read)
    assert notes["proxy-connect-timeout"] == str(spec.chain.connect)
    assert notes["proxy-body-size"] == f"{spec.client_max_body_mb}m"
    assert ("upstream-hash-by" in notes) is spec.sticky


def test_k8s_status_ingress_is_internal_only(spec: DeploymentSpec) -> None:
    """/status/ and the metrics path are routed only with the internal networks allow list."""
    internal = _ingresses(spec)["internal"]
    assert list(_paths(internal)) == [spec.probe_paths["status"], spec.metrics_path]
    allowed = _annotations(internal)["whitelist-source-range"].split(",")
    assert allowed == list(spec.internal_networks)
    public = [p for name, i in _ingresses(spec).items() if name != "internal" for p in _paths(i)]
    assert spec.probe_paths["status"] not in public
    assert spec.metrics_path not in public


def test_k8s_ingress_host_and_tls_follow_server_name(spec: DeploymentSpec) -> None:
    """A named server gets host rules and TLS; the catch-all '_' gets neither."""
    for ingress in _kind(spec, "Ingress"):
        (rule,) = ingress["spec"]["rules"]
        if spec.server_name == "_":
            assert "host" not in rule
            assert "tls" not in ingress["spec"]
        else:
            assert rule["host"] == spec.server_name
            assert ingress["spec"]["tls"][0]["hosts"] == [spec.server_name]


def test_k8s_host_header_for_catch_all_and_wildcard() -> None:
    """'_' probes as localhost, '*.example.com' as example.com."""
    assert k8s.host_header(DeploymentSpec(server_name="_")) == "localhost"
    assert k8s.host_header(DeploymentSpec(server_name="*.example.com")) == "example.com"


@given(
    st.recursive(
        st.text() | st.integers() | st.booleans() | st.none(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_dump_yaml_round_trips_through_a_yaml_parser(value: Any) -> None:
    """Whatever the emitter writes, PyYAML reads back as the same data."""
    document = {"value": value}
    assert yaml.safe_load(k8s.dump_yaml(document)) == document


def test_dump_yaml_rejects_floats() -> None:
    """A float has no exact YAML spelling the manifests want: it is refused."""
    with pytest.raises(TypeError, match=r"1\.5"):
        k8s.dump_yaml({"cpu": 1.5})
