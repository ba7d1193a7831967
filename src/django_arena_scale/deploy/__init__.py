"""Deployment generation: a validated :class:`DeploymentSpec`, renderers, an atomic writer.

Every renderer module exposes ``render(spec) -> dict[str, str]`` (relative path -> content,
deterministic).  A module that builds files as data (docker-compose.yml, the Kubernetes
manifests, the nginx files, the gunicorn configs) also exposes ``build(spec)`` (relative
path -> the data) and ``serialise(spec, data)`` (-> the texts): :func:`render_all` writes
the texts of that very data and keeps it in :attr:`Rendered.data`, which the cross-file
checks compare.  A module may declare two module-level frozensets of relative paths:

- ``KEEP_IF_EXISTS``: an existing file is kept as it is unless ``--force`` (Dockerfile,
  .dockerignore): the user owns it after the first render;
- ``EXECUTABLE``: written with mode 0755 (deploy.sh).

:data:`RENDERERS` lists the modules per ``--target``; :func:`render_all` merges their output.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from django_arena_scale.deploy._spec import DeploymentSpec, SpecError

__all__ = ["RENDERERS", "DeploymentSpec", "Rendered", "SpecError", "render_all"]

#: Renderer modules per target, one per output family.  Add a module here (a dotted path) to
#: have ``generate_lb_config`` render and write its files.
RENDERERS: dict[str, tuple[str, ...]] = {
    "compose": (
        "django_arena_scale.deploy._compose",  # docker-compose.yml, env.example
        "django_arena_scale.deploy._nginx",  # nginx/nginx.conf + includes
        "django_arena_scale.deploy._server",  # gunicorn.conf.py (+ uvicorn settings)
        "django_arena_scale.deploy._script",  # deploy.sh
        "django_arena_scale.deploy._k8s",  # k8s/*.yaml
        "django_arena_scale.deploy._docker",  # Dockerfile, .dockerignore (kept if they exist)
        "django_arena_scale.deploy._operations",  # OPERATIONS.md
        "django_arena_scale.deploy._monitoring",  # monitoring/: Prometheus, alerts, Grafana
    ),
    "local": (
        "django_arena_scale.deploy._local",  # loopback nginx.conf + includes, logs/, tmp/
        "django_arena_scale.deploy._server",
        "django_arena_scale.deploy._monitoring",  # prometheus/: loopback scrape config, alerts
    ),
}


@dataclass(frozen=True)
class Rendered:
    """Every file of one render: contents, the data of the files built as data, and the
    per-file write policies."""

    files: dict[str, str]
    data: dict[str, Any] = field(default_factory=dict)
    keep_if_exists: frozenset[str] = field(default_factory=frozenset)
    executable: frozenset[str] = field(default_factory=frozenset)

    def __repr__(self) -> str:
        return f"<Rendered files={len(self.files)}>"


def _modules(target: str) -> list[ModuleType]:
    return [importlib.import_module(name) for name in RENDERERS[target]]


def render_all(spec: DeploymentSpec) -> Rendered:
    """Run every renderer of ``spec.target``; two renderers may not produce the same path."""
    files: dict[str, str] = {}
    data: dict[str, Any] = {}
    keep: set[str] = set()
    executable: set[str] = set()
    for module in _modules(spec.target):
        produced = dict(module.render(spec))
        if hasattr(module, "build"):
            built = module.build(spec)
            # The texts written are those of the very data the checks read.
            produced.update(module.serialise(spec, built))
            data.update(built)
        for path, content in produced.items():
            if path in files and files[path] != content:
                msg = f"Renderer {module.__name__!r} produces {path!r} a second time, differently."
                raise RuntimeError(msg)
            files[path] = content
        keep.update(getattr(module, "KEEP_IF_EXISTS", ()))
        executable.update(getattr(module, "EXECUTABLE", ()))
    return Rendered(
        files=dict(sorted(files.items())),
        data=dict(sorted(data.items())),
        keep_if_exists=frozenset(keep),
        executable=frozenset(executable),
    )
