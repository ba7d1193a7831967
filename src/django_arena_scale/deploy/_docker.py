"""``Dockerfile`` and ``.dockerignore`` of the project image, from a :class:`DeploymentSpec`.

Both files are the user's once they exist (:data:`KEEP_IF_EXISTS`): the writer keeps an
existing one unless ``--force``.  The image: a slim Python base, dependencies installed in
their own layer before the source is copied (a code change does not reinstall them), a
non-root user, the rendered gunicorn configs baked in at ``spec.config_dir`` (compose and
Kubernetes mount the same files over them), the server started in exec form so it is PID 1
and receives SIGTERM itself, and a HEALTHCHECK in Python (slim images have no curl).

The build context is the project root (where ``manage.py`` and ``requirements.txt`` are); the
Dockerfile stays in the output directory::

    docker build -f deploy/Dockerfile --build-arg ARENA_DEPLOY_DIR=deploy -t IMAGE .

With ``-f``, BuildKit reads ``deploy/Dockerfile.dockerignore`` instead of the context's
``.dockerignore``, so both names are rendered with the same rules.
"""

from __future__ import annotations

import json

from django_arena_scale.deploy._shared import APP_UID, host_header
from django_arena_scale.deploy._spec import DeploymentSpec

__all__ = ["APP_DIR", "KEEP_IF_EXISTS", "PYTHON_VERSION", "dockerfile", "dockerignore", "render"]

DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
#: BuildKit's per-Dockerfile ignore file, used when the Dockerfile is not at the context root.
DOCKERFILE_IGNORE = "Dockerfile.dockerignore"
KEEP_IF_EXISTS = frozenset({DOCKERFILE, DOCKERIGNORE, DOCKERFILE_IGNORE})
PYTHON_VERSION = "3.12"
APP_DIR = "/app"

HEADER = """\
# Generated once by `manage.py generate_lb_config`; yours from now on: it is kept as it is
# on later runs unless you pass --force.
"""


def _exec_form(argv: list[str] | tuple[str, ...]) -> str:
    # JSON arrays are Dockerfile exec form: no shell, so the server itself is PID 1.
    return json.dumps(list(argv))


def dockerfile(spec: DeploymentSpec) -> str:
    """The text of the Dockerfile."""
    chain = spec.chain
    health = f"http://127.0.0.1:{spec.app_port}{spec.probe_paths['health']}"
    probe = (
        "import urllib.request as r; "
        f"r.urlopen(r.Request({health!r}, headers={{'Host': {host_header(spec)!r}}}), "
        f"timeout={chain.probe}).close()"
    )
    config_dir = spec.config_dir.rstrip("/")
    command = spec.server_command(spec.web_names[0], spec.config_dir)
    return f"""\
# syntax=docker/dockerfile:1
{HEADER}#
# Build from the project root (manage.py, requirements.txt), this file in the output dir:
#   docker build -f deploy/Dockerfile --build-arg ARENA_DEPLOY_DIR=deploy -t {spec.image} .
# (./deploy.sh build does exactly that.)  requirements.txt must list django-arena-scale and
# gunicorn (plus uvicorn for the ASGI pool): pip install "django-arena-scale[servers]".
ARG PYTHON_VERSION={PYTHON_VERSION}
FROM python:${{PYTHON_VERSION}}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    DJANGO_SETTINGS_MODULE={spec.settings_module}

# A fixed uid/gid, so Kubernetes' runAsUser and file ownership on volumes match.
RUN groupadd --system --gid {APP_UID} app \\
    && useradd --system --uid {APP_UID} --gid app --home-dir {APP_DIR} --no-create-home \\
        --shell /usr/sbin/nologin app

WORKDIR {APP_DIR}

# Dependencies first, in their own layer: editing the source does not reinstall them, and the
# BuildKit cache mount keeps downloaded wheels between builds.
COPY requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \\
    pip install --requirement requirements.txt

# The server configs rendered next to this file (compose and Kubernetes mount the same files
# over them); ARENA_DEPLOY_DIR is that directory relative to the build context.
ARG ARENA_DEPLOY_DIR=deploy
COPY ${{ARENA_DEPLOY_DIR}}/*.conf.py {config_dir}/

COPY --chown=app:app . .
# collectstatic writes here, and a fresh named volume mounted here copies this ownership.
RUN mkdir -p {spec.static_root} && chown app:app {spec.static_root}

USER app
EXPOSE {spec.app_port}

# /health/ is the lifecycle only: a Redis blip does not mark the container unhealthy.
HEALTHCHECK --interval={chain.probe_period}s --timeout={chain.probe + 1}s \\
    --start-period=60s --retries=3 \\
    CMD {_exec_form(["python", "-c", probe])}

# gunicorn drains on SIGTERM within graceful_timeout ({chain.server_graceful}s); the
# orchestrator waits {chain.stop_grace_period}s before SIGKILL.
STOPSIGNAL SIGTERM
CMD {_exec_form(command)}
"""


def dockerignore(spec: DeploymentSpec) -> str:
    """Build-context exclusions: VCS data, caches, local databases and every env file."""
    del spec  # the same rules for every deployment
    return f"""\
{HEADER}
# Never send secrets into an image layer.
**/.env
**/.env.*
**/*.pem
**/*.key

# Version control, virtualenvs, caches, build output.
.git
.hg
**/__pycache__
**/*.py[cod]
.venv
venv
.tox
.nox
.pytest_cache
.mypy_cache
.ruff_cache
.coverage
htmlcov
build
dist
*.egg-info
node_modules

# Local state that belongs in volumes, not in the image.
**/*.sqlite3
**/*.sqlite3-*
media
staticfiles
**/logs
**/*.log

# Editors and OS files.
.idea
.vscode
**/.DS_Store
"""


def render(spec: DeploymentSpec) -> dict[str, str]:
    """``Dockerfile``, ``.dockerignore`` and ``Dockerfile.dockerignore`` (kept if they exist)."""
    ignore = dockerignore(spec)
    return {
        DOCKERIGNORE: ignore,
        DOCKERFILE: dockerfile(spec),
        DOCKERFILE_IGNORE: ignore,
    }
