"""Kubernetes manifests (``k8s/``) rendered from a :class:`DeploymentSpec`.

One Deployment per app pool (``web``; plus ``stream``, the ASGI pool, in the split topology),
each with its Service, HorizontalPodAutoscaler (autoscaling/v2) and PodDisruptionBudget
(policy/v1); ingress-nginx Ingresses carrying the same limits and timeouts as the generated
nginx.conf; a ConfigMap of non-secret settings (secrets come from the Secret named in
:func:`secret_name`, never inline); a migration Job; per pool a headless ``-metrics`` Service
that lists every pod, ready or not, for Prometheus' DNS discovery.  Files are numbered so that
``kubectl apply -f k8s/`` creates the Namespace and ConfigMap before what uses them.

The shutdown sequence mirrors the compose one: the kubelet runs ``preStop`` (``manage.py drain
on`` writes ``ARENA_SCALE_DRAIN_FILE``, so ``/ready/`` answers 503, then sleeps
``drain_delay`` while the endpoints controller and ingress-nginx forget the pod), then sends
SIGTERM; the server has ``graceful_timeout`` left before ``terminationGracePeriodSeconds``
(``spec.chain.stop_grace_period``) ends in SIGKILL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django_arena_scale._redact import looks_secret
from django_arena_scale.deploy import _server as server
from django_arena_scale.deploy._k8s_ingress import ingresses as _ingresses
from django_arena_scale.deploy._shared import (
    APP_UID,
    K8S_MANAGED_BY,
    PGBOUNCER_PORT,
    config_name,
    host_header,
    k8s_labels,
    k8s_meta,
    pgbouncer_environment,
    pools,
    prestop_command,
    secret_name,
    server_config_name,
    termination_grace_seconds,
)
from django_arena_scale.deploy._spec import (
    K8S_DRAIN_DIR,
    K8S_DRAIN_FILE,
    DeploymentSpec,
)
from django_arena_scale.deploy._yaml import dump_yaml

# APP_UID, host_header, pools, prestop_command, secret_name, server_config_name and
# termination_grace_seconds live in ._shared (other renderers write them too); they stay
# importable from here, where they were first defined.
__all__ = [
    "APP_UID",
    "DRAIN_FILE",
    "build",
    "config_map_env",
    "dump_yaml",
    "host_header",
    "metrics_service_name",
    "pools",
    "prestop_command",
    "render",
    "secret_name",
    "serialise",
    "server_config_name",
    "termination_grace_seconds",
]

#: Where the preStop hook writes the drain file (declared with the spec, which the checks read).
DRAIN_DIR = K8S_DRAIN_DIR
DRAIN_FILE = K8S_DRAIN_FILE
MANAGED_BY = K8S_MANAGED_BY
_labels = k8s_labels
_meta = k8s_meta


def _secret_env(key: str) -> bool:
    """Kept out of the ConfigMap: names that look secret, and URLs (they may carry passwords)."""
    return looks_secret(key) or key.upper().endswith("_URL")


# --- names and helpers ------------------------------------------------------------------------


def config_map_env(spec: DeploymentSpec) -> dict[str, str]:
    """The ConfigMap's data: the app's non-secret environment, adapted to Kubernetes.

    Redis and database URLs may carry passwords and name compose hosts, so they come from the
    Secret instead.
    """
    env = {k: v for k, v in spec.app_environment.items() if not _secret_env(k)}
    env.update(
        {
            "ARENA_SCALE_DRAIN_FILE": DRAIN_FILE,
            "ARENA_SCALE_REPLICAS": str(spec.replicas),
            "DJANGO_SETTINGS_MODULE": spec.settings_module,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spec.server_name != "_":
        env.setdefault("ALLOWED_HOSTS", spec.server_name.replace("*.", "."))
    return dict(sorted(env.items()))


def _cpu(value: float) -> str:
    return f"{round(value * 1000)}m"


def _resources(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "requests": {
            "cpu": _cpu(spec.cpu_reservation),
            "memory": f"{spec.memory_reservation_mb}Mi",
        },
        "limits": {"cpu": _cpu(spec.cpu_limit), "memory": f"{spec.memory_limit_mb}Mi"},
    }


def _probe(spec: DeploymentSpec, path: str, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {
            "path": path,
            "port": "http",
            "httpHeaders": [{"name": "Host", "value": host_header(spec)}],
        },
        "periodSeconds": spec.chain.probe_period,
        "timeoutSeconds": spec.chain.probe,
        "failureThreshold": failure_threshold,
    }


def liveness_probe(spec: DeploymentSpec, service: str) -> dict[str, Any]:
    """The livenessProbe of a pool's pods: never starved by the request thread pool.

    A gthread replica answers ``/live/`` on one of its request threads; clients that trickle
    request headers hold every thread (gunicorn has no header-read deadline), so an HTTP
    liveness probe would time out and the kubelet would restart a healthy pod, again and again,
    under a slowloris from inside the network.  What ``/live/`` checks there (the worker's main
    loop still beats) is what gunicorn's master already acts on: it kills and replaces a worker
    that stops notifying for ``timeout`` s.  So gthread pods get a ``tcpSocket`` probe (the
    kernel completes the handshake while gunicorn listens, however busy its threads are) and
    the kubelet restarts only a pod whose server no longer listens.  Uvicorn pods answer
    ``/live/`` on the event loop, which slow headers do not block: they keep the HTTP probe.
    """
    chain = spec.chain
    if spec.server_of(service) == "uvicorn":
        return _probe(spec, spec.probe_paths["live"], chain.liveness_failure_threshold)
    return {
        "tcpSocket": {"port": "http"},
        "periodSeconds": chain.probe_period,
        "timeoutSeconds": chain.probe,
        "failureThreshold": chain.liveness_failure_threshold,
    }


_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_defaults() -> dict[str, Any]:
    # The app never talks to the Kubernetes API, and service links would inject
    # <SERVICE>_PORT variables that can shadow settings such as REDIS_PORT.
    return {"automountServiceAccountToken": False, "enableServiceLinks": False}


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": APP_UID,
        "runAsGroup": APP_UID,
        "fsGroup": APP_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env_from(spec: DeploymentSpec) -> list[dict[str, Any]]:
    return [
        {"configMapRef": {"name": config_name(spec)}},
        {"secretRef": {"name": secret_name(spec)}},
    ]


def _volumes(
    spec: DeploymentSpec, *, server_config: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "drain", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "drain", "mountPath": DRAIN_DIR},
    ]
    if server_config:
        volumes.append({"name": "server-config", "configMap": {"name": server_config_name(spec)}})
        mounts.append({"name": "server-config", "mountPath": spec.config_dir, "readOnly": True})
    return volumes, mounts


def _deployment(spec: DeploymentSpec, pool: Mapping[str, Any]) -> dict[str, Any]:
    chain = spec.chain
    component = pool["component"]
    volumes, mounts = _volumes(spec, server_config=True)
    container = {
        "name": component,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        # The same argv and gunicorn config files as the compose services.
        "command": list(spec.server_command(pool["service"], spec.config_dir)),
        "ports": [{"name": "http", "containerPort": spec.app_port, "protocol": "TCP"}],
        "envFrom": _env_from(spec),
        "resources": _resources(spec),
        "startupProbe": _probe(spec, spec.probe_paths["health"], chain.startup_failure_threshold),
        "readinessProbe": _probe(spec, spec.probe_paths["ready"], 3),
        "livenessProbe": liveness_probe(spec, pool["service"]),
        "lifecycle": {"preStop": {"exec": {"command": prestop_command(spec)}}},
        "securityContext": _SECURITY,
        "volumeMounts": mounts,
    }
    labels = _labels(spec, component)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, pool["name"], component),
        "spec": {
            # No "replicas": the HPA owns the count, and re-applying this file must not reset
            # it.  The HPA raises a fresh Deployment to minReplicas within seconds.
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_seconds(spec),
                    **_pod_defaults(),
                    "securityContext": _pod_security(),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(spec: DeploymentSpec, pool: Mapping[str, Any]) -> dict[str, Any]:
    component = pool["component"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, pool["name"], component),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(spec, component),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


#: The Secret key holding the primary's own URL, which PgBouncer connects to (the app's
#: DATABASE_URL then names PgBouncer's Service).
PGBOUNCER_UPSTREAM_KEY = "POSTGRES_PRIMARY_URL"


def _pgbouncer(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """PgBouncer in transaction mode in front of the (external) primary: one pod, so that
    ``MAX_DB_CONNECTIONS`` bounds the whole app's server connections; a Service on 6432."""
    name = spec.pgbouncer_service
    labels = _labels(spec, name)
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in pgbouncer_environment(spec).items()
    ]
    env.append(
        {
            "name": "DATABASE_URL",
            "valueFrom": {
                "secretKeyRef": {"name": secret_name(spec), "key": PGBOUNCER_UPSTREAM_KEY}
            },
        }
    )
    port = {"name": "postgres", "containerPort": PGBOUNCER_PORT, "protocol": "TCP"}
    probe = {"tcpSocket": {"port": "postgres"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": name,
        "image": spec.pgbouncer_image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [port],
        "env": env,
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, name, name),
        "spec": {
            # One pod: two would each open up to MAX_DB_CONNECTIONS server connections.
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {**_pod_defaults(), "containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, name, name),
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [
                {
                    "name": "postgres",
                    "port": PGBOUNCER_PORT,
                    "targetPort": "postgres",
                    "protocol": "TCP",
                }
            ],
        },
    }
    return [deployment, service]


def metrics_service_name(pool: Mapping[str, Any]) -> str:
    """The headless Service Prometheus finds a pool's pods through (DNS, one A record each)."""
    return f"{pool['name']}-metrics"


def _metrics_service(spec: DeploymentSpec, pool: Mapping[str, Any]) -> dict[str, Any]:
    """Headless, and listing pods that are not ready: a draining or unready pod is still
    scraped (its readiness and drain metrics are what the alerts read)."""
    component = pool["component"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, metrics_service_name(pool), component),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": _labels(spec, component),
            "ports": [
                {"name": "http", "port": spec.app_port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _hpa(spec: DeploymentSpec, pool: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec, pool["name"], pool["component"]),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool["name"]},
            "minReplicas": pool["replicas"],
            "maxReplicas": max(pool["replicas"], pool["hpa_max"]),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.hpa_cpu_target,
                        },
                    },
                }
            ],
            "behavior": {
                # Removing a pod ends its streams (clients reconnect): scale down slowly.
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
                },
            },
        },
    }


def _pdb(spec: DeploymentSpec, pool: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, pool["name"], pool["component"]),
        "spec": {
            "maxUnavailable": max(1, pool["replicas"] // 10),
            "selector": {"matchLabels": _labels(spec, pool["component"])},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _config_map(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, config_name(spec), "config"),
        "data": config_map_env(spec),
    }


def _server_config_map(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, server_config_name(spec), "config"),
        "data": dict(sorted(server.render(spec).items())),
    }


def _namespace(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": spec.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
    }


def _migrate_job(spec: DeploymentSpec) -> dict[str, Any]:
    volumes, mounts = _volumes(spec, server_config=False)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(spec, f"{spec.project}-migrate", "migrate"),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": _labels(spec, "migrate")},
                "spec": {
                    "restartPolicy": "Never",
                    **_pod_defaults(),
                    "securityContext": _pod_security(),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": spec.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "manage.py", "migrate", "--noinput"],
                            "envFrom": _env_from(spec),
                            "resources": _resources(spec),
                            "securityContext": _SECURITY,
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def build(spec: DeploymentSpec) -> dict[str, list[dict[str, Any]]]:
    """The manifests as data: relative path -> its YAML documents (what the checks read)."""
    pool_list = pools(spec)
    files = {
        "k8s/00-namespace.yaml": [_namespace(spec)],
        "k8s/10-configmap.yaml": [_config_map(spec), _server_config_map(spec)],
        "k8s/20-job-migrate.yaml": [_migrate_job(spec)],
        "k8s/50-ingress.yaml": _ingresses(spec),
        "k8s/60-hpa.yaml": [_hpa(spec, p) for p in pool_list],
        "k8s/70-pdb.yaml": [_pdb(spec, p) for p in pool_list],
        "k8s/45-service-metrics.yaml": [_metrics_service(spec, p) for p in pool_list],
    }
    if spec.pgbouncer:
        files["k8s/35-pgbouncer.yaml"] = _pgbouncer(spec)
    for pool in pool_list:
        component = pool["component"]
        files[f"k8s/30-deployment-{component}.yaml"] = [_deployment(spec, pool)]
        files[f"k8s/40-service-{component}.yaml"] = [_service(spec, pool)]
    return {path: files[path] for path in sorted(files)}


HEADER = (
    "# Generated by django-arena-scale (manage.py generate_lb_config) from one spec;\n"
    "# regenerate instead of editing.  Apply: kubectl apply -f k8s/\n"
)


def serialise(spec: DeploymentSpec, data: Mapping[str, Sequence[Any]]) -> dict[str, str]:
    """The text of each manifest file (``spec`` is unused: the header is the same for all)."""
    del spec
    return {path: HEADER + dump_yaml(*docs) for path, docs in data.items()}


def render(spec: DeploymentSpec) -> dict[str, str]:
    """``k8s/*.yaml`` for ``spec`` (relative path -> content, sorted)."""
    return serialise(spec, build(spec))
