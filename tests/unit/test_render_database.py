"""The database tier in the generated configs: PgBouncer (pinned image, transaction pooling,
short waits, the connection budget), DATABASE_PGBOUNCER and read replicas, compose and k8s."""

from __future__ import annotations

import re

import pytest

from django_arena_scale.deploy import DeploymentSpec, render_all
from django_arena_scale.deploy import _compose as compose
from django_arena_scale.deploy import _k8s as k8s
from django_arena_scale.deploy._spec import SpecError

POOLED = DeploymentSpec(pgbouncer=True, postgres_read_replicas=2, replicas=3)


def test_pgbouncer_image_is_pinned_to_a_version() -> None:
    image = DeploymentSpec().pgbouncer_image
    name, _, tag = image.rpartition(":")
    assert name
    assert tag != "latest"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+.*", tag), image


def test_compose_pgbouncer_settings_follow_the_budget() -> None:
    env = compose.document(POOLED)["services"]["pgbouncer"]["environment"]
    budget = POOLED.db_budget
    assert env["POOL_MODE"] == "transaction"
    assert env["DB_HOST"] == "postgres"
    assert env["QUERY_WAIT_TIMEOUT"] == str(POOLED.pgbouncer_query_wait_timeout) == "5"
    assert env["SERVER_LOGIN_RETRY"] == "1"
    assert (
        env["MAX_DB_CONNECTIONS"] == str(budget.limit) == str(POOLED.postgres_max_connections - 3)
    )
    assert int(env["DEFAULT_POOL_SIZE"]) == POOLED.pgbouncer_pool_size <= budget.limit
    assert int(env["MAX_CLIENT_CONN"]) > budget.needed


@pytest.mark.parametrize("pgbouncer", [True, False])
def test_app_env_says_whether_pgbouncer_is_in_front(pgbouncer: bool) -> None:
    spec = DeploymentSpec(pgbouncer=pgbouncer)
    flag = "1" if pgbouncer else "0"
    assert compose.document(spec)["x-app"]["environment"]["DATABASE_PGBOUNCER"] == flag
    assert k8s.config_map_env(spec)["DATABASE_PGBOUNCER"] == flag
    url = next(
        line for line in compose.render(spec)["env.example"].splitlines()
        if line.startswith("DATABASE_URL=")
    )  # fmt: skip
    assert url.endswith("@pgbouncer:6432/arena" if pgbouncer else "@postgres:5432/arena")


def test_compose_read_replicas() -> None:
    data = compose.document(POOLED)
    services = data["services"]
    replicas = ["postgres-replica-1", "postgres-replica-2"]
    for name in replicas:
        service = services[name]
        script = service["entrypoint"][-1]
        assert "pg_basebackup -h postgres" in script
        assert " -R " in script
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert f"{name}-data" in data["volumes"]
    files = compose.render(POOLED)
    assert (
        "./postgres/10-replication.sh:/docker-entrypoint-initdb.d/10-replication.sh:ro"
        in (services["postgres"]["volumes"])
    )
    assert "host replication all all scram-sha-256" in files["postgres/10-replication.sh"]
    urls = next(
        line.partition("=")[2] for line in files["env.example"].splitlines()
        if line.startswith("DATABASE_REPLICA_URLS=")
    )  # fmt: skip
    assert urls.split(",") == [
        f"postgres://arena:POSTGRES_PASSWORD@{name}:5432/arena" for name in replicas
    ]
    addresses = compose.fixed_addresses(POOLED)
    assert len(set(addresses.values())) == len(addresses)
    # Replicas are not something the app waits for: a dead one only moves reads to the primary.
    assert not set(replicas) & set(data["x-app"]["depends_on"])


def test_no_replica_services_by_default() -> None:
    files = render_all(DeploymentSpec()).files
    assert "postgres/10-replication.sh" not in files
    assert "DATABASE_REPLICA_URLS" not in files["env.example"]
    assert "postgres-replica" not in files["docker-compose.yml"]


def test_read_replicas_are_bounded() -> None:
    with pytest.raises(SpecError, match="postgres_read_replicas"):
        DeploymentSpec(postgres_read_replicas=9)


def test_k8s_pgbouncer() -> None:
    files = k8s.build(POOLED)
    deployment, service = files["k8s/35-pgbouncer.yaml"]
    assert deployment["spec"]["replicas"] == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == POOLED.pgbouncer_image
    env = {e["name"]: e for e in container["env"]}
    assert env["POOL_MODE"]["value"] == "transaction"
    assert env["MAX_DB_CONNECTIONS"]["value"] == str(POOLED.db_budget.limit)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PRIMARY_URL"
    assert service["spec"]["ports"][0]["port"] == 6432
    assert "k8s/35-pgbouncer.yaml" not in k8s.build(DeploymentSpec())
