"""manage.py generate_lb_config: options, sources, safety flags, bad input, deploy_templates."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_arena_scale.deploy import render_all
from django_arena_scale.deploy._spec import DeploymentSpec
from django_arena_scale.management.commands.generate_lb_config import Command

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "deploy_templates"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("generate_lb_config", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


def test_command_writes_every_file(tmp_path: Path) -> None:
    """The compose target writes exactly the render of the spec."""
    run("--output", str(tmp_path / "d"), "--replicas", "3")
    files = render_all(DeploymentSpec(replicas=3)).files
    assert {p: (tmp_path / "d" / p).read_text() for p in files} == files


def test_command_prints_capacity_report(tmp_path: Path) -> None:
    """After generating, the capacity report is printed."""
    out = run("--output", str(tmp_path / "d"), "--replicas", "2")
    assert "concurrent requests: 16" in out


def test_command_local_target(tmp_path: Path) -> None:
    """--target local writes the loopback nginx.conf at the output root."""
    run("--output", str(tmp_path / "d"), "--target", "local", "--replicas", "1")
    assert "listen 127.0.0.1:8080 default_server;" in (tmp_path / "d" / "nginx.conf").read_text()


def test_command_rerun_is_noop(tmp_path: Path) -> None:
    """A second run with the same spec writes nothing."""
    run("--output", str(tmp_path / "d"))
    assert "0 file(s) written" in run("--output", str(tmp_path / "d"))


def test_command_check_passes_when_fresh(tmp_path: Path) -> None:
    """--check is quiet and successful when every file is up to date."""
    run("--output", str(tmp_path / "d"))
    assert "up to date" in run("--output", str(tmp_path / "d"), "--check")


def test_command_check_lists_stale_files(tmp_path: Path) -> None:
    """--check fails naming files that differ, and writes nothing."""
    run("--output", str(tmp_path / "d"), "--replicas", "2")
    before = snapshot(tmp_path)
    with pytest.raises(CommandError, match=r"stale: .*nginx/upstreams/django_backend\.conf"):
        run("--output", str(tmp_path / "d"), "--replicas", "3", "--check")
    assert snapshot(tmp_path) == before


def test_command_check_missing_directory(tmp_path: Path) -> None:
    """--check on a missing directory lists every file and creates nothing."""
    with pytest.raises(CommandError, match="missing or stale"):
        run("--output", str(tmp_path / "d"), "--check")
    assert list(tmp_path.iterdir()) == []


def test_command_dry_run_writes_nothing(tmp_path: Path) -> None:
    """--dry-run prints the plan and leaves the disk alone."""
    out = run("--output", str(tmp_path / "d"), "--dry-run")
    assert "would create: docker-compose.yml" in out
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_to_overwrite_changed_file(tmp_path: Path) -> None:
    """Without --force a changed file is named and nothing is written."""
    run("--output", str(tmp_path / "d"))
    (tmp_path / "d" / "nginx" / "nginx.conf").write_text("# mine\n")
    before = snapshot(tmp_path)
    with pytest.raises(CommandError, match=r"Refusing to overwrite .*nginx\.conf"):
        run("--output", str(tmp_path / "d"), "--replicas", "4")
    assert snapshot(tmp_path) == before


def test_command_force_overwrites(tmp_path: Path) -> None:
    """--force replaces a changed file."""
    run("--output", str(tmp_path / "d"))
    (tmp_path / "d" / "nginx" / "nginx.conf").write_text("# mine\n")
    run("--output", str(tmp_path / "d"), "--force")
    assert (tmp_path / "d" / "nginx" / "nginx.conf").read_text().startswith("# Generated")


def test_command_keeps_existing_dockerfile(tmp_path: Path) -> None:
    """An existing Dockerfile is kept (and reported) unless --force."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "Dockerfile").write_text("FROM mine\n")
    out = run("--output", str(tmp_path / "d"))
    assert (tmp_path / "d" / "Dockerfile").read_text() == "FROM mine\n"
    assert "keep (exists; use --force to replace): Dockerfile" in out


@override_settings(ARENA_SCALE_DEPLOY={"replicas": 4, "workers": 3})
def test_command_reads_setting(tmp_path: Path) -> None:
    """ARENA_SCALE_DEPLOY feeds the spec."""
    out = run("--output", str(tmp_path / "d"))
    assert "concurrent requests: 96 (4 replicas x 3 workers x 8 threads)" in out


@override_settings(ARENA_SCALE_DEPLOY={"replicas": 4, "workers": 3})
def test_command_cli_overrides_setting(tmp_path: Path) -> None:
    """A CLI option wins over ARENA_SCALE_DEPLOY."""
    out = run("--output", str(tmp_path / "d"), "--replicas", "2")
    assert "concurrent requests: 48 (2 replicas x 3 workers x 8 threads)" in out


@override_settings(WSGI_APPLICATION="shop.wsgi.application")
def test_command_warns_when_wsgi_app_differs_from_project(tmp_path: Path) -> None:
    """A spec pointing at another WSGI module than the project's is flagged on stderr."""
    err = io.StringIO()
    call_command(
        "generate_lb_config", "--output", str(tmp_path / "d"), stdout=io.StringIO(), stderr=err
    )
    assert (
        "wsgi_app is 'config.wsgi:application' but this project's WSGI_APPLICATION"
        in err.getvalue()
    )


@override_settings(WSGI_APPLICATION="shop.wsgi.application")
def test_command_no_warning_when_wsgi_app_matches(tmp_path: Path) -> None:
    """No warning once the spec names the project's WSGI application."""
    err = io.StringIO()
    args = ["--output", str(tmp_path / "d"), "--wsgi-app", "shop.wsgi:application"]
    call_command("generate_lb_config", *args, stdout=io.StringIO(), stderr=err)
    assert "wsgi_app" not in err.getvalue()


def test_command_has_an_option_per_spec_field() -> None:
    """Every DeploymentSpec field is an option named after it."""
    parser = Command().create_parser("manage.py", "generate_lb_config")
    options = {s for a in parser._actions for s in a.option_strings}
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(DeploymentSpec)}
    assert fields - options == set()


BAD_INPUT = [
    (["--replicas", "0"], "replicas must be an integer from 1 to 500; got 0."),
    (["--replicas", "-1"], "replicas must be an integer from 1 to 500; got -1."),
    (["--replicas", "ten"], "replicas must be an integer from 1 to 500; got 'ten'."),
    (["--replicas", "100000"], "replicas must be an integer from 1 to 500; got 100000."),
    (["--replicaz", "3"], "unrecognized arguments: --replicaz 3 (did you mean --replicas?)"),
    (["--http-port", "70000"], "http_port must be an integer from 1 to 65535; got 70000."),
    (["--local-port", "0"], "local_port must be an integer from 1 to 65535; got 0."),
    (["--server-name", "a;b"], "server_name must be a host name"),
    (["--server-name", "a{b"], "server_name must be a host name"),
    (["--server-name", "a}b"], "server_name must be a host name"),
    (["--server-name", 'a"b'], "server_name must be a host name"),
    (["--server-name", "a'b"], "server_name must be a host name"),
    (["--server-name", "a\nb"], "server_name must be a host name"),
    (["--server-name", "a b"], "server_name must be a host name"),
    (["--image", "x;rm -rf"], "image must be a container image reference"),
    (["--stream-paths", "/a/;"], "stream_paths must be a URL path"),
    (["--env-file", "../secrets"], "env_file must be a relative file path"),
    (["--trusted-proxies", "10.0.0.0/8 1.2.3.4"], "trusted_proxies must hold IP networks"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[repr(a) for a, _ in BAD_INPUT])
def test_command_bad_input_changes_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    """Each bad value: CommandError naming value and rule; no file created or changed."""
    out = tmp_path / "d"
    run("--output", str(out), "--replicas", "2")
    before = snapshot(tmp_path)
    with pytest.raises(CommandError) as info:
        run("--output", str(out), *args)
    assert message in str(info.value)
    assert snapshot(tmp_path) == before


@override_settings(ARENA_SCALE_DEPLOY={"replicaz": 3})
def test_command_unknown_setting_key(tmp_path: Path) -> None:
    """An unknown ARENA_SCALE_DEPLOY key is a CommandError with a did-you-mean."""
    with pytest.raises(CommandError, match="did you mean 'replicas'"):
        run("--output", str(tmp_path / "d"))
    assert list(tmp_path.iterdir()) == []


@override_settings(ARENA_SCALE_DEPLOY={"server_name": "evil;"})
def test_command_bad_setting_value(tmp_path: Path) -> None:
    """A bad value in ARENA_SCALE_DEPLOY is rejected like a CLI value."""
    with pytest.raises(CommandError, match=r"server_name must be a host name.*'evil;'"):
        run("--output", str(tmp_path / "d"))


def test_command_output_is_a_file(tmp_path: Path) -> None:
    """--output naming a file: CommandError, file untouched."""
    target = tmp_path / "f"
    target.write_text("data\n")
    with pytest.raises(CommandError, match="must be a directory; it is a file"):
        run("--output", str(target))
    assert snapshot(tmp_path) == {"f": (b"data\n", target.stat().st_mode)}


def test_command_dry_run_output_is_a_file(tmp_path: Path) -> None:
    """--dry-run also rejects a file as --output."""
    (tmp_path / "f").write_text("data\n")
    with pytest.raises(CommandError, match="must be a directory"):
        run("--output", str(tmp_path / "f"), "--dry-run")


def test_command_output_under_a_file(tmp_path: Path) -> None:
    """--output below a file: CommandError, nothing created."""
    (tmp_path / "f").write_text("data\n")
    with pytest.raises(CommandError, match="is a file, not a directory"):
        run("--output", str(tmp_path / "f" / "deploy"))


def test_deploy_templates_equal_fresh_render() -> None:
    """deploy_templates/ is the default spec's render, byte for byte, nothing more."""
    files = render_all(DeploymentSpec()).files
    on_disk = {
        str(p.relative_to(TEMPLATES)): p.read_bytes() for p in TEMPLATES.rglob("*") if p.is_file()
    }
    assert on_disk == {path: text.encode() for path, text in files.items()}


def test_deploy_templates_pass_check() -> None:
    """generate_lb_config --check agrees that deploy_templates/ is up to date."""
    assert "up to date" in run("--output", str(TEMPLATES), "--check")


def test_deploy_templates_script_is_executable() -> None:
    """deploy.sh is committed executable."""
    rendered = render_all(DeploymentSpec())
    for rel in rendered.executable:
        assert os.stat(TEMPLATES / rel).st_mode & stat.S_IXUSR, rel
