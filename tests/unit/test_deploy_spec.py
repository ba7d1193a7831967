"""DeploymentSpec: defaults, sources, validation and derived numbers (pure, no Django)."""

from __future__ import annotations

import dataclasses

import pytest

from django_arena_scale.deploy._spec import DeploymentSpec, SpecError


def test_spec_defaults_reproduce_reference_design() -> None:
    """The defaults are the reference: 10 replicas, 1 CPU/1 GiB, nginx limits; its 8 requests at
    once per replica as 1 worker x 8 threads instead of 4 x 2 (one process on one CPU: less CPU
    per request and a quarter of the memory, docs/benchmarks/throughput.md)."""
    s = DeploymentSpec()
    # nginx's upstream keepalive_timeout: derived below drain_delay (10 - 2), not the 60 s of
    # the hand-made setup, so a drain never closes a connection nginx is sending on.
    reference = (10, 1, 8, 1.0, 1024, 0.5, 512, 64, 8, 3, 30, 200, 100, 10, 5, 20, 600, "2gb")
    assert (
        s.replicas,
        s.workers,
        s.threads,
        s.cpu_limit,
        s.memory_limit_mb,
        s.cpu_reservation,
        s.memory_reservation_mb,
        s.keepalive,
        s.upstream_keepalive_timeout,
        s.max_fails,
        s.fail_timeout,
        s.max_conns,
        s.rate_general,
        s.rate_stream,
        s.rate_auth,
        s.conn_per_ip,
        s.stream_read_timeout,
        s.redis_maxmemory,
    ) == reference


def test_spec_is_frozen() -> None:
    """A spec cannot be changed after validation."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        DeploymentSpec().replicas = 3  # type: ignore[misc]


def test_spec_repr_shows_non_defaults() -> None:
    """repr names only the fields that differ from the defaults."""
    assert repr(DeploymentSpec(replicas=3)) == "<DeploymentSpec replicas=3>"


def test_spec_from_sources_cli_overrides_setting() -> None:
    """CLI options override ARENA_SCALE_DEPLOY, which overrides the defaults."""
    s = DeploymentSpec.from_sources({"replicas": "4"}, {"replicas": 7, "workers": 3})
    assert (s.replicas, s.workers, s.threads) == (4, 3, 8)


def test_spec_from_sources_none_means_not_given() -> None:
    """A CLI value of None leaves the setting's value in place."""
    assert DeploymentSpec.from_sources({"replicas": None}, {"replicas": 7}).replicas == 7


def test_spec_from_sources_unknown_setting_key_suggests_field() -> None:
    """An unknown ARENA_SCALE_DEPLOY key is rejected with a did-you-mean."""
    with pytest.raises(SpecError, match=r"ARENA_SCALE_DEPLOY .*did you mean 'replicas'.*'replica'"):
        DeploymentSpec.from_sources({}, {"replica": 3})


def test_spec_from_sources_setting_values_are_not_coerced() -> None:
    """A setting must hold the field's type: the string '3' is not an integer there."""
    with pytest.raises(SpecError, match=r"replicas must be an integer from 1 to 500; got '3'\."):
        DeploymentSpec.from_sources({}, {"replicas": "3"})


def test_spec_from_sources_setting_lists_become_tuples() -> None:
    """A list in ARENA_SCALE_DEPLOY is accepted for a sequence field."""
    spec = DeploymentSpec.from_sources({}, {"trusted_proxies": ["10.0.0.0/8"]})
    assert spec.trusted_proxies == ("10.0.0.0/8",)


def test_spec_from_sources_parses_cli_types() -> None:
    """CLI strings become ints, floats, booleans and comma-separated tuples."""
    s = DeploymentSpec.from_sources(
        {"cpu_limit": "2", "sticky": "yes", "trusted_proxies": "10.0.0.0/8,192.168.1.0/24"}
    )
    assert (s.cpu_limit, s.sticky, s.trusted_proxies) == (
        2.0,
        True,
        ("10.0.0.0/8", "192.168.1.0/24"),
    )


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("replicas", "0", "must be an integer from 1 to 500"),
        ("replicas", "-1", "must be an integer from 1 to 500"),
        ("replicas", "ten", "must be an integer from 1 to 500"),
        ("replicas", "100000", "must be an integer from 1 to 500"),
        ("replicas", "1.5", "must be an integer from 1 to 500"),
        ("http_port", "0", "must be an integer from 1 to 65535"),
        ("http_port", "65536", "must be an integer from 1 to 65535"),
        ("cpu_limit", "nan", "must be a number"),
        ("sticky", "maybe", "must be true or false"),
        ("topology", "mesh", "must be one of split, single"),
    ],
)
def test_spec_rejects_bad_cli_value(field: str, value: str, rule: str) -> None:
    """Each bad value gives a SpecError naming the field, the rule and the value."""
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_sources({field: value})
    message = str(info.value)
    assert message.startswith(f"{field} {rule}")
    assert value in message
    assert message.endswith(".")


@pytest.mark.parametrize("bad", [";", "{", "}", '"', "'", "\n", " "])
@pytest.mark.parametrize(
    "field", ["server_name", "image", "wsgi_app", "project", "env_file", "ws_path", "resolver"]
)
def test_spec_rejects_config_syntax_in_string_values(field: str, bad: str) -> None:
    """No string field may carry nginx/YAML/shell syntax characters."""
    good = getattr(DeploymentSpec(), field)
    value = good[:-1] + bad + good[-1:] if len(good) > 1 else good + bad
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_sources({field: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("bad", [";", "{", "}", '"', "\n", " "])
def test_spec_rejects_config_syntax_in_list_values(bad: str) -> None:
    """Comma-separated values are checked item by item."""
    with pytest.raises(SpecError, match="trusted_proxies must hold IP networks"):
        DeploymentSpec.from_sources({"trusted_proxies": f"10.0.0.0/8{bad}"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cpu_reservation": 2.0}, "cpu_reservation"),
        ({"memory_reservation_mb": 2048}, "memory_reservation_mb"),
        ({"app_graceful_timeout": 30}, "app_graceful_timeout"),
        ({"stop_grace_period": 20}, "stop_grace_period"),
        ({"api_read_timeout": 700}, "api_read_timeout"),
        ({"probe_timeout": 10}, "probe_timeout"),
        ({"sticky": True, "backup_replicas": 1}, "backup_replicas"),
        ({"hpa_max_replicas": 5}, "hpa_max_replicas"),
        ({"status_port": 80}, "status_port"),
        ({"local_port": 18001}, "local_port"),
        ({"local_base_port": 65500, "replicas": 100}, "local_base_port"),
        ({"topology": "split", "app_server": "uvicorn"}, "app_server"),
        ({"stream_paths": ("/ws/",)}, "stream_paths"),
    ],
)
def test_spec_rejects_inconsistent_fields(changes: dict[str, object], field: str) -> None:
    """Cross-field rules name the field that breaks them."""
    with pytest.raises(SpecError) as info:
        DeploymentSpec(**changes)  # type: ignore[arg-type]
    assert info.value.field == field


def test_spec_chain_derives_stop_grace_period() -> None:
    """stop_grace_period = drain + graceful + margin when not given."""
    chain = DeploymentSpec(drain_delay=7, graceful_timeout=31).chain
    assert chain.stop_grace_period == 7 + 31 + 5


def test_spec_chain_server_keepalive_outlives_nginx() -> None:
    """The app server keeps idle connections longer than nginx's upstream keepalive."""
    chain = DeploymentSpec(keepalive_timeout=75, drain_delay=80).chain
    assert chain.server_keepalive > chain.nginx_keepalive_timeout == 75


def test_spec_nginx_keepalive_shorter_than_the_drain() -> None:
    """nginx must close its idle connections to a draining replica within the drain: an
    explicit keepalive_timeout not below drain_delay is refused, naming both."""
    with pytest.raises(SpecError, match=r"keepalive_timeout \(10\) must be shorter than drain"):
        DeploymentSpec(keepalive_timeout=10)
    with pytest.raises(SpecError, match=r"drain_delay.*keepalive_timeout \(1\) must be shorter"):
        DeploymentSpec(drain_delay=1)
    assert DeploymentSpec(keepalive_timeout=9).chain.nginx_keepalive_timeout == 9
    assert DeploymentSpec(drain_delay=0).chain.nginx_keepalive_timeout == 1
    assert DeploymentSpec(drain_delay=30).chain.nginx_keepalive_timeout == 28


def test_spec_chain_liveness_tolerates_worker_timeout() -> None:
    """Liveness fails only after more than a full worker_timeout of silence."""
    chain = DeploymentSpec(worker_timeout=95, probe_period=10).chain
    assert chain.liveness_failure_threshold * chain.probe_period > 95


def test_spec_db_budget_counts_threads() -> None:
    """Connections = replicas x workers x threads (+ streaming workers + one job)."""
    budget = DeploymentSpec(replicas=3, workers=2, threads=5, stream_replicas=2).db_budget
    assert (budget.api, budget.stream, budget.needed) == (30, 4, 35)


def test_spec_db_budget_exceeded_for_many_replicas() -> None:
    """50 replicas of 4 x 2 exceed PostgreSQL's default 100 connections."""
    assert DeploymentSpec(replicas=50).db_budget.exceeded


def test_spec_db_budget_pgbouncer_bounds_server_connections() -> None:
    """With PgBouncer only its pool counts against max_connections."""
    assert not DeploymentSpec(replicas=50, pgbouncer=True).db_budget.exceeded


def test_spec_capacity_stream_connections() -> None:
    """Stream capacity = max_conns x replicas of the streaming upstream."""
    spec = DeploymentSpec(topology="single", replicas=10, app_server="uvicorn")
    assert spec.capacity.stream_connections == 200 * 10


def test_spec_names_are_explicit() -> None:
    """web-1..web-N, web-backup-1..B and stream-1..M, in port order."""
    spec = DeploymentSpec(replicas=2, backup_replicas=1, stream_replicas=2)
    assert spec.app_services == ("web-1", "web-2", "web-backup-1", "stream-1", "stream-2")


def test_spec_single_topology_has_no_stream_pool() -> None:
    """Both upstreams list the web replicas in the single topology."""
    spec = DeploymentSpec(topology="single", replicas=2)
    assert [m.name for m in spec.stream_members] == ["web-1", "web-2"]


def test_spec_local_ports_follow_base_port() -> None:
    """In the local variant, the i-th app service listens on base + i."""
    spec = DeploymentSpec(target="local", replicas=2, local_base_port=20000)
    assert [spec.local_service_port(s) for s in spec.app_services] == [20001, 20002, 20003, 20004]


def test_spec_local_address_is_loopback() -> None:
    """nginx reaches local replicas on 127.0.0.1."""
    spec = DeploymentSpec(target="local", replicas=1, local_base_port=20000)
    assert spec.address("web-1") == "127.0.0.1:20001"


def test_spec_server_command_local_binds_loopback() -> None:
    """The local variant starts each replica with its own --bind."""
    spec = DeploymentSpec(target="local", replicas=1, local_base_port=20000)
    assert spec.server_command("stream-1", "/out") == (
        "gunicorn",
        "--config",
        "/out/gunicorn_asgi.conf.py",
        "--bind",
        "127.0.0.1:20002",
    )


def test_spec_redis_roles_split() -> None:
    """Sessions and channels never share the evicting cache Redis."""
    spec = DeploymentSpec()
    assert spec.redis_url("cache") != spec.redis_url("sessions")


def test_spec_nginx_worker_connections_cover_stream_capacity() -> None:
    """Each nginx worker can hold every admitted stream plus its upstream connection."""
    spec = DeploymentSpec(replicas=500, stream_replicas=100)
    assert spec.nginx_worker_connections >= 2 * spec.capacity.stream_connections
