"""Dockerfile and .dockerignore: slim, non-root, cached dependencies, exec-form server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from django_arena_scale.deploy import _docker as docker
from django_arena_scale.deploy import _writer as writer
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec
from tests.servers import free_port

SPECS = {
    "n1": DeploymentSpec(replicas=1),
    "n10": DeploymentSpec(),
    "custom": DeploymentSpec(
        replicas=2,
        app_port=9000,
        probe_prefix="/-/",
        settings_module="arena_project.settings",
        static_root="/app/static-collected",
        server_name="arena.example.com",
    ),
    "single-uvicorn": DeploymentSpec(replicas=3, topology="single", app_server="uvicorn"),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> DeploymentSpec:
    return SPECS[request.param]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = text.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), " ".join(rest.split())))
    return result


def _one(text: str, name: str) -> str:
    (args,) = [a for word, a in _instructions(text) if word == name]
    return args


def _index(text: str, name: str, needle: str = "") -> int:
    return next(i for i, (w, a) in enumerate(_instructions(text)) if w == name and needle in a)


def test_docker_render_is_deterministic(spec: DeploymentSpec) -> None:
    """The same spec renders the same three files, paths sorted."""
    files = docker.render(spec)
    assert files == docker.render(spec)
    assert list(files) == sorted(files)
    assert set(files) == {"Dockerfile", ".dockerignore", "Dockerfile.dockerignore"}


def test_docker_files_are_kept_if_they_exist() -> None:
    """Every file of this renderer is in KEEP_IF_EXISTS, and render_all reports them."""
    rendered = render_all(SPECS["n10"])
    assert set(docker.KEEP_IF_EXISTS) == set(docker.render(SPECS["n10"]))
    assert rendered.keep_if_exists >= docker.KEEP_IF_EXISTS


def test_dockerfile_uses_a_slim_python_base(spec: DeploymentSpec) -> None:
    """FROM python:<version>-slim."""
    text = docker.render(spec)["Dockerfile"]
    assert _one(text, "FROM") == "python:${PYTHON_VERSION}-slim"
    assert f"ARG PYTHON_VERSION={docker.PYTHON_VERSION}" in text


def test_dockerfile_runs_as_a_non_root_user(spec: DeploymentSpec) -> None:
    """USER names a created system user before the server starts."""
    text = docker.render(spec)["Dockerfile"]
    user = _one(text, "USER")
    assert user not in ("root", "0")
    assert _index(text, "RUN", "useradd --system --uid") < _index(text, "USER")
    assert _index(text, "USER") < _index(text, "CMD")


def test_dockerfile_installs_dependencies_before_copying_the_source(spec: DeploymentSpec) -> None:
    """requirements.txt is copied and installed in layers that precede COPY of the source."""
    text = docker.render(spec)["Dockerfile"]
    requirements = _index(text, "COPY", "requirements.txt")
    install = _index(text, "RUN", "pip install")
    source = _index(text, "COPY", ". .")
    assert requirements < install < source
    assert "--mount=type=cache" in _instructions(text)[install][1]


def test_dockerfile_starts_the_server_in_exec_form(spec: DeploymentSpec) -> None:
    """CMD is a JSON array (no shell in between): the spec's server command."""
    cmd = json.loads(_one(docker.render(spec)["Dockerfile"], "CMD"))
    assert cmd == list(spec.server_command(spec.web_names[0], spec.config_dir))
    assert _one(docker.render(spec)["Dockerfile"], "STOPSIGNAL") == "SIGTERM"


def test_dockerfile_bakes_the_server_configs_where_the_command_reads_them(
    spec: DeploymentSpec,
) -> None:
    """The rendered *.conf.py land in config_dir, the directory named by --config."""
    text = docker.render(spec)["Dockerfile"]
    copy = _instructions(text)[_index(text, "COPY", ".conf.py")][1]
    assert copy.split()[-1] == spec.config_dir.rstrip("/") + "/"
    cmd = json.loads(_one(text, "CMD"))
    assert cmd[cmd.index("--config") + 1].startswith(spec.config_dir.rstrip("/") + "/")


def test_dockerfile_prepares_static_root_for_the_app_user(spec: DeploymentSpec) -> None:
    """STATIC_ROOT exists and belongs to the app user (a fresh volume copies the ownership)."""
    text = docker.render(spec)["Dockerfile"]
    run = _instructions(text)[_index(text, "RUN", "mkdir")][1]
    assert f"mkdir -p {spec.static_root}" in run
    assert f"chown app:app {spec.static_root}" in run
    assert _one(text, "EXPOSE") == str(spec.app_port)


def _healthcheck_argv(spec: DeploymentSpec) -> list[str]:
    args = _one(docker.render(spec)["Dockerfile"], "HEALTHCHECK")
    argv: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return argv


def test_dockerfile_healthcheck_uses_python_urllib(spec: DeploymentSpec) -> None:
    """HEALTHCHECK runs python + urllib (no curl) on the health path and app port."""
    argv = _healthcheck_argv(spec)
    assert argv[:2] == ["python", "-c"]
    assert "curl" not in docker.render(spec)["Dockerfile"]
    code = argv[2]
    compile(code, "<healthcheck>", "exec")
    assert f"http://127.0.0.1:{spec.app_port}{spec.probe_paths['health']}" in code
    assert "urllib.request" in code


def test_dockerfile_healthcheck_fails_when_nothing_listens() -> None:
    """Run for real against a closed loopback port, the check exits non-zero."""
    spec = DeploymentSpec(app_port=free_port())
    argv = _healthcheck_argv(spec)
    proc = subprocess.run(
        [sys.executable, *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode != 0
    assert "Connection refused" in proc.stderr


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: '**' spans directories, '*' and '?' stay inside one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _ignored(patterns: list[str], path: str) -> bool:
    """Whether the build context drops ``path``: the last matching rule wins, an excluded
    directory drops everything below it, '!' re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        regex = _regex(pattern.lstrip("!"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not pattern.startswith("!")
    return result


def _patterns(spec: DeploymentSpec) -> list[str]:
    text = docker.render(spec)[".dockerignore"]
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        "deploy/.env",
        ".env.production",
        ".git",
        ".git/config",
        "app/__pycache__/x.pyc",
        ".venv/bin/python",
        "db.sqlite3",
        "node_modules/x/index.js",
    ],
)
def test_dockerignore_excludes_secrets_vcs_and_caches(path: str) -> None:
    """Env files, git data, caches, virtualenvs and local databases stay out of the image."""
    assert _ignored(_patterns(SPECS["n10"]), path)


@pytest.mark.parametrize(
    "path",
    [
        "manage.py",
        "requirements.txt",
        "deploy/gunicorn.conf.py",
        "deploy/gunicorn_asgi.conf.py",
        "arena/views.py",
        "arena/templates/index.html",
        "deploy/env.example",
    ],
)
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    """Source, requirements and the rendered server configs reach the build."""
    assert not _ignored(_patterns(SPECS["n10"]), path)


def test_dockerignore_twin_for_buildkit_is_identical(spec: DeploymentSpec) -> None:
    """Dockerfile.dockerignore (read by BuildKit with -f) has the same rules."""
    files = docker.render(spec)
    assert files["Dockerfile.dockerignore"] == files[".dockerignore"]


def test_writer_keeps_an_edited_dockerfile_unless_forced(tmp_path: Path) -> None:
    """A user's edited Dockerfile survives a re-render; --force replaces it."""
    rendered = render_all(SPECS["n10"])
    out = tmp_path / "deploy"

    def write(force: bool) -> None:
        writer.write(
            rendered.files,
            out,
            force=force,
            keep_if_exists=rendered.keep_if_exists,
            executable=rendered.executable,
        )

    write(False)
    (out / "Dockerfile").write_text("FROM scratch\n")
    write(False)
    assert (out / "Dockerfile").read_text() == "FROM scratch\n"
    write(True)
    assert (out / "Dockerfile").read_text() == rendered.files["Dockerfile"]
    assert os.stat(out / "deploy.sh").st_mode & 0o100
    assert not os.stat(out / "Dockerfile").st_mode & 0o111
