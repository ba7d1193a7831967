"""The sdist a packager downloads: built by hatchling, it ships the licence and every tracked file,
and the tests that read files outside src/ and tests/ pass from the unpacked archive."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Build and tool state that must never reach the sdist.
JUNK_PARTS = {
    ".venv",
    ".venv-tools",
    ".tox",
    ".git",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
}
# A unit module that reaches for the repository root reads a file outside src/ and tests/.
READS_THE_TREE = re.compile(r"parents\[2\]")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist of this source tree built by the project's build backend."""
    pytest.importorskip("hatchling.build")
    out = tmp_path_factory.mktemp("sdist")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, hatchling.build as b; print(b.build_sdist(sys.argv[1]))",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def unpacked(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist unpacked as a packager would: one top directory named after the release."""
    dest = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+: refuse links and paths out of dest
            archive.extractall(dest, filter="data")
        else:  # pragma: no cover - older patch releases
            archive.extractall(dest)
    (top,) = dest.iterdir()
    return top


def _members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        return {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}


def test_sdist_ships_the_license(unpacked: Path) -> None:
    """LICENSE is in the sdist, byte for byte, and PKG-INFO names it with the SPDX expression."""
    assert (unpacked / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    meta = email.message_from_bytes((unpacked / "PKG-INFO").read_bytes())
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]


def test_sdist_ships_every_tracked_file(sdist: Path) -> None:
    """Every file git tracks is in the sdist, so nothing a test reads is left behind."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (e.g. the unpacked sdist): no tracked files to compare")
    listed = subprocess.run(
        [git, "ls-files", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # A tracked file deleted in this working tree is not part of what gets built.
    tracked = {name for name in listed.split("\0") if name and (ROOT / name).is_file()}
    assert len(tracked) > 100
    assert tracked - _members(sdist) == set()


def test_sdist_ships_no_build_or_tool_state(sdist: Path) -> None:
    """Virtualenvs, caches, bytecode and git data stay out of the sdist."""
    members = _members(sdist)
    junk = sorted(m for m in members if JUNK_PARTS & set(m.split("/")) or m.endswith(".pyc"))
    assert junk == []
    assert {"pyproject.toml", "PKG-INFO", "tox.ini", "README.md", "CHANGELOG.md"} <= members


def _sdist_env(unpacked: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The sdist's own src/ comes first, ahead of any installed or editable copy of the package.
    env["PYTHONPATH"] = str(unpacked / "src")
    return env


def test_unpacked_sdist_imports_its_own_package(unpacked: Path) -> None:
    """With PYTHONPATH at the sdist's src/, the package imported is the sdist's copy."""
    result = subprocess.run(
        [sys.executable, "-c", "import django_arena_scale as p; print(p.__file__)"],
        cwd=unpacked,
        env=_sdist_env(unpacked),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(unpacked / "src")


def test_unpacked_sdist_tests_pass(unpacked: Path) -> None:
    """From the unpacked sdist, every test module collects and the unit tests that read the tree
    pass.

    A representative subset, to keep this under a minute on CI: the unit modules that reach for
    the repository root (``parents[2]``: README, tox.ini, scripts/, .ci/run, deploy_templates/,
    example_project/, docs/), which are the ones a file missing from the sdist breaks (it broke
    12 of them before the sdist shipped the tracked tree). The rest of the unit suite only needs
    src/ and tests/; ``test_sdist_ships_every_tracked_file`` covers those. The whole unit suite
    runs from the unpacked sdist as from the checkout (``python -m pytest tests/unit`` there,
    40-90 s on a 2-core machine: too long to repeat in every tox env); this subset takes ~30 s.
    """
    modules = sorted(
        path.relative_to(unpacked).as_posix()
        for path in (unpacked / "tests" / "unit").glob("test_*.py")
        if READS_THE_TREE.search(path.read_text(encoding="utf-8"))
    )
    assert "tests/unit/test_readme.py" in modules
    assert "tests/unit/test_packaging_scripts.py" in modules
    env = _sdist_env(unpacked)
    pytest_args = ["-q", "-p", "no:cacheprovider"]

    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "--collect-only", *pytest_args],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout[-4000:] + collected.stderr[-2000:]

    result = subprocess.run(
        [sys.executable, "-m", "pytest", *modules, "-x", *pytest_args],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout[-2000:]
    assert " failed" not in result.stdout
