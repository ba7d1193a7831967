"""The distribution: importable without Django settings, and the wheel holds every package file."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "django_arena_scale"

# Modules that must import in a process where Django settings are not configured: the package
# itself, the settings registry, the settings helpers a settings.py imports, and the pure cores.
IMPORTABLE_WITHOUT_SETTINGS = [
    "django_arena_scale",
    "django_arena_scale.conf",
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


def test_wheel_metadata_declares_python_django_and_extras(wheel: Path) -> None:
    """Requires-Python, the Django floor and the server extras are in the metadata."""
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(archive.read(meta_name))
    requires = meta.get_all("Requires-Dist") or []
    assert meta["Requires-Python"] == ">=3.10"
    assert any(r.replace(" ", "").lower().startswith("django>=5.2") for r in requires)
    assert {"gunicorn", "uvicorn", "servers"} <= set(meta.get_all("Provides-Extra") or [])
