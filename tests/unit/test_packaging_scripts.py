"""The shell entry points (demo, tests, CI) parse and pass shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scripts/demo.sh", "scripts/test.sh", ".ci/run"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    """shellcheck finds nothing (CI installs shellcheck, so a missing binary is a failure)."""
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is not installed: apt-get install -y shellcheck"
    result = subprocess.run(
        [shellcheck, "--shell=bash", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_stops_on_errors(script: str) -> None:
    """Each script runs under ``set -euo pipefail`` so a failed step is never skipped over."""
    text = (ROOT / script).read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
