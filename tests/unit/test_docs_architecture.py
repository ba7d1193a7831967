"""docs/architecture.md names only what exists, and nothing points outside the repository.

The architecture page names modules, settings and repository paths; a rename or a removal
that forgets the page fails here instead of leaving it wrong.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from django_arena_scale._conf import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Dotted module paths: lower-case segments only, so ``django_arena_scale.E0NN`` (a check id)
# and ``django_arena_scale.deploy.DeploymentSpec`` stop at the package or module.
MODULE = re.compile(r"\bdjango_arena_scale(?:\.[a-z_][a-z0-9_]*)*")
SETTING = re.compile(r"\bARENA_SCALE_[A-Z0-9]+(?:_[A-Z0-9]+)*")
# A backticked repository path: under a top-level directory, or a top-level file.
TOP_DIRS = (
    "src",
    "tests",
    "bench",
    "docs",
    "scripts",
    "example_project",
    "deploy_templates",
    ".ci",
)
TOP_FILES = ("pyproject.toml", "tox.ini", "README.md", "CHANGELOG.md")
_DIRS = "|".join(map(re.escape, TOP_DIRS))
_FILES = "|".join(map(re.escape, TOP_FILES))
PATH = re.compile(rf"`((?:{_DIRS})/[^`\s]*|{_FILES})`")


def _text() -> str:
    return ARCHITECTURE.read_text(encoding="utf-8")


def test_named_modules_are_importable() -> None:
    """Every ``django_arena_scale.xxx`` module the page names can be imported."""
    names = sorted(set(MODULE.findall(_text())))
    assert "django_arena_scale.middleware" in names  # the pattern finds what the page names
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    assert missing == []


def test_named_settings_are_declared() -> None:
    """Every ``ARENA_SCALE_*`` name on the page is a declared setting."""
    declared = {setting.full_name for setting in SETTINGS.values()}
    named = set(SETTING.findall(_text()))
    assert "ARENA_SCALE_READY_INCLUDE_SHARED" in named
    assert sorted(named - declared) == []


def test_named_paths_exist() -> None:
    """Every backticked repository path on the page (``tests/e2e/test_chaos.py``...) exists."""
    paths = sorted(set(PATH.findall(_text())))
    assert "docs/chaos.md" in paths
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_section_links_resolve() -> None:
    """In-page links (``[Timeout chain](#timeout-chain)``) point at a heading of the page."""
    text = _text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    }
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the page links its own sections"
    assert sorted(links - anchors) == []


# Pointers that only make sense to someone with the team's private notes.
OUTSIDE = re.compile(r"DESIGN\.md|\bissue \d|/work/", flags=re.I)
SCANNED = ("src", "tests", "bench", "docs", "scripts", "example_project")
SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".ini", ".cfg", ".html", ".yaml", ".yml"}


def _scanned_files() -> list[Path]:
    files = [ROOT / name for name in ("README.md", "CHANGELOG.md")]
    for top in SCANNED:
        files.extend(
            path
            for path in sorted((ROOT / top).rglob("*"))
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
        )
    return [path for path in files if path.exists() and path != Path(__file__).resolve()]


def test_nothing_points_outside_the_repository() -> None:
    """No comment, docstring or doc refers to an outside design file, an issue or a host path."""
    hits = []
    for path in _scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{rel}:{number}: {line.strip()}")
    assert hits == []
