"""README.md stays in step with the code: the settings and system-check tables, the commands."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from django_arena_scale._conf import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_settings() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readme_settings", ROOT / "scripts/readme_settings.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_is_current() -> None:
    """The generated table equals what scripts/readme_settings.py renders from conf.SETTINGS."""
    assert _readme_settings().updated(README) == README


def test_readme_lists_every_setting() -> None:
    """Every ARENA_SCALE_* setting of the registry appears in the README."""
    missing = [s.full_name for s in SETTINGS.values() if f"`{s.full_name}`" not in README]
    assert missing == []


def _check_ids_in_code() -> list[str]:
    """Every django_arena_scale.E0NN / W0NN id the check modules define."""
    package = ROOT / "src/django_arena_scale"
    files = [*sorted((package / "checks").glob("*.py")), package / "deploy/_checks.py"]
    pattern = r'id="django_arena_scale\.([EW]\d{3})"'
    return sorted({i for path in files for i in re.findall(pattern, path.read_text("utf-8"))})


def test_readme_system_checks_table_lists_every_id() -> None:
    """The "System checks" table has one row per id the code defines, and no other."""
    section = README.split("\n## System checks\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([EW]\d{3})` \|", section, flags=re.M)
    assert len(documented) == len(set(documented))
    assert sorted(documented) == _check_ids_in_code()
    assert len(documented) > 30


def test_readme_first_commands_are_scripts_that_exist() -> None:
    """The first code block holds the main-job and test commands, and both scripts exist."""
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first_block is not None
    scripts = re.findall(r"^bash (\S+)", first_block.group(1), flags=re.M)
    assert scripts == ["scripts/demo.sh", "scripts/test.sh"]
    assert all((ROOT / path).is_file() for path in scripts)


def test_readme_ci_runs_the_readme_test_command() -> None:
    """.ci/run ends by running exactly the README's test command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == "bash scripts/test.sh"


def test_readme_add_to_project_fits_ten_lines() -> None:
    """The "Add to an existing project" snippet is ten lines or fewer."""
    section = README.split("## Add to an existing project", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert block is not None
    assert len(block.group(1).strip().splitlines()) <= 10
