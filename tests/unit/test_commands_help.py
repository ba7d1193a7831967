"""``manage.py <command> --help`` works for every management command the package ships.

The commands are discovered from the package's ``management/commands`` directory, so a new
command is covered without editing this file.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from django.core.management import ManagementUtility, find_commands

import django_arena_scale

COMMANDS_DIR = Path(django_arena_scale.__file__).parent / "management"
COMMANDS = sorted(find_commands(str(COMMANDS_DIR)))


def test_commands_are_discovered() -> None:
    assert "generate_lb_config" in COMMANDS
    assert len(COMMANDS) >= 3


@pytest.mark.parametrize("name", COMMANDS)
def test_help_exits_zero_and_names_the_command(name: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exc,
    ):
        ManagementUtility(["manage.py", name, "--help"]).execute()
    assert exc.value.code in (0, None), err.getvalue()
    text = out.getvalue()
    assert text.startswith("usage:"), text[:200]
    assert f"manage.py {name}" in text.splitlines()[0]


def test_generate_lb_config_help_keeps_a_literal_percent() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        ManagementUtility(["manage.py", "generate_lb_config", "--help"]).execute()
    assert "CPU utilisation (%)" in " ".join(out.getvalue().split())


def test_run_lb_stack_takes_the_local_port_by_generate_lb_configs_name() -> None:
    """run_lb_stack --local-port is --port: one name for the spec's local_port everywhere."""
    from django_arena_scale.management.commands.run_lb_stack import Command

    parser = Command().create_parser("manage.py", "run_lb_stack")
    assert parser.parse_args(["--local-port", "9191"]).port == 9191
    assert parser.parse_args(["--port", "9192"]).port == 9192
