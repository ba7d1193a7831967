"""The public API of ``django_arena_scale.resilience`` is what its ``__init__`` exports."""

from __future__ import annotations

import ast
import pkgutil
import re
from pathlib import Path

import django_arena_scale.resilience as resilience

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = {
    # the guard and what the wrapped function may ask about its attempt
    "llm_call",
    "LLMGuard",
    "Target",
    "AttemptContext",
    "current_attempt",
    "current_attempt_timeout",
    "current_target",
    # errors (the tree in the package docstring)
    "GuardConfigError",
    "LLMCallError",
    "ProviderUnavailable",
    "RetriesExhausted",
    "DeadlineExceeded",
    "StreamInterrupted",
    "LLMTimeout",
    "AttemptTimeout",
    "FirstChunkTimeout",
    "IdleTimeout",
    # classification rules
    "Classifier",
    "Outcome",
    "Verdict",
    "default_classifier",
    # events, status, configuration, test mode
    "BreakerEvent",
    "breaker_event",
    "add_listener",
    "remove_listener",
    "breaker_status",
    "configure",
    "reset",
    "set_testing",
    "llm_test_mode",
}

# Every module inside the package is private (the Django signal ``breaker_event`` and
# ``breaker_status`` are exported from the package).
PUBLIC_MODULES: set[str] = set()


def test_exports_are_the_public_api() -> None:
    """__all__ lists exactly the user-facing names, and each one is importable."""
    assert set(resilience.__all__) == PUBLIC
    assert len(resilience.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(resilience, name) is not None


def test_internals_are_private_modules() -> None:
    """Every module of the package is underscored."""
    names = {info.name for info in pkgutil.iter_modules(resilience.__path__)}
    public = {name for name in names if not name.startswith("_")}
    assert public == PUBLIC_MODULES


def _resilience_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "django_arena_scale.resilience":
            found.update(alias.name for alias in node.names)
    return found


def test_example_and_readme_use_only_public_names() -> None:
    """The example project and the README's llm_call section import public names only."""
    example = _resilience_imports(ROOT / "example_project" / "arena" / "llm.py")
    assert example
    assert example <= PUBLIC
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"^from django_arena_scale\.resilience import (.+)$", readme, re.M)
    assert lines
    names = {name.strip() for line in lines for name in line.split(",")}
    assert names <= PUBLIC
