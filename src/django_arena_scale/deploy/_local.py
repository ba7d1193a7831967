"""The loopback variant (``--target local``): nginx on 127.0.0.1 in front of local replicas.

Used by the e2e tests, ``manage.py run_lb_stack`` and the README demo.  The i-th app service
of :attr:`DeploymentSpec.app_services` listens on ``127.0.0.1:local_base_port + i``; nginx
listens on ``127.0.0.1:local_port`` and keeps its pid, logs and temp dirs inside the output
directory, so it runs as an ordinary user:
``nginx -p <out> -c <out>/nginx.conf -e <out>/logs/error.log``.
"""

from __future__ import annotations

from django_arena_scale.deploy import _nginx as nginx
from django_arena_scale.deploy._spec import DeploymentSpec

__all__ = ["build", "render", "serialise"]

#: Creates the directory and keeps its runtime content out of version control.
_IGNORE_ALL = "*\n!.gitignore\n"


def _local(spec: DeploymentSpec) -> DeploymentSpec:
    return spec if spec.target == "local" else spec.replace(target="local")


def build(spec: DeploymentSpec) -> nginx.NginxData:
    """The loopback nginx files as data (see :func:`.nginx.build`)."""
    return nginx.build(_local(spec))


def serialise(spec: DeploymentSpec, data: nginx.NginxData) -> dict[str, str]:
    return nginx.serialise(_local(spec), data)


def render(spec: DeploymentSpec) -> dict[str, str]:
    """nginx.conf, includes and the (empty) logs/ and tmp/ directories at the output root."""
    spec = _local(spec)
    files = nginx.nginx_files(spec)
    files["logs/.gitignore"] = _IGNORE_ALL
    files["tmp/.gitignore"] = _IGNORE_ALL
    return files
