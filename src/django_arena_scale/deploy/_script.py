"""``deploy.sh``: start, stop, inspect, scale and rolling-restart the compose deployment.

The script is the package file ``templates/deploy.sh``.  Every spec value (service names,
upstream addresses, files, ports, timeouts) goes, shell-quoted with :func:`shlex.quote`, into
the variable block at its top (``@NAME@`` in a ``readonly`` assignment, or a ``# @NAME@``
line inside an array or ``case``, one element per line); the body below it is constant text
that only expands those variables.  So a value can never be read as shell syntax, and
``bash -n`` and shellcheck check the template file itself, placeholders in place.

A rolling restart never reloads nginx (a reload closes clients' idle keep-alive connections,
racing with requests they send on them).  One replica at a time: ``manage.py drain on`` in the
replica makes it stop listening (idle keep-alive connections close, requests in flight finish,
open SSE streams get their reconnect event), so nginx's next connection to it is refused before
anything is sent and goes to the next server; wait ``drain_delay``, stop it within the chain's
stop grace period, recreate it (same fixed address on the compose network, so the address
nginx resolved at start still reaches it), wait for ``/ready/``.  nginx skips a server for
``fail_timeout`` after its last refused connection (``max_fails``), and that connection came
before the new container listened: so the next replica is drained only ``fail_timeout + 1``
seconds after this one was ready, when nginx sends to it again.  The ``down`` mark in the
upstream includes (``spec.nginx_servers_include``) plus a reload is kept for ``scale`` (parking
replicas) and for a replica that does not become ready.
"""

from __future__ import annotations

import shlex

from django_arena_scale.deploy._shared import COMPOSE_FILE, host_header
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.deploy._templates import fill, read_template

__all__ = ["EXECUTABLE", "SCRIPT", "TEMPLATE", "render", "script_variables"]

SCRIPT = "deploy.sh"
EXECUTABLE = frozenset({SCRIPT})
#: ``templates/deploy.sh`` in this package: bash -n and shellcheck check that file itself.
TEMPLATE = read_template(SCRIPT)


def _q(value: object) -> str:
    return shlex.quote(str(value))


def script_variables(spec: DeploymentSpec) -> dict[str, str]:
    """The scalar variables of the script (name -> unquoted value), all from the spec."""
    chain = spec.chain
    probes = spec.probe_paths
    return {
        "COMPOSE_FILE": COMPOSE_FILE,
        "ENV_FILE": spec.env_file,
        "NGINX_SERVICE": spec.nginx_service,
        "NGINX_CONF": f"{spec.nginx_config_dir}/nginx.conf",
        "MANAGE_SERVICE": spec.manage_service,
        "IMAGE": spec.image,
        "HTTP_PORT": str(spec.http_port),
        "APP_PORT": str(spec.app_port),
        "HOST_HEADER": host_header(spec),
        "READY_PATH": probes["ready"],
        "LIVE_PATH": probes["live"],
        "HEALTH_PATH": probes["health"],
        "PROBE_TIMEOUT": str(chain.probe),
        # The kubelet's startup budget; ARENA_READY_TIMEOUT overrides it for slow starts.
        "READY_TIMEOUT_DEFAULT": str(chain.probe_period * chain.startup_failure_threshold),
        "DRAIN_DELAY": str(chain.drain_delay),
        # nginx skips a replica this long after max_fails refused connections.
        "FAIL_TIMEOUT": str(spec.fail_timeout),
        "STOP_GRACE": str(chain.stop_grace_period),
    }


def _blocks(spec: DeploymentSpec) -> dict[str, list[str]]:
    """The template's line placeholders: array elements and ``upstream_address`` branches."""
    includes = sorted(
        {spec.nginx_servers_include(u) for u in (spec.api_upstream, spec.stream_upstream)}
    )
    return {
        "WEB_SERVICES": [_q(s) for s in spec.web_names],
        "APP_SERVICES": [_q(s) for s in spec.app_services],
        "DATA_SERVICES": [_q(s) for s in spec.data_services],
        "UPSTREAM_INCLUDES": [_q(path) for path in includes],
        "UPSTREAM_ADDRESSES": [
            f"{_q(s)}) printf '%s\\n' {_q(spec.address(s))} ;;" for s in spec.app_services
        ],
    }


def render_script(spec: DeploymentSpec) -> str:
    """The text of ``deploy.sh``: the template with the spec's values, shell-quoted."""
    values = {name: _q(value) for name, value in script_variables(spec).items()}
    return fill(TEMPLATE, values, _blocks(spec))


def render(spec: DeploymentSpec) -> dict[str, str]:
    """``deploy.sh`` (written executable: see :data:`EXECUTABLE`)."""
    return {SCRIPT: render_script(spec)}
