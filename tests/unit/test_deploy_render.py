"""Renderers: nginx decisions (docs/architecture.md), compose, server configs, determinism."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _local as local
from django_arena_scale.deploy import _nginx as nginx
from django_arena_scale.deploy import _server as server
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._capacity import report
from django_arena_scale.deploy._server import WSGI_WORKER
from django_arena_scale.deploy._spec import DeploymentSpec


def directives(text: str) -> list[str]:
    """Lines without comments, stripped, non-empty."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def block(text: str, head: str) -> list[str]:
    """Directives of the first block starting with ``head {`` (nested blocks flattened)."""
    lines = directives(text)
    start = lines.index(head + " {")
    depth, out = 0, []
    for line in lines[start:]:
        depth += line.count("{") - line.count("}")
        out.append(line)
        if depth == 0:
            return out[1:-1]
    raise AssertionError(f"unclosed {head}")


def conf(**kw: Any) -> str:
    return nginx.render(DeploymentSpec(**kw))["nginx/nginx.conf"]


def test_nginx_both_upstreams_have_a_zone() -> None:
    """Shared-memory zones make max_conns and passive health count across workers."""
    text = conf()
    for name in ("django_backend", "django_streaming"):
        assert block(text, f"upstream {name}")[0].startswith(f"zone {name} ")


def test_nginx_least_conn_precedes_keepalive() -> None:
    """least_conn must come before keepalive in the streaming upstream."""
    lines = block(conf(), "upstream django_streaming")
    assert lines.index("least_conn;") < lines.index("keepalive 64;")


def test_nginx_sticky_uses_ip_hash_before_keepalive() -> None:
    """sticky puts ip_hash (before keepalive) on the API upstream."""
    lines = block(conf(sticky=True), "upstream django_backend")
    assert lines.index("ip_hash;") < lines.index("keepalive 64;")


def test_nginx_round_robin_by_default() -> None:
    """The API upstream has no balancing directive by default (round robin)."""
    lines = block(conf(), "upstream django_backend")
    assert not {"ip_hash;", "least_conn;"} & set(lines)


def test_nginx_proxied_locations_keep_alive_upstream() -> None:
    """Every proxied location includes the headers and sets Connection itself."""
    text = conf()
    for head in re.findall(r"^\s*(location [^{]+?) \{", text, re.M):
        lines = block(text, head.strip())
        if any(line.startswith("proxy_pass") for line in lines):
            assert "include proxy_headers.conf;" in lines, head
            assert any(line.startswith("proxy_set_header Connection ") for line in lines), head


def test_nginx_http_version_for_keepalive() -> None:
    """Upstream keepalive needs HTTP/1.1."""
    assert "proxy_http_version 1.1;" in directives(conf())


def test_nginx_next_upstream_rules_without_non_idempotent() -> None:
    """Retry (and count max_fails) on transport failures only; a POST is never retried."""
    lines = directives(conf())
    rules = [line for line in lines if line.startswith("proxy_next_upstream ")]
    assert rules == ["proxy_next_upstream error timeout;"]
    assert not [line for line in lines if "non_idempotent" in line or "http_5" in line]


def test_nginx_probe_locations_internal_only_and_limited() -> None:
    """Probe paths through nginx: internal networks only, rate limited like the rest."""
    spec = DeploymentSpec()
    text = conf()
    for kind in ("live", "ready", "health", "status"):
        head = f"location = {spec.probe_paths[kind]} {{"
        body = text[text.index(head) : text.index("}", text.index(head))]
        assert "deny all;" in body, kind
        assert [f"allow {cidr};" for cidr in spec.internal_networks] == [
            line.strip() for line in body.splitlines() if line.strip().startswith("allow ")
        ], kind
        assert "limit_req zone=general" in body, kind


def test_nginx_limits_answer_429() -> None:
    """Rate and connection limits return 429, not 503."""
    lines = directives(conf())
    assert {"limit_req_status 429;", "limit_conn_status 429;"} <= set(lines)


def test_nginx_rate_zones_follow_spec() -> None:
    """Zones carry the spec's r/s values."""
    text = conf(rate_general=7, rate_stream=3, rate_auth=2)
    assert all(
        f"zone={z}:10m rate={r}r/s;" in text
        for z, r in [("general", 7), ("stream", 3), ("auth", 2)]
    )


def test_nginx_stream_location_unbuffered() -> None:
    """SSE: no buffering, no gzip, long read timeout, streaming upstream."""
    lines = block(conf(stream_read_timeout=900, api_read_timeout=30), "location /messages/stream/")
    expected = {"proxy_buffering off;", "gzip off;", "proxy_read_timeout 900s;"}
    assert expected | {"proxy_pass http://django_streaming;"} <= set(lines)


def test_nginx_websocket_location_upgrades() -> None:
    """/ws/ forwards Upgrade and maps Connection."""
    lines = block(conf(), "location /ws/")
    assert {
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    } <= set(lines)


def test_nginx_auth_location_strict_limit() -> None:
    """/auth/ uses the auth zone."""
    lines = block(conf(), "location /auth/")
    assert "limit_req zone=auth burst=10 nodelay;" in lines


@pytest.mark.parametrize("probe", ["live", "ready", "health", "status"])
def test_nginx_probes_limited_internal_with_short_timeouts(probe: str) -> None:
    """Probe paths through nginx are internal-only, rate limited (an nginx 403/429 never
    reaches a replica; orchestrators probe replicas directly) and have short timeouts."""
    lines = block(conf(probe_timeout=3), f"location = /{probe}/")
    assert [line for line in lines if line.startswith("limit_")] == [
        f"limit_req zone=general burst={DeploymentSpec().burst_general} nodelay;"
    ]
    assert "deny all;" in lines
    assert "proxy_read_timeout 3s;" in lines


def test_nginx_status_internal_only() -> None:
    """/status/ is allowed from internal networks, denied otherwise."""
    lines = block(conf(internal_networks=("10.1.0.0/16",)), "location = /status/")
    assert lines[:2] == ["allow 10.1.0.0/16;", "deny all;"]


def test_nginx_request_id_kept_when_well_formed() -> None:
    """A map keeps a well-formed X-Request-ID, else $request_id; sent up and returned."""
    text = conf()
    mapping = block(text, "map $http_x_request_id $arena_request_id")
    assert mapping[0] == "default $request_id;"
    assert "add_header X-Request-ID $arena_request_id always;" in directives(text)
    headers = nginx.render(DeploymentSpec())["nginx/proxy_headers.conf"]
    assert "proxy_set_header X-Request-ID $arena_request_id;" in headers


@pytest.mark.parametrize(
    ("value", "kept"),
    [("abcdef12-3456", True), ("short", False), ("x" * 129, False), ("a b c d e f g h", False)],
)
def test_nginx_request_id_pattern(value: str, kept: bool) -> None:
    """The pattern accepts ids and rejects short, long or spaced values."""
    assert bool(re.fullmatch(nginx.REQUEST_ID_PATTERN.strip("^$"), value)) is kept


def test_nginx_real_ip_absent_without_trusted_proxies() -> None:
    """No set_real_ip_from unless proxies are trusted."""
    assert "real_ip" not in "\n".join(directives(conf()))


def test_nginx_real_ip_only_from_trusted_proxies() -> None:
    """One set_real_ip_from per trusted proxy."""
    lines = directives(conf(trusted_proxies=("10.0.0.0/8",)))
    assert [line for line in lines if line.startswith("set_real_ip_from")] == [
        "set_real_ip_from 10.0.0.0/8;"
    ]


def test_nginx_forwarded_proto_is_scheme_without_trusted_proxies() -> None:
    """Directly exposed, nginx reports its own scheme (a client cannot claim https)."""
    headers = nginx.render(DeploymentSpec())["nginx/proxy_headers.conf"]
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in headers


def test_nginx_forwarded_proto_from_trusted_proxy() -> None:
    """Behind trusted proxies, their X-Forwarded-Proto (http/https only) is passed on."""
    files = nginx.render(DeploymentSpec(trusted_proxies=("10.0.0.0/8",)))
    mapping = block(files["nginx/nginx.conf"], "map $http_x_forwarded_proto $arena_forwarded_proto")
    assert mapping == ["default $scheme;", "https https;", "http http;"]
    assert "X-Forwarded-Proto $arena_forwarded_proto;" in files["nginx/proxy_headers.conf"]


def test_nginx_worker_connections_sized_for_streams() -> None:
    """worker_connections covers twice the stream capacity; rlimit covers it again."""
    spec = DeploymentSpec(stream_replicas=20, max_conns=500)
    text = nginx.render(spec)["nginx/nginx.conf"]
    wc = int(re.search(r"worker_connections (\d+);", text).group(1))  # type: ignore[union-attr]
    rl = int(re.search(r"worker_rlimit_nofile (\d+);", text).group(1))  # type: ignore[union-attr]
    assert wc >= 2 * spec.capacity.stream_connections
    assert rl >= wc


def test_nginx_stub_status_on_internal_listener() -> None:
    """stub_status lives on the status port, restricted to internal networks."""
    text = conf(status_port=9000)
    assert "listen 9000;" in directives(text)
    assert "deny all;" in block(text, "location = /nginx_status")


def test_nginx_server_lines_carry_passive_health() -> None:
    """Each replica line has max_fails, fail_timeout and max_conns; backups are marked."""
    files = nginx.render(DeploymentSpec(replicas=1, backup_replicas=1, max_conns=50))
    lines = directives(files["nginx/upstreams/django_backend.conf"])
    assert lines == [
        "server web-1:8000 max_fails=3 fail_timeout=30s max_conns=50;",
        "server web-backup-1:8000 max_fails=3 fail_timeout=30s max_conns=50 backup;",
    ]


def test_nginx_oss_128_profile_resolves() -> None:
    """oss-1.28: a resolver and 'resolve' on every server line (zones already present)."""
    files = nginx.render(DeploymentSpec(replicas=2, nginx_profile="oss-1.28"))
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in directives(files["nginx/nginx.conf"])
    lines = directives(files["nginx/upstreams/django_backend.conf"])
    assert all(" resolve " in line for line in lines)


def test_nginx_oss_122_profile_static() -> None:
    """oss-1.22: no resolver, no 'resolve'."""
    files = nginx.render(DeploymentSpec())
    assert "resolve" not in "\n".join(directives("\n".join(files.values())))


def test_local_variant_paths_relative() -> None:
    """pid, logs and temp paths are relative to the -p prefix."""
    lines = directives(local.render(DeploymentSpec(replicas=1))["nginx.conf"])
    expected = {"pid nginx.pid;", "error_log logs/error.log warn;", "proxy_temp_path tmp/proxy;"}
    assert expected <= set(lines)


def test_local_variant_upstreams_on_loopback() -> None:
    """Replica i is 127.0.0.1:base+i in the local upstream include."""
    files = local.render(DeploymentSpec(replicas=2, local_base_port=30000))
    assert re.findall(r"server (\S+) ", files["upstreams/django_backend.conf"]) == [
        "127.0.0.1:30001",
        "127.0.0.1:30002",
    ]


def test_local_variant_creates_log_and_temp_dirs() -> None:
    """logs/ and tmp/ exist (nginx needs them) and ignore their content."""
    files = local.render(DeploymentSpec(replicas=1))
    assert {"logs/.gitignore", "tmp/.gitignore"} <= set(files)


def compose_doc(**kw: Any) -> dict[str, Any]:
    return yaml.safe_load(compose.render(DeploymentSpec(**kw))["docker-compose.yml"])  # type: ignore[no-any-return]


def test_compose_explicit_replicas_from_anchor() -> None:
    """web-1..web-N are explicit services that all share the x-app block."""
    text = compose.render(DeploymentSpec(replicas=3))["docker-compose.yml"]
    assert text.count("  <<: *app") == 3 + 2 + 1  # web, stream, manage
    doc = yaml.safe_load(text)
    assert doc["services"]["web-3"]["image"] == doc["x-app"]["image"]


def test_compose_redis_roles_policies() -> None:
    """Cache allkeys-lru; sessions and channels noeviction."""
    services = compose_doc()["services"]
    assert "allkeys-lru" in services["redis-cache"]["command"]
    assert "noeviction" in services["redis-sessions"]["command"]


def test_compose_shared_redis_never_evicts() -> None:
    """One Redis for every role must not evict sessions."""
    services = compose_doc(redis_roles="shared")["services"]
    assert "noeviction" in services["redis"]["command"]
    assert "redis-cache" not in services


def test_compose_waits_for_healthy_data_stores() -> None:
    """App services depend on Redis and PostgreSQL being healthy."""
    depends = compose_doc()["services"]["web-1"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {
        "postgres": "service_healthy",
        "redis-cache": "service_healthy",
        "redis-sessions": "service_healthy",
    }


def test_compose_pgbouncer_in_front_of_postgres() -> None:
    """With PgBouncer the apps wait for it, and it for PostgreSQL."""
    services = compose_doc(pgbouncer=True)["services"]
    assert "pgbouncer" in services["web-1"]["depends_on"]
    assert services["pgbouncer"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_healthcheck_uses_python() -> None:
    """The app healthcheck needs no curl: Python's urllib probes /ready/."""
    test = compose_doc()["services"]["web-1"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "/ready/" in test[3]


def test_compose_resources_and_grace_from_spec() -> None:
    """deploy.resources and stop_grace_period come from the spec."""
    web = compose_doc(cpu_limit=2, memory_limit_mb=2048, drain_delay=5)["services"]["web-1"]
    assert web["deploy"]["resources"]["limits"] == {"cpus": "2", "memory": "2048M"}
    assert web["stop_grace_period"] == "40s"


def test_compose_one_network() -> None:
    """Every service is on the one project network (with a fixed address but one-off jobs)."""
    doc = compose_doc(project="shop")
    assert list(doc["networks"]) == ["shop-network"]
    assert all(list(svc["networks"]) == ["shop-network"] for svc in doc["services"].values())


def test_compose_secrets_only_in_env_file() -> None:
    """No environment entry of any service looks like a secret."""
    for svc in compose_doc(pgbouncer=True)["services"].values():
        assert not [k for k in svc.get("environment", {}) if re.search("PASSWORD|SECRET", k)]


def test_compose_nginx_mounts_config_dir() -> None:
    """nginx runs the generated config from the mounted nginx/ directory."""
    svc = compose_doc()["services"]["nginx"]
    assert svc["command"][:3] == ["nginx", "-c", "/etc/nginx/arena/nginx.conf"]
    assert "./nginx:/etc/nginx/arena:ro" in svc["volumes"]


def gunicorn_settings(spec: DeploymentSpec, name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(server.render(spec)[name], name, "exec"), namespace)
    return namespace


def test_server_wsgi_config_from_chain() -> None:
    """The WSGI worker class, workers/threads, graceful timeout and keep-alive from the chain."""
    spec = DeploymentSpec(workers=3, threads=5, keepalive_timeout=40, drain_delay=45)
    conf_ = gunicorn_settings(spec, "gunicorn.conf.py")
    assert (conf_["worker_class"], conf_["workers"], conf_["threads"]) == (WSGI_WORKER, 3, 5)
    assert conf_["graceful_timeout"] == spec.chain.server_graceful
    assert conf_["keepalive"] > 40


def test_server_config_imports_lifecycle_hooks() -> None:
    """The config exposes the lifecycle hooks to gunicorn."""
    from django_arena_scale.lifecycle import gunicorn as hooks

    conf_ = gunicorn_settings(DeploymentSpec(), "gunicorn.conf.py")
    assert conf_["worker_exit"] is hooks.worker_exit
    assert conf_["post_worker_init"] is hooks.post_worker_init


def test_server_asgi_config_uses_lifecycle_worker() -> None:
    """The streaming pool runs the lifecycle-aware uvicorn worker with its own worker count."""
    conf_ = gunicorn_settings(DeploymentSpec(stream_workers=3), "gunicorn_asgi.conf.py")
    assert conf_["worker_class"] == "django_arena_scale.lifecycle.uvicorn.UvicornWorker"
    assert (conf_["workers"], conf_["wsgi_app"]) == (3, "config.asgi:application")


def test_server_single_gthread_renders_one_config() -> None:
    """Without a streaming pool only gunicorn.conf.py is rendered."""
    assert list(server.render(DeploymentSpec(topology="single"))) == ["gunicorn.conf.py"]


def test_render_all_is_deterministic_and_sorted() -> None:
    """Two renders are identical, paths sorted, no timestamps."""
    first = render_all(DeploymentSpec(replicas=5)).files
    second = render_all(DeploymentSpec(replicas=5)).files
    assert first == second
    assert list(first) == sorted(first)
    assert not [p for p, t in first.items() if re.search(r"20\d\d-\d\d-\d\d[ T]\d\d:", t)]


def test_capacity_report_numbers() -> None:
    """The report shows workers, requests, streams, DB budget and memory."""
    text = report(DeploymentSpec())
    for fragment in (
        "10 API processes, 80 threads",
        "concurrent requests: 80",
        "stream capacity: 400",
        "85 needed",
        "97 allowed",
        ": ok",
        "12288 MiB limit",
    ):
        assert fragment in text, fragment


def test_capacity_report_advises_pgbouncer_when_exceeded() -> None:
    """More connections than PostgreSQL allows: PgBouncer advice."""
    text = report(DeploymentSpec(replicas=50))
    assert "EXCEEDED by" in text
    assert "--pgbouncer" in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_format_reaches_nginx_gunicorn_and_the_app(fmt: str) -> None:
    """log_format json: nginx's access log is JSON, the app gets LOG_FORMAT=json in compose
    and Kubernetes; in either format gunicorn writes no second access log (nginx has one)."""
    spec = DeploymentSpec(log_format=fmt)
    rendered = render_all(spec)
    conf = rendered.files["nginx/nginx.conf"]
    assert ("log_format arena escape=json" in conf) is (fmt == "json")
    gunicorn = server.build(spec)["gunicorn.conf.py"].settings
    assert "accesslog" not in gunicorn
    assert "accesslog" not in server.build(spec)["gunicorn_asgi.conf.py"].settings
    assert gunicorn["errorlog"] == "-"
    app = yaml.safe_load(rendered.files["docker-compose.yml"])["x-app"]["environment"]
    assert app["LOG_FORMAT"] == fmt
    config_map = next(yaml.safe_load_all(rendered.files["k8s/10-configmap.yaml"]))
    assert config_map["data"]["LOG_FORMAT"] == fmt


def test_log_format_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="log_format") as info:
        DeploymentSpec(log_format="xml")
    assert "'xml'" in str(info.value)
    assert "json" in str(info.value)
