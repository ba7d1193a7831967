"""The loopback variant (``--target local``): nginx on 127.0.0.1 in front of local replicas.

Used by the e2e tests, ``manage.py run_lb_stack`` and the README demo.  The i-th app service
of :attr:`DeploymentSpec.app_services` listens on ``127.0.0.1:local_base_port + i``; nginx
listens on ``127.0.0.1:local_port`` and keeps its pid, logs and temp dirs inside the output
directory, so it runs as an ordinary user:
``nginx -p <out> -c <out>/nginx.conf -e <out>/logs/error.log``.
"""

from __future__ import annotations

from django_arena_scale.deploy.nginx import nginx_files
from django_arena_scale.deploy.spec import DeploymentSpec

__all__ = ["render"]

#: Creates the directory and keeps its runtime content out of version control.
_IGNORE_ALL = "*\n!.gitignore\n"


def render(spec: DeploymentSpec) -> dict[str, str]:
    """nginx.conf, includes and the (empty) logs/ and tmp/ directories at the output root."""
    if spec.target != "local":
        spec = spec.replace(target="local")
    files = nginx_files(spec)
    files["logs/.gitignore"] = _IGNORE_ALL
    files["tmp/.gitignore"] = _IGNORE_ALL
    return files
