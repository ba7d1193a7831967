"""Names and values more than one renderer writes, so no renderer imports another's helpers.

The compose file name (the deploy script drives it), the container user (Dockerfile and pod
security context), the Host header probes send (Dockerfile, deploy script, kubelet), the
Kubernetes object names and metadata, and the preStop drain (manifests and OPERATIONS.md).
"""

from __future__ import annotations

from typing import Any

from django_arena_scale.deploy._spec import MAX_REPLICAS, DeploymentSpec

__all__ = [
    "APP_UID",
    "COMPOSE_FILE",
    "K8S_MANAGED_BY",
    "config_name",
    "host_header",
    "k8s_labels",
    "k8s_meta",
    "pgbouncer_environment",
    "pools",
    "prestop_command",
    "secret_name",
    "server_config_name",
    "termination_grace_seconds",
]

COMPOSE_FILE = "docker-compose.yml"
#: PgBouncer's port in compose and Kubernetes.
PGBOUNCER_PORT = 6432
#: The container user of the generated Dockerfile (and the pods' runAsUser).
APP_UID = 10001
#: The ``app.kubernetes.io/managed-by`` label of every Kubernetes object.
K8S_MANAGED_BY = "django-arena-scale"


def k8s_labels(spec: DeploymentSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": spec.project,
        "app.kubernetes.io/component": component,
    }


def k8s_meta(spec: DeploymentSpec, name: str, component: str, **extra: Any) -> dict[str, Any]:
    labels = {**k8s_labels(spec, component), "app.kubernetes.io/managed-by": K8S_MANAGED_BY}
    return {"name": name, "namespace": spec.namespace, "labels": labels, **extra}


def host_header(spec: DeploymentSpec) -> str:
    """The Host header probes send: the server name, or ``localhost`` for the catch-all."""
    if spec.server_name == "_":
        return "localhost"
    return spec.server_name.removeprefix("*.")


def secret_name(spec: DeploymentSpec) -> str:
    """The Secret every pod reads SECRET_KEY, DATABASE_URL, Redis URLs and API keys from."""
    return f"{spec.project}-secrets"


def config_name(spec: DeploymentSpec) -> str:
    """The ConfigMap of the app's non-secret environment."""
    return f"{spec.project}-config"


def server_config_name(spec: DeploymentSpec) -> str:
    """The ConfigMap holding the rendered ``gunicorn*.conf.py`` (mounted at config_dir)."""
    return f"{spec.project}-server-config"


def pools(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """One entry per Deployment: name, component, minimum and maximum replicas, and the compose
    service whose command and server config the pool's pods share."""
    result: list[dict[str, Any]] = [
        {
            "component": "web",
            "replicas": spec.replicas,
            "hpa_max": spec.hpa_max,
            "service": spec.web_names[0],
        }
    ]
    if spec.stream_names:
        result.append(
            {
                "component": "stream",
                "replicas": spec.stream_replicas,
                "hpa_max": min(MAX_REPLICAS, 2 * spec.stream_replicas),
                "service": spec.stream_names[0],
            }
        )
    for pool in result:
        pool["name"] = f"{spec.project}-{pool['component']}"
    return result


def prestop_command(spec: DeploymentSpec) -> list[str]:
    """Drain, then wait while the endpoints controller and ingress-nginx drop the pod."""
    return ["sh", "-c", f"python manage.py drain on; sleep {int(spec.chain.drain_delay)}"]


def termination_grace_seconds(spec: DeploymentSpec) -> int:
    """SIGKILL deadline: the chain's stop grace period (>= preStop sleep + graceful + margin).

    The kubelet counts the preStop hook inside this period, exactly as the deploy script
    counts its drain delay inside compose's ``stop_grace_period``.
    """
    return spec.chain.stop_grace_period


def pgbouncer_environment(spec: DeploymentSpec) -> dict[str, str]:
    """The PgBouncer image's settings (``spec.pgbouncer_image``, configured from environment
    variables), the same in compose and Kubernetes; the server address comes separately.

    ``MAX_DB_CONNECTIONS`` is the connection budget of the primary (``max_connections`` minus
    the superuser reserve): whatever the pools, PgBouncer never opens more server connections.
    ``QUERY_WAIT_TIMEOUT`` is short, so a request meets a dead primary as a fast 503, and
    ``SERVER_LOGIN_RETRY`` 1 s notices the primary's return within a second.
    """
    budget = spec.db_budget
    return {
        "AUTH_TYPE": "scram-sha-256",
        "DEFAULT_POOL_SIZE": str(spec.pgbouncer_pool_size),
        "LISTEN_PORT": str(PGBOUNCER_PORT),
        "MAX_CLIENT_CONN": str(budget.needed + 10),
        "MAX_DB_CONNECTIONS": str(budget.limit),
        "POOL_MODE": "transaction",
        "QUERY_WAIT_TIMEOUT": str(spec.pgbouncer_query_wait_timeout),
        "SERVER_LOGIN_RETRY": "1",
    }
