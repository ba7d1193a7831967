"""generate_lb_config bad input through ``manage.py`` itself: exit status and unwritable dirs.

Root ignores file modes, so the unwritable directory is made genuinely read-only: a read-only
bind mount inside a private mount namespace (``unshare -m``); as an ordinary user, chmod.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, readonly: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run generate_lb_config in a subprocess, optionally with ``readonly`` read-only."""
    argv = [sys.executable, "-m", "django", "generate_lb_config", *args]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    if readonly is not None and os.geteuid() == 0:
        ro = shlex.quote(str(readonly))
        script = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec " + shlex.join(
            argv
        )
        argv = ["unshare", "-m", "sh", "-c", script]
    elif readonly is not None:
        readonly.chmod(0o555)
    try:
        return subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
        )
    finally:
        if readonly is not None and os.geteuid() != 0:
            readonly.chmod(0o755)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def unshare_ok() -> None:
    if os.geteuid() == 0 and not shutil.which("unshare"):
        pytest.skip("unshare(1) is needed to make a directory read-only for root")


def test_manage_bad_replicas_exits_non_zero(tmp_path: Path) -> None:
    """--replicas 0 through manage.py: exit 1, the rule on stderr, nothing written."""
    proc = manage("--output", str(tmp_path / "d"), "--replicas", "0")
    assert (proc.returncode, proc.stderr.strip()) == (
        1,
        "CommandError: replicas must be an integer from 1 to 500; got 0.",
    )
    assert list(tmp_path.iterdir()) == []


def test_manage_unknown_option_exits_non_zero(tmp_path: Path) -> None:
    """An unknown option: non-zero exit, the option named with a suggestion."""
    proc = manage("--output", str(tmp_path / "d"), "--replica", "3")
    assert proc.returncode != 0
    assert "unrecognized arguments: --replica 3 (did you mean --replicas?)" in proc.stderr


@pytest.mark.usefixtures("unshare_ok")
def test_manage_unwritable_new_output(tmp_path: Path) -> None:
    """--output inside a read-only directory: CommandError naming it, nothing created."""
    parent = tmp_path / "ro"
    parent.mkdir()
    proc = manage("--output", str(parent / "deploy"), readonly=parent)
    assert proc.returncode == 1, proc.stderr
    assert f"--output '{parent / 'deploy'}' must be writable" in proc.stderr
    assert snapshot(parent) == {}


@pytest.mark.usefixtures("unshare_ok")
def test_manage_unwritable_existing_output(tmp_path: Path) -> None:
    """An existing read-only output directory is left exactly as it was."""
    out = tmp_path / "deploy"
    first = manage("--output", str(out), "--replicas", "2")
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    proc = manage("--output", str(out), "--replicas", "3", "--force", readonly=out)
    assert proc.returncode == 1, proc.stderr
    assert "must be writable" in proc.stderr
    assert snapshot(out) == before
