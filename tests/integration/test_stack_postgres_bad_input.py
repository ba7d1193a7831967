"""run_lb_stack's database options: bad input is named, exits non-zero, starts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import run_stack, stack_pids
from tests.servers import free_port

pytestmark = pytest.mark.integration

LIGHT = ("--replicas", "1", "--topology", "single", "--app-server", "uvicorn", "--workers", "1")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--read-replicas", "2"), "--read-replicas 2 needs --postgres"),
        (("--pgbouncer",), "--pgbouncer needs --postgres"),
        (
            ("--pg-bin-dir", "/usr/lib/postgresql/15/bin"),
            "--pg-bin-dir '/usr/lib/postgresql/15/bin'",
        ),
    ],
)
def test_database_options_need_postgres(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    result = run_stack(*LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path), *args)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert stack_pids(tmp_path) == []


def test_missing_initdb_is_named(tmp_path: Path) -> None:
    """A --pg-bin-dir without initdb fails before anything starts, naming the program and dir."""
    empty = tmp_path / "no-postgres-here"
    empty.mkdir()
    state = tmp_path / "state"
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(state),
        "--postgres", "--pg-bin-dir", str(empty),
    )  # fmt: skip
    assert result.returncode != 0
    assert f"'initdb' was not found in {str(empty)!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert stack_pids(state) == []


def test_negative_read_replicas_is_named(tmp_path: Path) -> None:
    result = run_stack(
        *LIGHT, "--port", str(free_port()), "--state-dir", str(tmp_path),
        "--postgres", "--read-replicas", "-1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "postgres_read_replicas" in result.stderr
    assert "-1" in result.stderr
