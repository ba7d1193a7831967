"""deploy.sh passes the real bash -n and shellcheck, and does what it says, in order.

There is no Docker daemon on the test machine, so the behaviour tests put a recording
stand-in named ``docker`` first on PATH: it logs every call with the replicas marked ``down``
or parked in the nginx upstream includes at that moment, answers the readiness probe as told,
and runs the REAL ``nginx -t`` (in a private mount namespace where the compose service names
resolve) whenever the script asks nginx to check its config.  A stand-in ``sleep`` logs its
argument in the same log and returns at once, so the drain delay and the wait for nginx to
send to a restarted replica again are checked as steps, without waiting for them.
(tests/e2e/test_deploy_script_live.py runs the script against a real local stack.)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from django_arena_scale.deploy import _script as script
from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._compose import COMPOSE_FILE
from django_arena_scale.deploy._spec import DeploymentSpec, SpecError
from tests.integration.test_generated_configs import (
    NGINX,
    hosts_file,
    materialize,
    specs,
)

pytestmark = pytest.mark.integration

SHELLCHECK = shutil.which("shellcheck") or "/usr/bin/shellcheck"
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-uvicorn": {"topology": "single", "app_server": "uvicorn"},
    "backups-pgbouncer": {"backup_replicas": 2, "pgbouncer": True, "redis_roles": "shared"},
    "custom": {"probe_prefix": "/-/", "app_port": 9000, "env_file": "secrets/prod.env"},
}
MATRIX = [(n, name) for n in (1, 2, 10, 50) for name in VARIANTS]


def _check(text: str, path: Path) -> None:
    path.write_text(text)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert syntax.returncode == 0, syntax.stderr
    lint = subprocess.run(
        [SHELLCHECK, "--shell=bash", "--severity=style", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize(("n", "variant"), MATRIX)
def test_deploy_script_passes_bash_n_and_shellcheck(n: int, variant: str, tmp_path: Path) -> None:
    """bash -n and shellcheck (every severity) accept deploy.sh."""
    spec = DeploymentSpec(replicas=n, **VARIANTS[variant])
    _check(script.render(spec)[script.SCRIPT], tmp_path / "deploy.sh")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs())
def test_deploy_script_passes_shellcheck_for_generated_specs(
    spec: DeploymentSpec, tmp_path: Path
) -> None:
    """Hypothesis-drawn specs render a script that bash -n and shellcheck accept."""
    _check(script.render(spec)[script.SCRIPT], tmp_path / "deploy.sh")


def test_deploy_script_template_file_passes_bash_n_and_shellcheck(tmp_path: Path) -> None:
    """The package file itself, placeholders in place, passes bash -n and shellcheck."""
    template = Path(script.__file__).with_name("templates") / script.SCRIPT
    assert template.read_text() == script.TEMPLATE
    assert "@WEB_SERVICES@" in script.TEMPLATE
    assert "@COMPOSE_FILE@" in script.TEMPLATE
    _check(script.TEMPLATE, tmp_path / "deploy.sh")


def test_shellcheck_catches_a_broken_template(tmp_path: Path) -> None:
    """The template check can fail: an unquoted expansion in the template is reported."""
    broken = script.TEMPLATE.replace(
        'compose exec -T "$1" python manage.py drain on',
        "compose exec -T $1 python manage.py drain on",
    )
    assert broken != script.TEMPLATE
    with pytest.raises(AssertionError, match="SC2086"):
        _check(broken, tmp_path / "deploy.sh")


def test_shellcheck_catches_a_broken_script(tmp_path: Path) -> None:
    """The lint step can fail: an unquoted expansion in the body is reported."""
    text = script.render(DeploymentSpec(replicas=2))[script.SCRIPT]
    broken = text.replace(
        'compose exec -T "$1" python manage.py drain on',
        "compose exec -T $1 python manage.py drain on",
    )
    assert broken != text
    with pytest.raises(AssertionError, match="SC2086"):
        _check(broken, tmp_path / "deploy.sh")


# --- running the script ---------------------------------------------------------------------
FAKE_DOCKER = r'''
#!{python}
"""Recording stand-in for the docker CLI (see the test module's docstring)."""
import json, os, subprocess, sys

argv = sys.argv[1:]
root = os.getcwd()
down, parked = [], []
for name in sorted(os.listdir(os.path.join(root, "nginx", "upstreams"))):
    with open(os.path.join(root, "nginx", "upstreams", name)) as handle:
        for line in handle:
            words = line.split()
            if words[:3] == ["#", "parked:", "server"]:
                parked.append(words[3])
            elif words[:1] == ["server"] and line.rstrip().endswith(" down;"):
                down.append(words[1])
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": argv, "down": down, "parked": parked}}) + "\n")
rc = 0
if argv[-5:-2] == ["nginx", "-t", "-q"]:
    conf = os.path.join(root, "nginx", "nginx.conf")
    hosts = os.environ["FAKE_HOSTS"]
    check = f'mount --bind "{{hosts}}" /etc/hosts && exec "{nginx}" -t -c "{{conf}}"'
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    proc = subprocess.run([*unshare, "sh", "-c", check], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    rc = proc.returncode or (1 if "[warn]" in out else 0)
    if rc:
        sys.stderr.write(out)
elif "-c" in argv and "python" in argv:
    service = argv[argv.index("python") - 1]
    rc = 1 if service in os.environ.get("FAKE_UNREADY", "").split() else 0
sys.exit(rc)
'''


FAKE_SLEEP = """#!/bin/sh
printf '{"sleep": %s}\\n' "$1" >>"$DOCKER_LOG"
"""


class Deployment:
    """A rendered output directory plus the stand-in docker that records the script's calls."""

    def __init__(self, spec: DeploymentSpec, root: Path) -> None:
        self.spec = spec
        self.root = root / "deploy"
        self.files = render_all(spec).files
        materialize(self.files, self.root)
        (self.root / spec.env_file).parent.mkdir(parents=True, exist_ok=True)
        (self.root / spec.env_file).write_text("SECRET_KEY=test-only\n")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        docker.write_text(FAKE_DOCKER.format(python=sys.executable, nginx=NGINX).lstrip())
        docker.chmod(0o755)
        sleep = bin_dir / "sleep"
        sleep.write_text(FAKE_SLEEP)
        sleep.chmod(0o755)
        self.log = root / "docker.log"
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "DOCKER_LOG": str(self.log),
            "FAKE_HOSTS": str(hosts_file(spec, root / "hosts")),
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / script.SCRIPT), *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=300,
            check=False,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def include(self, upstream: str) -> str:
        return (self.root / self.spec.nginx_servers_include(upstream)).read_text()

    def includes_unchanged(self) -> bool:
        return all(
            self.include(u) == self.files[self.spec.nginx_servers_include(u)]
            for u in (self.spec.api_upstream, self.spec.stream_upstream)
        )


def _compose_args(call: dict[str, Any]) -> list[str]:
    """The arguments after ``docker compose --file docker-compose.yml`` ([] for other calls)."""
    argv = call.get("argv", [])
    if argv[:3] != ["compose", "--file", "docker-compose.yml"]:
        return []
    return list(argv[3:])


def _is_reload(call: dict[str, Any]) -> bool:
    args = _compose_args(call)
    return args[:3] == ["exec", "-T", "nginx"] and args[3:6] == ["nginx", "-s", "reload"]


def _steps(deployment: Deployment, calls: list[dict[str, Any]]) -> list[str]:
    """The calls from the first drain on, as short labels naming the replica.

    Sleeps read ``sleep drain`` (the drain delay) and ``sleep admit`` (at least fail_timeout
    + 1 s: nginx sends to the replica restarted before it again); any nginx call reads
    ``nginx ...`` and a ``down``/parked mark seen by a call is appended to its label.
    """
    spec = deployment.spec
    steps: list[str] = []
    for call in calls:
        if "sleep" in call:
            seconds = call["sleep"]
            if seconds == spec.chain.drain_delay:
                steps.append("sleep drain")
            elif seconds >= spec.fail_timeout + 1:
                steps.append("sleep admit")
            else:
                steps.append(f"sleep {seconds}")
            continue
        args = _compose_args(call)
        if args[:3] == ["exec", "-T", spec.nginx_service]:
            label = " ".join(["nginx", *args[4:6]])
        elif args[:2] == ["exec", "-T"] and "drain" in args:
            label = f"drain {args[args.index('drain') + 1]} {args[2]}"
        elif args[:2] == ["exec", "-T"] and "-c" in args:
            label = f"probe {args[2]}"
        elif args[:1] in (["stop"], ["up"]):
            label = " ".join(args)
        else:
            continue
        marks = call["down"] + call["parked"]
        steps.append(label + (f" (marked {' '.join(marks)})" if marks else ""))
    first = next(i for i, s in enumerate(steps) if s.startswith("drain on "))
    return steps[first:]


def _rolling_restart_steps(deployment: Deployment, services: list[str]) -> list[str]:
    """What a rolling restart of ``services`` must do, in this order and nothing else."""
    grace = deployment.spec.chain.stop_grace_period
    steps: list[str] = []
    for i, service in enumerate(services):
        if i:
            steps.append("sleep admit")
        steps += [
            f"drain on {service}",
            "sleep drain",
            f"stop --timeout {grace} {service}",
            f"up --detach --no-deps --force-recreate {service}",
            f"probe {service}",
        ]
    return steps


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    # The stand-in sleep returns at once: realistic figures cost nothing.
    spec = DeploymentSpec(replicas=2, stream_replicas=1, drain_delay=7, fail_timeout=20)
    return Deployment(spec, tmp_path)


def test_deploy_script_unknown_command_prints_usage_and_exits_2(deployment: Deployment) -> None:
    """An unknown command: usage on stderr, exit status 2, docker never called."""
    proc = deployment.run("frobnicate")
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr
    assert "rolling-restart" in proc.stderr
    assert deployment.calls() == []


def test_deploy_script_help_lists_every_command(deployment: Deployment) -> None:
    """help exits 0 and names each command."""
    proc = deployment.run("help")
    assert proc.returncode == 0
    for command in ("start", "stop", "status", "health", "scale N", "rolling-restart", "logs"):
        assert command in proc.stdout


@pytest.mark.parametrize("count", ["", "0", "-1", "ten", "3"])
def test_deploy_script_scale_rejects_bad_counts(deployment: Deployment, count: str) -> None:
    """scale needs 1..N (N generated replicas); anything else exits 2 before touching docker."""
    proc = deployment.run("scale", count)
    assert proc.returncode == 2
    assert "error:" in proc.stderr
    assert deployment.calls() == []


def test_deploy_script_scale_beyond_generated_suggests_regenerating(
    deployment: Deployment,
) -> None:
    """More replicas than generated: the message says to re-run generate_lb_config."""
    proc = deployment.run("scale", "3")
    assert "generate_lb_config --replicas 3" in proc.stderr


def test_deploy_script_preflight_requires_env_file(deployment: Deployment) -> None:
    """start refuses to run without the env file holding the secrets."""
    (deployment.root / deployment.spec.env_file).unlink()
    proc = deployment.run("start")
    assert proc.returncode == 1
    assert deployment.spec.env_file in proc.stderr


def test_deploy_script_rolling_restart_drains_each_replica_in_order(
    deployment: Deployment,
) -> None:
    """Per replica: drain on, drain delay, stop with grace, recreate, ready; then wait until
    nginx sends to it again before the next one.  Nothing else, nothing marked in nginx."""
    proc = deployment.run("rolling-restart")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = _steps(deployment, deployment.calls())
    assert steps == _rolling_restart_steps(deployment, list(deployment.spec.app_services))
    assert deployment.includes_unchanged()


def test_deploy_script_rolling_restart_never_reloads_nginx(deployment: Deployment) -> None:
    """No nginx call at all (no -t, no reload) and no down mark during a rolling restart: a
    reload closes clients' idle keep-alive connections."""
    proc = deployment.run("rolling-restart")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = deployment.calls()
    assert [c for c in calls if "argv" in c and len(c["argv"]) > 5]  # it did run
    nginx_calls = [
        c for c in calls if _compose_args(c)[:3] == ["exec", "-T", deployment.spec.nginx_service]
    ]
    assert nginx_calls == []
    assert not any(_is_reload(c) for c in calls)
    assert all(c["down"] == [] and c["parked"] == [] for c in calls if "argv" in c)


def test_deploy_script_rolling_restart_takes_one_replica_at_a_time(
    deployment: Deployment,
) -> None:
    """A replica is drained only once the previous one answered ready and the admission wait
    passed; each one is recreated exactly once."""
    assert deployment.run("rolling-restart").returncode == 0
    out: str | None = None
    admitted = True
    for step in _steps(deployment, deployment.calls()):
        if step.startswith("drain on "):
            assert out is None, step
            assert admitted, step
            out, admitted = step.split()[-1], False
        elif step == f"probe {out}":
            out = None
        elif step == "sleep admit":
            admitted = out is None
    recreated = [args[-1] for args in map(_compose_args, deployment.calls()) if args[:1] == ["up"]]
    assert recreated == list(deployment.spec.app_services)


def test_deploy_script_rolling_restart_skips_parked_replicas(deployment: Deployment) -> None:
    """After scale 1, a rolling restart leaves the parked web-2 alone."""
    spec = deployment.spec
    assert deployment.run("scale", "1").returncode == 0
    deployment.log.unlink()
    proc = deployment.run("rolling-restart")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parked = spec.web_names[1]
    assert f"{parked}: parked, skipped" in proc.stdout
    services = [s for s in spec.app_services if s != parked]
    expected = _rolling_restart_steps(deployment, services)
    marked = f" (marked {spec.address(parked)})"
    marks = [s if s.startswith("sleep ") else s + marked for s in expected]
    assert _steps(deployment, deployment.calls()) == marks


def test_deploy_script_rolling_restart_migrates_before_the_first_replica(
    deployment: Deployment,
) -> None:
    """The image is built and migrations run before any replica is drained."""
    assert deployment.run("rolling-restart").returncode == 0
    calls = deployment.calls()
    argv = [c.get("argv", []) for c in calls]
    build = next(i for i, a in enumerate(argv) if a[:1] == ["build"])
    run_migrate = ["run", "--rm", deployment.spec.manage_service, "migrate"]
    migrate = next(i for i, a in enumerate(argv) if a[3:7] == run_migrate)
    first_drain = next(i for i, a in enumerate(argv) if "drain" in a)
    assert build < migrate < first_drain


def test_deploy_script_unready_replica_stays_marked_down(deployment: Deployment) -> None:
    """A replica that never answers /ready/ stops the rollout: it is marked down and nginx
    reloaded (the only reload of a restart, on this failure path), the rest is untouched."""
    spec = deployment.spec
    stuck = spec.web_names[1]
    proc = deployment.run("rolling-restart", FAKE_UNREADY=stuck, ARENA_READY_TIMEOUT="0")
    assert proc.returncode == 1
    assert f"{stuck} is not ready" in proc.stderr
    assert f"server {spec.address(stuck)} " in deployment.include(spec.api_upstream)
    down = [
        line
        for line in deployment.include(spec.api_upstream).splitlines()
        if line.endswith(" down;")
    ]
    assert [line.split()[1] for line in down] == [spec.address(stuck)]
    touched = {args[-1] for args in map(_compose_args, deployment.calls()) if args}
    assert not touched & set(spec.stream_names)
    steps = _steps(deployment, deployment.calls())
    marked = f" (marked {spec.address(stuck)})"
    first = _rolling_restart_steps(deployment, [spec.web_names[0], stuck])
    assert steps == [*first, f"nginx -t -q{marked}", f"nginx -s reload{marked}"]


def test_deploy_script_scale_down_parks_and_scale_up_restores(deployment: Deployment) -> None:
    """scale 1 drains and parks web-2 (nginx -t still passes); scale 2 restores the includes."""
    spec = deployment.spec
    proc = deployment.run("scale", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = deployment.include(spec.api_upstream)
    assert f"# parked: server {spec.address(spec.web_names[1])} " in api
    assert f"\nserver {spec.address(spec.web_names[0])} " in api
    status = deployment.run("status")
    assert f"{spec.web_names[1]}: parked in nginx" in status.stdout
    proc = deployment.run("scale", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert deployment.includes_unchanged()


def test_deploy_script_reload_is_refused_when_nginx_rejects_the_config(
    deployment: Deployment,
) -> None:
    """A broken nginx config (real nginx -t) stops scale before any reload."""
    conf = deployment.root / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("events {", "events { bogus_directive on;", 1))
    proc = deployment.run("scale", "1")
    assert proc.returncode == 1
    assert "nginx rejects" in proc.stderr
    reloads = [c for c in deployment.calls() if "reload" in c["argv"]]
    assert reloads == []


# --- quoting --------------------------------------------------------------------------------
EVIL = [
    "x; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "a'b\"c",
    "two\nlines",
    "${{HOME}}",
    "*",
    "-rf",
]


@pytest.mark.parametrize("evil", EVIL)
@pytest.mark.parametrize("field", ["image", "env_file", "server_name"])
def test_spec_rejects_shell_metacharacters(field: str, evil: str) -> None:
    """The spec refuses values that could be read as shell syntax."""
    with pytest.raises(SpecError, match=field):
        DeploymentSpec(**{field: evil.format(canary="/tmp/x")})


@pytest.mark.parametrize("evil", EVIL)
def test_deploy_script_quotes_values_that_bypass_validation(evil: str, tmp_path: Path) -> None:
    """Even values the spec would refuse reach bash as plain data: nothing runs, nothing splits."""
    canary = tmp_path / "canary"
    value = evil.format(canary=canary)
    spec = DeploymentSpec(replicas=2)
    # Bypass validation on purpose: the renderer must quote on its own.
    for name in ("image", "env_file", "server_name", "nginx_service", "manage_service"):
        object.__setattr__(spec, name, value)
    object.__setattr__(spec, "web_names", (value, "web-2"))
    object.__setattr__(spec, "app_services", (value, "web-2"))
    object.__setattr__(spec, "address", lambda service: f"{service}:8000")
    text = script.render(spec)[script.SCRIPT]
    block = text[text.index("# --- from the DeploymentSpec") : text.index("# --- constant body")]
    probe = textwrap.dedent(
        """
        printf '%s\\0' "$IMAGE" "$ENV_FILE" "$HOST_HEADER" "$NGINX_SERVICE" "$MANAGE_SERVICE"
        printf '%s\\0' "${WEB_SERVICES[@]}"
        upstream_address "$1"
        """
    )
    proc = subprocess.run(
        ["bash", "-c", block + probe, "deploy.sh", value],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    *values, address = proc.stdout.split("\0")
    assert values == [value] * 5 + [value, "web-2"]
    assert address == f"{value}:8000\n"
    assert not canary.exists()
    assert f"readonly IMAGE={shlex.quote(value)}" in text


def test_deploy_script_checks_and_reloads_the_config_nginx_runs_with(
    deployment: Deployment,
) -> None:
    """nginx -t and -s reload name the file of the compose nginx command, not the default."""
    assert deployment.run("scale", "1").returncode == 0
    assert deployment.run("scale", "2").returncode == 0
    services = yaml.safe_load(deployment.files[COMPOSE_FILE])["services"]
    command = services[deployment.spec.nginx_service]["command"]
    running = command[command.index("-c") + 1]
    nginx_calls = [
        args[3:]
        for args in map(_compose_args, deployment.calls())
        if args[2:4] == ["nginx", "nginx"]
    ]
    assert nginx_calls
    for args in nginx_calls:
        assert args[args.index("-c") + 1] == running


def test_deploy_script_edits_only_the_named_replica_line(tmp_path: Path) -> None:
    """Parking web-11 leaves web-1 alone (no prefix match), and scaling back restores all."""
    deployment = Deployment(DeploymentSpec(replicas=11, stream_replicas=1), tmp_path)
    spec = deployment.spec
    proc = deployment.run("scale", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = deployment.include(spec.api_upstream).splitlines()
    parked = [line.split()[3] for line in lines if line.startswith("# parked: ")]
    assert parked == [spec.address("web-11")]
    assert f"server {spec.address('web-1')} " in "\n".join(lines)
    assert deployment.run("scale", "11").returncode == 0
    assert deployment.includes_unchanged()
