"""Cross-file checks of a render, run by the writer before anything is moved into place.

They compare what the renderers produced, not the spec, so a renderer bug that makes two
files disagree is caught.  Every file they read is compared as the data it is built from
(:attr:`Rendered.data`, before it is written): docker-compose.yml and the Kubernetes
manifests as YAML data, nginx.conf as its tree of directives and blocks, the nginx upstream
includes as their members, the gunicorn configs as their settings.
The checks: every nginx upstream ``server`` is an app service in docker-compose.yml and
back, every compose app service has a fixed address inside the network's subnet, below
Docker's ``ip_range`` and unique (nginx resolves the names once; a recreated replica must
come back at the same address), the timeout chain holds across gunicorn, nginx and compose,
listen ports are unique, no ``environment`` entry looks like a secret, and the probe prefix
and timeout passed to the app (compose ``environment``, the Kubernetes ConfigMap) are those
of the nginx and kubelet probes.  The Prometheus configs scrape exactly the replicas nginx
sends traffic to (their static targets are the upstream members), at the metrics path under
the probe prefix the app is given, and the Kubernetes one resolves headless Services that
select the pods of a Deployment on its ``http`` port; their rule files are rendered too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django_arena_scale._redact import looks_secret
from django_arena_scale.deploy._monitoring import COMPOSE_CONFIG, K8S_CONFIG, LOCAL_CONFIG
from django_arena_scale.deploy._nginx import Block
from django_arena_scale.deploy._server import ServerConfig
from django_arena_scale.deploy._shared import COMPOSE_FILE
from django_arena_scale.deploy._spec import STOP_GRACE_MARGIN, DeploymentSpec
from django_arena_scale.deploy._yaml import MERGE, resolve_merge

if TYPE_CHECKING:
    from django_arena_scale.deploy import Rendered

__all__ = [
    "K8S_CONFIG_MAP",
    "CrossCheckError",
    "compose_addresses",
    "compose_app_services",
    "compose_network_problems",
    "problems",
]

K8S_CONFIG_MAP = "k8s/10-configmap.yaml"


class CrossCheckError(ValueError):
    """The rendered files disagree with each other."""


def problems(spec: DeploymentSpec, rendered: Rendered) -> list[str]:
    """Every disagreement found between the rendered files (empty when consistent)."""
    files, data = rendered.files, rendered.data
    found: list[str] = []
    nginx_conf = data.get(f"{spec.nginx_dir}nginx.conf")
    if not isinstance(nginx_conf, Block):
        return [f"{spec.nginx_dir}nginx.conf is missing"]
    nginx_hosts: set[str] = set()
    nginx_addresses: set[str] = set()
    ports: set[int] = set()
    for upstream in (spec.api_upstream, spec.stream_upstream):
        path = spec.nginx_servers_include(upstream)
        nginx_addresses |= {member.address for member in data.get(path, ())}
        addresses = [_host_port(member.address) for member in data.get(path, ())]
        if not addresses:
            found.append(f"{path} lists no server")
        nginx_hosts |= {host for host, _ in addresses}
        ports |= {port for _, port in addresses if port is not None}
        if (path[len(spec.nginx_dir) :],) not in _upstream_includes(nginx_conf, upstream):
            found.append(f"nginx.conf does not include {path}")
    compose: Mapping[str, Any] = data.get(COMPOSE_FILE, {})
    if spec.target == "local":
        expected = {spec.local_service_port(s) for s in spec.app_services}
        if ports != expected:
            found.append(f"local upstream ports {sorted(ports)} != app ports {sorted(expected)}")
    else:
        services = compose_app_services(compose)
        for host in sorted(nginx_hosts - services):
            found.append(f"nginx server {host!r} is not a compose app service")
        for service in sorted(services - nginx_hosts):
            found.append(f"compose app service {service!r} is not an nginx server")
        found += _compose_environment(compose)
        found += compose_network_problems(compose)
        found += _probe_settings(data, nginx_conf)
    found += _chain(spec, data, compose, nginx_conf)
    found += _monitoring(files, data, nginx_addresses, compose)
    listens = _listens(nginx_conf)
    if len(set(listens)) != len(listens):
        found.append(f"nginx listens twice on the same port: {listens}")
    return found


def _upstream_includes(nginx_conf: Block, upstream: str) -> list[tuple[str, ...]]:
    """The ``include`` arguments inside ``upstream <name> { }`` of nginx.conf's ``http``."""
    http = nginx_conf.find("http")
    block = http.find("upstream", upstream) if http else None
    return block.directive_values("include") if block else []


def _listens(nginx_conf: Block) -> list[tuple[str, int]]:
    """(address or ``*``, port) of every ``listen`` directive of nginx.conf."""
    listens = []
    for args in nginx_conf.all_values("listen"):
        host, _, port = args[0].rpartition(":") if args else ("", "", "")
        if port.isdigit():
            listens.append((host or "*", int(port)))
    return listens


def _host_port(address: str) -> tuple[str, int | None]:
    """``host:port`` (or a bare host) of an upstream ``server`` address."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return host, int(port)
    return address, None


def _services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each compose service as Compose reads it: merged with its ``<<`` block."""
    services: Mapping[str, Any] = compose.get("services") or {}
    return {name: resolve_merge(service) for name, service in services.items()}


def compose_app_services(compose: Mapping[str, Any]) -> set[str]:
    """Services that merge the ``x-app`` block, except one-off jobs (``profiles``)."""
    services: Mapping[str, Any] = compose.get("services") or {}
    return {
        name for name, service in services.items() if MERGE in service and "profiles" not in service
    }


def compose_addresses(compose: Mapping[str, Any]) -> dict[str, str]:
    """Service -> ``ipv4_address`` in docker-compose.yml (services without one are absent)."""
    addresses: dict[str, str] = {}
    for name, service in _services(compose).items():
        networks = service.get("networks")
        if not isinstance(networks, Mapping):
            continue
        for network in networks.values():
            if isinstance(network, Mapping) and "ipv4_address" in network:
                addresses[name] = str(network["ipv4_address"])
    return addresses


def _ipam(compose: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    networks: Mapping[str, Any] = compose.get("networks") or {}
    return [
        config
        for network in networks.values()
        for config in ((network or {}).get("ipam") or {}).get("config") or []
    ]


def compose_network_problems(compose: Mapping[str, Any]) -> list[str]:
    """Fixed addresses: every app service has one, inside the subnet, outside the dynamic
    ``ip_range``, not the gateway, and no two services share one."""
    ipam = _ipam(compose)
    if len(ipam) != 1 or not {"subnet", "ip_range", "gateway"} <= set(ipam[0]):
        return ["docker-compose.yml: the network needs one ipam config (subnet, ip_range, gateway)"]
    found: list[str] = []
    try:
        subnet = ipaddress.IPv4Network(ipam[0]["subnet"])
        dynamic = ipaddress.IPv4Network(ipam[0]["ip_range"])
        gateway = ipaddress.IPv4Address(ipam[0]["gateway"])
    except ValueError as exc:
        return [f"docker-compose.yml: bad ipam config: {exc}"]
    if not dynamic.subnet_of(subnet) or gateway not in subnet:
        found.append(f"docker-compose.yml: ip_range {dynamic} or gateway {gateway} not in {subnet}")
    addresses = compose_addresses(compose)
    for service in sorted(compose_app_services(compose) - set(addresses)):
        found.append(f"compose app service {service!r} has no fixed ipv4_address")
    seen: dict[str, str] = {}
    for service, text in sorted(addresses.items()):
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            found.append(f"{service}: ipv4_address {text!r} is not an IPv4 address")
            continue
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            found.append(f"{service}: ipv4_address {address} is not a host of {subnet}")
        elif address in dynamic or address == gateway:
            found.append(f"{service}: ipv4_address {address} is the gateway or in ip_range")
        if text in seen:
            found.append(f"{service} and {seen[text]} share ipv4_address {text}")
        seen[text] = service
    return found


def _environments(compose: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every ``environment`` mapping of the file: the shared blocks' and each service's own."""
    blocks = [value for key, value in compose.items() if key.startswith("x-")]
    blocks += list((compose.get("services") or {}).values())
    return [b["environment"] for b in blocks if isinstance(b.get("environment"), Mapping)]


def _compose_environment(compose: Mapping[str, Any]) -> list[str]:
    found = []
    for environment in _environments(compose):
        for key in environment:
            if looks_secret(key):
                found.append(f"docker-compose.yml puts {key!r} inline; secrets go in env_file")
    return found


def _app_environment(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The environment the app gets: compose's app services', or the k8s ConfigMap's data."""
    if where == COMPOSE_FILE:
        compose = data[where]
        services = _services(compose)
        merged: dict[str, Any] = {}
        for name in sorted(compose_app_services(compose)):
            merged.update(services[name].get("environment") or {})
        return merged
    for document in data[where]:
        if document.get("kind") == "ConfigMap" and document["metadata"]["name"].endswith("-config"):
            return document.get("data") or {}
    return {}


def _readiness_probes(data: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    probes = []
    for path, documents in sorted(data.items()):
        if not path.startswith("k8s/30-deployment-"):
            continue
        for document in documents:
            pod = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                http = (container.get("readinessProbe") or {}).get("httpGet") or {}
                if "path" in http:
                    timeout = container["readinessProbe"].get("timeoutSeconds")
                    probes.append((path, str(http["path"]), str(timeout)))
    return probes


def _probe_settings(data: Mapping[str, Any], nginx_conf: Block) -> list[str]:
    """ARENA_SCALE_PROBE_PREFIX / _TIMEOUT given to the app match the probes that use them."""
    found: list[str] = []
    k8s_probes = _readiness_probes(data)
    if K8S_CONFIG_MAP in data and not k8s_probes:
        found.append("no k8s/30-deployment-*.yaml has a readinessProbe with a path")
    for where in (COMPOSE_FILE, K8S_CONFIG_MAP):
        if where not in data:
            continue
        environment = _app_environment(data, where)
        prefix = environment.get("ARENA_SCALE_PROBE_PREFIX")
        timeout = environment.get("ARENA_SCALE_PROBE_TIMEOUT")
        if prefix is None or timeout is None:
            found.append(f"{where} does not pass ARENA_SCALE_PROBE_PREFIX/_TIMEOUT to the app")
            continue
        ready = [b for b in nginx_conf.locations() if b.args == ("=", f"{prefix}ready/")]
        if not ready:
            found.append(f"{where}: nginx.conf has no location = {prefix}ready/")
        elif (f"{timeout}s",) not in ready[0].directive_values("proxy_read_timeout"):
            found.append(f"{where}: probe timeout {timeout}s is not nginx's {prefix}ready/ one")
        for path, probe_path, probe_timeout in k8s_probes:
            if (probe_path, probe_timeout) != (f"{prefix}ready/", str(timeout)):
                found.append(
                    f"{where}: probes {prefix}ready/ in {timeout}s but {path}'s readinessProbe "
                    f"{probe_path} in {probe_timeout}s"
                )
    return found


def _seconds(values: list[tuple[str, ...]]) -> list[int]:
    """The seconds of each ``<n>s`` first argument (other values are skipped)."""
    return [int(args[0][:-1]) for args in values if re.fullmatch(r"\d+s", args[0] if args else "")]


def _stop_grace_periods(compose: Mapping[str, Any]) -> list[int]:
    """``stop_grace_period`` of every compose app service, in seconds."""
    services = _services(compose)
    periods = []
    for name in sorted(compose_app_services(compose)):
        match = re.fullmatch(r"(\d+)s", str(services[name].get("stop_grace_period", "")))
        periods.append(int(match.group(1)) if match else 0)
    return periods


def _chain(
    spec: DeploymentSpec, data: Mapping[str, Any], compose: Mapping[str, Any], nginx_conf: Block
) -> list[str]:
    found: list[str] = []
    http = nginx_conf.find("http") or Block("http")
    nginx_keepalive = [
        seconds
        for upstream in http.blocks("upstream")
        for seconds in _seconds(upstream.directive_values("keepalive_timeout"))
    ]
    reads = _seconds(nginx_conf.all_values("proxy_read_timeout"))
    stops = sorted(set(_stop_grace_periods(compose)))
    for name in sorted({spec.server_config_file(s) for s in spec.app_services}):
        config = data.get(name)
        conf = config.settings if isinstance(config, ServerConfig) else {}
        graceful, keepalive = conf.get("graceful_timeout"), conf.get("keepalive")
        if not isinstance(graceful, int) or not isinstance(keepalive, int):
            found.append(f"{name} lacks graceful_timeout or keepalive")
            continue
        if graceful <= spec.app_graceful_timeout:
            found.append(f"{name}: graceful_timeout {graceful} <= app drain time")
        if any(keepalive <= k for k in nginx_keepalive):
            found.append(f"{name}: keepalive {keepalive} <= nginx keepalive_timeout")
        for stop in stops:
            if stop < spec.drain_delay + graceful + STOP_GRACE_MARGIN:
                found.append(f"stop_grace_period {stop}s < drain + {name} graceful_timeout")
    if reads and max(reads) < spec.stream_read_timeout:
        found.append("no nginx location reads streams for stream_read_timeout")
    return found


def _scrape_jobs(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(document.get("scrape_configs") or [])


def _monitoring(
    files: Mapping[str, str],
    data: Mapping[str, Any],
    nginx_addresses: set[str],
    compose: Mapping[str, Any],
) -> list[str]:
    """The Prometheus configs against nginx's upstreams, the app's probe prefix and k8s."""
    found: list[str] = []
    for path in (LOCAL_CONFIG, COMPOSE_CONFIG, K8S_CONFIG):
        if path not in data:
            continue
        document = data[path]
        folder = path.rpartition("/")[0]
        for rules in document.get("rule_files") or []:
            if f"{folder}/{rules}" not in files:
                found.append(f"{path}: rule file {rules!r} is not rendered beside it")
        jobs = _scrape_jobs(document)
        if len(jobs) != 1:
            found.append(f"{path} has {len(jobs)} scrape jobs; expected one for the replicas")
            continue
        job = jobs[0]
        where = COMPOSE_FILE if path == COMPOSE_CONFIG else K8S_CONFIG_MAP
        if where in data:
            prefix = _app_environment(data, where).get("ARENA_SCALE_PROBE_PREFIX")
            if prefix is not None and job.get("metrics_path") != f"{prefix}metrics":
                found.append(
                    f"{path} scrapes {job.get('metrics_path')!r}, but the app answers "
                    f"{prefix}metrics ({where})"
                )
        if path == K8S_CONFIG:
            found += _k8s_scrape(data, job)
            continue
        targets = {
            str(target)
            for static in job.get("static_configs") or []
            for target in static.get("targets") or []
        }
        for target in sorted(targets - nginx_addresses):
            found.append(f"{path} scrapes {target}, which is no nginx upstream server")
        for address in sorted(nginx_addresses - targets):
            found.append(f"{path} does not scrape the replica at {address}")
        if path == COMPOSE_CONFIG and compose:
            hosts = {_host_port(t)[0] for t in targets}
            for service in sorted(compose_app_services(compose) - hosts):
                found.append(f"{path} does not scrape compose app service {service!r}")
    return found


def _k8s_scrape(data: Mapping[str, Any], job: Mapping[str, Any]) -> list[str]:
    """Every DNS name is a headless Service that lists unready pods of a Deployment, on the
    port that Deployment's container calls ``http``."""
    found: list[str] = []
    services: dict[str, Mapping[str, Any]] = {}
    pod_ports: list[tuple[dict[str, Any], int]] = []
    for path, documents in data.items():
        if not path.startswith("k8s/"):
            continue
        for document in documents:
            if document.get("kind") == "Service":
                meta = document["metadata"]
                services[f"{meta['name']}.{meta.get('namespace')}.svc"] = document["spec"]
            elif document.get("kind") == "Deployment":
                template = document["spec"]["template"]
                for container in template["spec"]["containers"]:
                    for port in container.get("ports", []):
                        if port.get("name") == "http":
                            pod_ports.append(
                                (template["metadata"]["labels"], port["containerPort"])
                            )
    for sd in job.get("dns_sd_configs") or []:
        for name in sd.get("names") or []:
            service = services.get(name)
            if service is None:
                found.append(f"{K8S_CONFIG} resolves {name}, which no k8s/ Service is")
                continue
            if service.get("clusterIP") != "None" or not service.get("publishNotReadyAddresses"):
                found.append(f"{name} must be headless and publish unready pods for scraping")
            selected = [
                port
                for labels, port in pod_ports
                if all(labels.get(k) == v for k, v in (service.get("selector") or {}).items())
            ]
            if selected != [sd.get("port")]:
                found.append(
                    f"{K8S_CONFIG} scrapes {name} on port {sd.get('port')}, but the pods it "
                    f"selects listen on {selected}"
                )
    return found
