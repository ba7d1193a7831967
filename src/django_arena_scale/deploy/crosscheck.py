"""Cross-file checks of a render, run by the writer before anything is moved into place.

Reads the rendered text back (not the spec), so a renderer bug that makes two files disagree
is caught: every nginx upstream ``server`` is an app service in docker-compose.yml and back,
every compose app service has a fixed address inside the network's subnet, below Docker's
``ip_range`` and unique (nginx resolves the names once; a recreated replica must come back
at the same address), the timeout chain holds across gunicorn, nginx and compose, listen
ports are unique, no
``environment`` entry looks like a secret, and the probe prefix and timeout passed to the app
(compose ``environment``, the Kubernetes ConfigMap) are those of the nginx and kubelet
probes.  Pure Python, no YAML library needed: the generated files have a fixed layout.
"""

from __future__ import annotations

import ast
import ipaddress
import re
from collections.abc import Mapping

from django_arena_scale._redact import looks_secret
from django_arena_scale.deploy.spec import STOP_GRACE_MARGIN, DeploymentSpec

__all__ = ["CrossCheckError", "problems"]

_SERVER = re.compile(r"^server (\S+?)(?::(\d+))?[ ;]", re.M)
_LISTEN = re.compile(r"^\s*listen (?:(\S+):)?(\d+)[ ;]", re.M)


class CrossCheckError(ValueError):
    """The rendered files disagree with each other."""


def problems(spec: DeploymentSpec, files: Mapping[str, str]) -> list[str]:
    """Every disagreement found between the rendered files (empty when consistent)."""
    found: list[str] = []
    nginx_conf = files.get(f"{spec.nginx_dir}nginx.conf")
    if nginx_conf is None:
        return [f"{spec.nginx_dir}nginx.conf is missing"]
    members: dict[str, set[str]] = {}
    for upstream in (spec.api_upstream, spec.stream_upstream):
        path = spec.nginx_servers_include(upstream)
        text = files.get(path, "")
        hosts = {m.group(1) for m in _SERVER.finditer(text)}
        if not hosts:
            found.append(f"{path} lists no server")
        members[upstream] = hosts
        if f"include {path[len(spec.nginx_dir) :]};" not in nginx_conf:
            found.append(f"nginx.conf does not include {path}")
    nginx_hosts = members[spec.api_upstream] | members[spec.stream_upstream]
    if spec.target == "local":
        ports = {int(m.group(2)) for t in _includes(spec, files) for m in _SERVER.finditer(t)}
        expected = {spec.local_service_port(s) for s in spec.app_services}
        if ports != expected:
            found.append(f"local upstream ports {sorted(ports)} != app ports {sorted(expected)}")
    else:
        services = compose_app_services(files.get("docker-compose.yml", ""))
        for host in sorted(nginx_hosts - services):
            found.append(f"nginx server {host!r} is not a compose app service")
        for service in sorted(services - nginx_hosts):
            found.append(f"compose app service {service!r} is not an nginx server")
        found += _compose_environment(files.get("docker-compose.yml", ""))
        found += compose_network_problems(files.get("docker-compose.yml", ""))
        found += _probe_settings(files, nginx_conf)
    found += _chain(spec, files, nginx_conf)
    listens = [(m.group(1) or "*", int(m.group(2))) for m in _LISTEN.finditer(nginx_conf)]
    if len(set(listens)) != len(listens):
        found.append(f"nginx listens twice on the same port: {listens}")
    return found


def _includes(spec: DeploymentSpec, files: Mapping[str, str]) -> list[str]:
    return [
        files.get(spec.nginx_servers_include(u), "")
        for u in (spec.api_upstream, spec.stream_upstream)
    ]


def compose_app_services(compose: str) -> set[str]:
    """Services built from the ``x-app`` anchor, except one-off jobs (``profiles``)."""
    services: set[str] = set()
    current: str | None = None
    in_services = False
    app = job = False
    for line in [*compose.splitlines(), "end:"]:
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
        if not in_services and current is None:
            continue
        top = re.match(r"^  ([a-z0-9][a-z0-9-]*):$", line) if in_services else None
        if top or re.match(r"^\S", line):
            if current and app and not job:
                services.add(current)
            current = top.group(1) if top else None
            app = job = False
            continue
        app = app or line.strip() == "<<: *app"
        job = job or line.strip().startswith("profiles:")
    return services


_IPAM = re.compile(
    r'^ {8}- subnet: "([^"]+)"\n {10}ip_range: "([^"]+)"\n {10}gateway: "([^"]+)"$', re.M
)


def compose_addresses(compose: str) -> dict[str, str]:
    """Service -> ``ipv4_address`` in docker-compose.yml (services without one are absent)."""
    addresses: dict[str, str] = {}
    current: str | None = None
    in_services = False
    for line in compose.splitlines():
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
            current = None
            continue
        top = re.match(r"^  ([a-z0-9][a-z0-9-]*):$", line) if in_services else None
        if top:
            current = top.group(1)
            continue
        match = re.match(r'^\s+ipv4_address: "([^"]+)"$', line)
        if match and current:
            addresses[current] = match.group(1)
    return addresses


def compose_network_problems(compose: str) -> list[str]:
    """Fixed addresses: every app service has one, inside the subnet, outside the dynamic
    ``ip_range``, not the gateway, and no two services share one."""
    ipam = _IPAM.findall(compose)
    if len(ipam) != 1:
        return ["docker-compose.yml: the network needs one ipam config (subnet, ip_range, gateway)"]
    found: list[str] = []
    try:
        subnet = ipaddress.IPv4Network(ipam[0][0])
        dynamic = ipaddress.IPv4Network(ipam[0][1])
        gateway = ipaddress.IPv4Address(ipam[0][2])
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


def _compose_environment(compose: str) -> list[str]:
    found = []
    in_env = False
    for line in compose.splitlines():
        stripped = line.strip()
        if stripped == "environment:":
            in_env, indent = True, len(line) - len(line.lstrip())
            continue
        if in_env and (len(line) - len(line.lstrip())) <= indent:
            in_env = False
        if in_env and ":" in stripped:
            key = stripped.split(":", 1)[0]
            if looks_secret(key):
                found.append(f"docker-compose.yml puts {key!r} inline; secrets go in env_file")
    return found


K8S_CONFIG_MAP = "k8s/10-configmap.yaml"
_K8S_READINESS = re.compile(
    r"^\s+readinessProbe:\n\s+httpGet:\n\s+path: (\S+)\n(?:\s+.*\n)*?\s+timeoutSeconds: (\d+)$",
    re.M,
)


def _env_value(text: str, name: str) -> str | None:
    match = re.search(rf'^\s+{name}: "?([^"\n]*)"?$', text, re.M)
    return match.group(1) if match else None


def _probe_settings(files: Mapping[str, str], nginx_conf: str) -> list[str]:
    """ARENA_SCALE_PROBE_PREFIX / _TIMEOUT given to the app match the probes that use them."""
    found: list[str] = []
    k8s_probes = [
        (path, m.group(1), m.group(2))
        for path, text in sorted(files.items())
        if path.startswith("k8s/30-deployment-")
        for m in _K8S_READINESS.finditer(text)
    ]
    if K8S_CONFIG_MAP in files and not k8s_probes:
        found.append("no k8s/30-deployment-*.yaml has a readinessProbe with a path")
    for where in ("docker-compose.yml", K8S_CONFIG_MAP):
        text = files.get(where)
        if text is None:
            continue
        prefix = _env_value(text, "ARENA_SCALE_PROBE_PREFIX")
        timeout = _env_value(text, "ARENA_SCALE_PROBE_TIMEOUT")
        if prefix is None or timeout is None:
            found.append(f"{where} does not pass ARENA_SCALE_PROBE_PREFIX/_TIMEOUT to the app")
            continue
        ready = re.search(rf"location = {re.escape(prefix)}ready/ \{{([^}}]*)\}}", nginx_conf)
        if ready is None:
            found.append(f"{where}: nginx.conf has no location = {prefix}ready/")
        elif f"proxy_read_timeout {timeout}s;" not in ready.group(1):
            found.append(f"{where}: probe timeout {timeout}s is not nginx's {prefix}ready/ one")
        for path, probe_path, probe_timeout in k8s_probes:
            if (probe_path, probe_timeout) != (f"{prefix}ready/", timeout):
                found.append(
                    f"{where}: probes {prefix}ready/ in {timeout}s but {path}'s readinessProbe "
                    f"{probe_path} in {probe_timeout}s"
                )
    return found


def _py_settings(text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for match in re.finditer(r"^([a-z_]+) = (.+)$", text, re.M):
        try:
            values[match.group(1)] = ast.literal_eval(match.group(2))
        except (ValueError, SyntaxError):
            continue
    return values


def _seconds(pattern: str, text: str) -> list[int]:
    return [int(v) for v in re.findall(pattern, text)]


def _chain(spec: DeploymentSpec, files: Mapping[str, str], nginx_conf: str) -> list[str]:
    found: list[str] = []
    nginx_keepalive = _seconds(r"^\s+keepalive_timeout (\d+)s;", nginx_conf)
    reads = _seconds(r"proxy_read_timeout (\d+)s;", nginx_conf)
    for name in sorted({spec.server_config_file(s) for s in spec.app_services}):
        conf = _py_settings(files.get(name, ""))
        graceful, keepalive = conf.get("graceful_timeout"), conf.get("keepalive")
        if not isinstance(graceful, int) or not isinstance(keepalive, int):
            found.append(f"{name} lacks graceful_timeout or keepalive")
            continue
        if graceful <= spec.app_graceful_timeout:
            found.append(f"{name}: graceful_timeout {graceful} <= app drain time")
        if any(keepalive <= k for k in nginx_keepalive):
            found.append(f"{name}: keepalive {keepalive} <= nginx keepalive_timeout")
        stops = _seconds(r"^  stop_grace_period: (\d+)s$", files.get("docker-compose.yml", ""))
        for stop in stops:
            if stop < spec.drain_delay + graceful + STOP_GRACE_MARGIN:
                found.append(f"stop_grace_period {stop}s < drain + {name} graceful_timeout")
    if reads and max(reads) < spec.stream_read_timeout:
        found.append("no nginx location reads streams for stream_read_timeout")
    return found
