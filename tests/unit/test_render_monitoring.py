"""Generated monitoring: Prometheus scrape configs, alert rules, Grafana dashboard.

promtool (Debian package ``prometheus``; CI installs it) checks the configs and rules, and runs
the alert rules against input series; the dashboard and the rules may name only metrics the
package defines, read from the metrics module itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from django_arena_scale.deploy import DeploymentSpec, render_all
from django_arena_scale.deploy import _crosscheck as crosscheck
from django_arena_scale.deploy import _monitoring as monitoring

SPECS = {
    "default": DeploymentSpec(),
    "single-gthread-backups": DeploymentSpec(
        replicas=3, topology="single", backup_replicas=2, probe_prefix="/_probe/", threads=8
    ),
    "local": DeploymentSpec(target="local", replicas=3, topology="single", app_server="uvicorn"),
}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install -y prometheus"
    return promtool


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        out = tmp_path / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _defined_samples() -> set[str]:
    """Every sample name the package exposes: its metric objects and collectors, by type."""
    from prometheus_client.metrics import MetricWrapperBase

    from django_arena_scale.metrics import _prom

    families = [
        family
        for value in vars(_prom).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    families += list(_prom.LifecycleCollector().collect())
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names = {family.name + suffix for family in families for suffix in suffixes[family.type]}
    assert len(families) >= 18, families  # the table in docs/observability.md
    return names


_METRIC = re.compile(r"\barena_[a-z0-9_]+\b")


def _referenced(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in _METRIC.findall(expr)}


def _alert_expressions(spec: DeploymentSpec) -> list[str]:
    data = monitoring.build(spec)
    path = monitoring.LOCAL_ALERTS if spec.target == "local" else monitoring.ALERTS
    return [rule["expr"] for group in data[path]["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_promtool_accepts_configs_and_rules(name: str, tmp_path: Path) -> None:
    """promtool check config / check rules pass on every generated Prometheus file; the local
    config is checked in full (its rule file and token file resolved beside it)."""
    spec = SPECS[name]
    files = {p: t for p, t in render_all(spec).files.items() if p in monitoring.build(spec)}
    _write(tmp_path, files)
    if spec.target == "local":
        (tmp_path / "prometheus" / monitoring.LOCAL_TOKEN_FILE).write_text("token\n")
        checked = _run("check", "config", monitoring.LOCAL_CONFIG, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "1 rule files found" in checked.stdout
        rules = [monitoring.LOCAL_ALERTS]
    else:
        configs = [monitoring.COMPOSE_CONFIG, monitoring.K8S_CONFIG]
        checked = _run("check", "config", "--syntax-only", *configs, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        rules = [monitoring.ALERTS]
    checked = _run("check", "rules", *rules, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout)


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The rules check is real: a syntax error in one expression fails it."""
    data = monitoring.build(DeploymentSpec())[monitoring.ALERTS]
    data["groups"][0]["rules"][0]["expr"] = "up{job= == 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(data))
    assert _run("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rules_and_dashboard_name_only_defined_metrics(name: str) -> None:
    """Every arena_* name in the alert rules and the dashboard is a sample the metrics module
    defines; the dashboard shows every metric family."""
    spec = SPECS[name]
    defined = _defined_samples()
    alerts = _referenced(_alert_expressions(spec))
    assert alerts, "no metric in the alert rules"
    assert alerts <= defined, alerts - defined
    if spec.target == "local":
        assert monitoring.DASHBOARD not in render_all(spec).files
        return
    text = render_all(spec).files[monitoring.DASHBOARD]
    dashboard = json.loads(text)
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = _referenced(expressions)
    assert used <= defined, used - defined
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in defined}
    shown = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in used}
    assert families <= shown, families - shown
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_scrape_targets_are_the_app_services() -> None:
    """One target per compose app service on the app port, labelled with service and pool, at
    <prefix>metrics, with the bearer token read from a file."""
    spec = SPECS["single-gthread-backups"]
    config = monitoring.build(spec)[monitoring.COMPOSE_CONFIG]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/_probe/metrics"
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": monitoring.compose_token_file(spec),
    }
    targets = {s["targets"][0]: s["labels"] for s in job["static_configs"]}
    assert targets == {
        f"{service}:{spec.app_port}": {
            "service": service,
            "pool": "backup" if "backup" in service else "web",
        }
        for service in spec.app_services
    }


def test_local_scrape_config_targets_replica_ports_every_second() -> None:
    spec = SPECS["local"]
    config = monitoring.build(spec)[monitoring.LOCAL_CONFIG]
    assert config["global"]["scrape_interval"] == "1s"
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == monitoring.LOCAL_TOKEN_FILE
    targets = [s["targets"][0] for s in job["static_configs"]]
    assert targets == [f"127.0.0.1:{spec.local_service_port(s)}" for s in spec.app_services]


def test_every_scrape_job_reads_its_token_from_a_file() -> None:
    """The token is only ever a file path (credentials_file), never inline."""
    for spec in SPECS.values():
        for path, document in monitoring.build(spec).items():
            for job in document.get("scrape_configs", []):
                assert set(job["authorization"]) == {"type", "credentials_file"}, path
                assert "bearer_token" not in job, path
                assert "basic_auth" not in job, path


@pytest.mark.parametrize(
    ("spec", "pool", "capacity"),
    [
        (DeploymentSpec(), "stream", 200),  # split: nginx max_conns per streaming replica
        (DeploymentSpec(topology="single", workers=2, threads=4), "web", 8),  # a thread each
        (DeploymentSpec(topology="single", app_server="uvicorn", max_conns=50), "web", 50),
    ],
)
def test_stream_capacity_alert_threshold_from_spec(
    spec: DeploymentSpec, pool: str, capacity: int
) -> None:
    assert monitoring.stream_capacity(spec) == {pool: capacity}
    (expr,) = [e for e in _alert_expressions(spec) if "streams_open" in e]
    assert f'pool="{pool}"' in expr
    assert expr.endswith(f"> {int(capacity * monitoring.STREAMS_NEAR)}")


def _rule_test(tmp_path: Path, spec: DeploymentSpec, tests: list[dict[str, Any]]) -> None:
    (tmp_path / "alerts.yml").write_text(render_all(spec).files[monitoring.ALERTS])
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "15s", "tests": tests})
    )
    result = _run("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_input_series(tmp_path: Path) -> None:
    """promtool test rules: the streams alert fires above 80% of max_conns for 5 minutes and
    not below; a replica missing scrapes past the stop grace period plus a minute is down;
    10% 5xx answers fire the error ratio alert."""
    spec = DeploymentSpec()
    base = 'job="arena",instance="stream-1:8000",service="stream-1",pool="stream"'
    web = 'job="arena",instance="web-1:8000",service="web-1",pool="web"'
    down_minutes = -(-(spec.chain.stop_grace_period + 60) // 60) + 1
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": f"arena_sse_streams_open{{{base}}}", "values": "150 170x10"},
                {"series": f"arena_websocket_connections_open{{{base}}}", "values": "0x11"},
                {"series": f"up{{{web}}}", "values": f"0x{down_minutes + 1}"},
                {
                    "series": f'arena_http_requests_total{{{web},method="GET",route="r/",'
                    'status="200"}',
                    "values": "0+90x20",
                },
                {
                    "series": f'arena_http_requests_total{{{web},method="GET",route="r/",'
                    'status="503"}',
                    "values": "0+10x20",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "ArenaStreamsNearCapacityStream"},
                {
                    "eval_time": "8m",
                    "alertname": "ArenaStreamsNearCapacityStream",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "instance": "stream-1:8000",
                                "service": "stream-1",
                            },
                            "exp_annotations": {
                                "summary": "stream-1 holds 170 open streams and WebSockets, "
                                "over 80% of the 200 one stream replica takes."
                            },
                        }
                    ],
                },
                {"eval_time": "1m", "alertname": "ArenaReplicaDown"},
                {
                    "eval_time": f"{down_minutes}m",
                    "alertname": "ArenaReplicaDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", **_labels(web)},
                            "exp_annotations": {
                                "summary": "web-1 (web-1:8000) has not answered a scrape for "
                                f"{spec.chain.stop_grace_period + 60}s (longer than a planned "
                                "restart)."
                            },
                        }
                    ],
                },
                {
                    "eval_time": "15m",
                    "alertname": "ArenaErrorRatioHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", "pool": "web"},
                            "exp_annotations": {
                                "summary": "More than 5% of the web pool's answers are 5xx (10%)."
                            },
                        }
                    ],
                },
            ],
        }
    ]
    _rule_test(tmp_path, spec, tests)


def _labels(selector: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', selector))


def test_crosscheck_finds_a_replica_prometheus_does_not_scrape() -> None:
    spec = DeploymentSpec(replicas=3)
    rendered = render_all(spec)
    assert crosscheck.problems(spec, rendered) == []
    job = rendered.data[monitoring.COMPOSE_CONFIG]["scrape_configs"][0]
    job["static_configs"].pop(1)
    job["metrics_path"] = "/status/metrics"
    found = crosscheck.problems(spec, rendered)
    assert f"{monitoring.COMPOSE_CONFIG} does not scrape the replica at web-2:8000" in found
    assert f"{monitoring.COMPOSE_CONFIG} does not scrape compose app service 'web-2'" in found
    assert any("scrapes '/status/metrics', but the app answers /metrics" in p for p in found)


def test_crosscheck_local_targets_are_the_replica_ports() -> None:
    spec = DeploymentSpec(target="local", replicas=2)
    rendered = render_all(spec)
    assert crosscheck.problems(spec, rendered) == []
    job = rendered.data[monitoring.LOCAL_CONFIG]["scrape_configs"][0]
    job["static_configs"][0]["targets"] = ["127.0.0.1:9"]
    found = crosscheck.problems(spec, rendered)
    assert f"{monitoring.LOCAL_CONFIG} scrapes 127.0.0.1:9, which is no nginx upstream server" in (
        found
    )


def test_crosscheck_k8s_scrape_needs_headless_services_on_the_pod_port() -> None:
    spec = DeploymentSpec()
    rendered = render_all(spec)
    job = rendered.data[monitoring.K8S_CONFIG]["scrape_configs"][0]
    job["dns_sd_configs"][0]["port"] = 9000
    (service,) = [
        doc
        for doc in rendered.data["k8s/45-service-metrics.yaml"]
        if doc["metadata"]["name"] == "arena-web-metrics"
    ]
    service["spec"]["publishNotReadyAddresses"] = False
    found = crosscheck.problems(spec, rendered)
    assert any("arena-stream-metrics.arena.svc on port 9000" in p for p in found), found
    assert "arena-web-metrics.arena.svc must be headless and publish unready pods for scraping" in (
        found
    )


def test_k8s_scrape_finds_each_pool_through_its_metrics_service() -> None:
    spec = DeploymentSpec(namespace="prod", project="chat")
    job = monitoring.build(spec)[monitoring.K8S_CONFIG]["scrape_configs"][0]
    names = [name for sd in job["dns_sd_configs"] for name in sd["names"]]
    assert names == ["chat-stream-metrics.prod.svc", "chat-web-metrics.prod.svc"]
    assert job["authorization"]["credentials_file"] == monitoring.k8s_token_file(spec)
    pool = re.compile(job["relabel_configs"][0]["regex"])
    assert pool.fullmatch("chat-web-metrics.prod.svc").group(1) == "web"  # type: ignore[union-attr]
