"""Rewrite deploy_templates/ from the default DeploymentSpec (what a test compares it with).

python scripts/regen_templates.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from django_arena_scale.deploy import DeploymentSpec, render_all  # noqa: E402


def main() -> None:
    rendered = render_all(DeploymentSpec())
    target = ROOT / "deploy_templates"
    shutil.rmtree(target, ignore_errors=True)
    for path, text in rendered.files.items():
        out = target / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        if text.startswith("#!"):
            out.chmod(0o755)
    print(f"deploy_templates/: {len(rendered.files)} files")


if __name__ == "__main__":
    main()
