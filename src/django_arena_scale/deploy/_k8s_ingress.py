"""The ingress-nginx Ingresses of the Kubernetes manifests (``k8s/50-ingress.yaml``).

They carry the same limits and timeouts as the generated nginx.conf: per-path rate limits and
bursts, connection limits, read timeouts from the timeout chain, unbuffered streams that are
never replayed on another pod, and the internal paths (``/status/``, metrics) restricted to
the internal networks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from django_arena_scale.deploy._shared import k8s_meta as _meta
from django_arena_scale.deploy._spec import NEXT_UPSTREAM, DeploymentSpec

__all__ = ["ingresses"]


def _burst_multiplier(rate: int, burst: int) -> str:
    # ingress-nginx expresses the burst as a multiple of the rate; round up so the burst the
    # spec allows is never refused.
    return str(max(1, math.ceil(burst / rate)))


def _ingress(
    spec: DeploymentSpec,
    suffix: str,
    paths: Sequence[str],
    backend: str,
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    prefix = "nginx.ingress.kubernetes.io/"
    rule: dict[str, Any] = {}
    if spec.server_name != "_":
        rule["host"] = spec.server_name
    rule["http"] = {
        "paths": [
            {
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": backend, "port": {"name": "http"}}},
            }
            for path in paths
        ]
    }
    body: dict[str, Any] = {"ingressClassName": spec.ingress_class}
    if spec.server_name != "_":
        body["tls"] = [{"hosts": [spec.server_name], "secretName": f"{spec.project}-tls"}]
    body["rules"] = [rule]
    meta = _meta(
        spec,
        f"{spec.project}-{suffix}",
        "ingress",
        annotations={prefix + k: v for k, v in sorted(annotations.items())},
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": body,
    }


def ingresses(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """The Ingresses: api, stream, auth (when auth paths are set), probes, internal."""
    chain = spec.chain
    web = f"{spec.project}-web"
    stream = f"{spec.project}-stream" if spec.stream_names else web
    common = {
        "proxy-connect-timeout": str(chain.connect),
        "proxy-body-size": f"{spec.client_max_body_mb}m",
        "proxy-next-upstream": NEXT_UPSTREAM,
        "proxy-next-upstream-tries": "3",
        "limit-connections": str(spec.conn_per_ip),
    }

    def limited(rate: int, burst: int, read: int) -> dict[str, str]:
        return {
            **common,
            "limit-rps": str(rate),
            "limit-burst-multiplier": _burst_multiplier(rate, burst),
            "proxy-read-timeout": str(read),
            "proxy-send-timeout": str(read),
        }

    api = limited(spec.rate_general, spec.burst_general, chain.api_read)
    if spec.sticky:
        api["upstream-hash-by"] = "$binary_remote_addr"
    streaming = limited(spec.rate_stream, spec.burst_stream, chain.stream_read)
    # SSE must reach the client token by token; WebSockets are upgraded by ingress-nginx
    # itself and only need the long read/send timeouts.
    streaming["proxy-buffering"] = "off"
    streaming["proxy-request-buffering"] = "off"
    # A stream that already sent bytes must never be replayed on another pod.
    streaming["proxy-next-upstream"] = "error timeout"
    result = [_ingress(spec, "api", ["/"], web, api)]
    result.append(_ingress(spec, "stream", [*spec.stream_paths, spec.ws_path], stream, streaming))
    if spec.auth_paths:
        auth = limited(spec.rate_auth, spec.burst_auth, chain.api_read)
        result.append(_ingress(spec, "auth", list(spec.auth_paths), web, auth))
    probes = {
        "proxy-connect-timeout": str(chain.connect),
        "proxy-read-timeout": str(chain.probe),
        "proxy-send-timeout": str(chain.probe),
    }
    paths = spec.probe_paths
    result.append(
        _ingress(spec, "probes", [paths["live"], paths["ready"], paths["health"]], web, probes)
    )
    internal = {**probes, "whitelist-source-range": ",".join(spec.internal_networks)}
    result.append(_ingress(spec, "internal", [paths["status"], spec.metrics_path], web, internal))
    return result
