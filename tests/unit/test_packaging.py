"""The distribution: importable without Django settings, the wheel holds every package file and
the licence, and its metadata matches what tox tests."""

from __future__ import annotations

import configparser
import email
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "django_arena_scale"
# The project's chosen libraries, capped below the next major version after the one CI tests.
CAPPED_AT_NEXT_MAJOR = ["pybreaker", "tenacity", "pyyaml"]

# Modules that must import in a process where Django settings are not configured: the package
# itself, the settings registry, the settings helpers a settings.py imports, and the pure cores.
IMPORTABLE_WITHOUT_SETTINGS = [
    "django_arena_scale",
    "django_arena_scale._conf",
    "django_arena_scale.redis",
    "django_arena_scale.lifecycle",
    "django_arena_scale.resilience",
    "django_arena_scale.deploy",
]


def _env_without_settings() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The tests directory must not leak onto the path: only the installed package counts.
    env.pop("PYTHONPATH", None)
    return env


@pytest.mark.parametrize("module", IMPORTABLE_WITHOUT_SETTINGS)
def test_import_without_settings_succeeds(module: str, tmp_path: Path) -> None:
    """Importing the module needs no DJANGO_SETTINGS_MODULE and never reads settings."""
    code = (
        f"import {module}\n"
        "from django.conf import settings\n"
        "assert not settings.configured, 'importing configured Django settings'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env_without_settings(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this source tree by the project's build backend."""
    hatchling_build = pytest.importorskip("hatchling.build")
    out = tmp_path_factory.mktemp("wheel")
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        name = hatchling_build.build_wheel(str(out))
    finally:
        os.chdir(cwd)
    return out / name


def _package_files() -> set[str]:
    files = set()
    for path in PACKAGE_DIR.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.add(path.relative_to(PACKAGE_DIR.parent).as_posix())
    return files


def test_wheel_contains_every_package_file(wheel: Path) -> None:
    """Templates, py.typed and every module under src/django_arena_scale are in the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert _package_files() - names == set()


def test_wheel_contains_only_the_package(wheel: Path) -> None:
    """Tests, the example project and tooling stay out of the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"django_arena_scale"}


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(meta_name))


def test_wheel_metadata_declares_python_django_and_extras(wheel: Path) -> None:
    """Requires-Python, the Django floor and the server extras are in the metadata."""
    meta = _metadata(wheel)
    requires = meta.get_all("Requires-Dist") or []
    assert meta["Requires-Python"] == ">=3.10"
    assert any(r.replace(" ", "").lower().startswith("django>=5.2") for r in requires)
    assert {"gunicorn", "uvicorn", "servers"} <= set(meta.get_all("Provides-Extra") or [])


def test_wheel_ships_package_data(wheel: Path) -> None:
    """py.typed and every non-Python package file (templates, static text) are in the wheel."""
    data = {name for name in _package_files() if not name.endswith(".py")}
    assert "django_arena_scale/py.typed" in data
    with zipfile.ZipFile(wheel) as archive:
        assert data - set(archive.namelist()) == set()


def test_wheel_ships_the_license(wheel: Path) -> None:
    """The MIT licence is in the wheel's .dist-info/licenses/, named by License-File, and its
    SPDX expression is the metadata's licence."""
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) 2026 django-arena-scale developers" in license_text
    with zipfile.ZipFile(wheel) as archive:
        shipped = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert len(shipped) == 1
        assert archive.read(shipped[0]).decode("utf-8") == license_text
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]


def _tox_matrix() -> tuple[set[str], set[str]]:
    """The Python and Django versions of tox's env_list, as "3.12" and "6.1"."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    env_list = tox["tox"]["env_list"]
    pythons: set[str] = set()
    for group in re.findall(r"\bpy\{?([\d,]+)\}?", env_list):
        pythons |= {f"{v[0]}.{v[1:]}" for v in group.split(",")}
    djangos: set[str] = set()
    for group in re.findall(r"\bdjango\{?([\d,]+)\}?", env_list):
        djangos |= {f"{v[0]}.{v[1:]}" for v in group.split(",")}
    return pythons, djangos


def _classified(meta: Message, prefix: str) -> set[str]:
    return {
        c.removeprefix(prefix)
        for c in meta.get_all("Classifier") or []
        if c.startswith(prefix) and re.fullmatch(r"\d+\.\d+", c.removeprefix(prefix))
    }


def test_classifiers_name_exactly_the_versions_tox_tests(wheel: Path) -> None:
    """Each Python and Django version tox tests has its classifier, and no other is claimed."""
    pythons, djangos = _tox_matrix()
    assert {"3.10", "6.1"} <= pythons | djangos
    meta = _metadata(wheel)
    assert _classified(meta, "Programming Language :: Python :: ") == pythons
    assert _classified(meta, "Framework :: Django :: ") == djangos
    assert meta["Requires-Python"] == f">={min(pythons, key=Version)}"


def _runtime_requirements(meta: Message) -> list[Requirement]:
    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None]


def test_dependency_bounds_admit_the_installed_versions(wheel: Path) -> None:
    """Every runtime dependency installed here (tox installs the newest allowed) fits its bounds."""
    outside = {}
    for req in _runtime_requirements(_metadata(wheel)):
        installed = importlib.metadata.version(req.name)
        if not req.specifier.contains(installed, prereleases=True):
            outside[req.name] = f"{installed} not in {req.specifier}"
    assert outside == {}


@pytest.mark.parametrize("name", CAPPED_AT_NEXT_MAJOR)
def test_chosen_libraries_are_capped_at_the_next_major(wheel: Path, name: str) -> None:
    """pybreaker, tenacity and PyYAML have an upper bound, at the major after the tested one."""
    (req,) = [r for r in _runtime_requirements(_metadata(wheel)) if r.name.lower() == name]
    caps = [Version(s.version) for s in req.specifier if s.operator == "<"]
    installed = Version(importlib.metadata.version(name))
    assert caps == [Version(f"{installed.major + 1}")], str(req.specifier)
