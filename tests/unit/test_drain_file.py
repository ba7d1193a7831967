"""The drain file has one owner, ``django_arena_scale.lifecycle._drain``.

Finding its path, testing for it, writing and removing it happen there; the lifecycle, the
gunicorn master, ``manage.py drain`` and the local stack call it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from django_arena_scale.lifecycle import _drain as drain

SRC = Path(drain.__file__).resolve().parents[1]

#: Ways of reaching the drain file directly instead of through the owner module.
DIRECT = re.compile(
    r"""environ(?:\.get\(|\[)\s*["']ARENA_SCALE_DRAIN_FILE["']"""
    r"""|env\[\s*["']ARENA_SCALE_DRAIN_FILE["']\s*\]"""
    r"""|fastconf\.get\(\s*["']DRAIN_FILE["']\s*\)"""
    r"""|\bconf\.DRAIN_FILE\b"""
    r"""|drain_file\.(?:write_text|unlink|exists|touch)\("""
)
#: Files allowed to read the setting directly, and why.
ALLOWED = {
    "lifecycle/_drain.py": "the owner",
    # W053 compares the setting's value with the paths the generated configs set.
    "deploy/_checks.py": "a system check about the setting itself",
}


def test_drain_write_present_remove(tmp_path: Path) -> None:
    """write() creates the file atomically with a JSON body, present() sees it, remove() ends it."""
    path = tmp_path / "drain"
    assert drain.present(path) is False
    drain.write(path, reason="test")
    assert drain.present(path) is True
    assert json.loads(path.read_text())["reason"] == "test"
    assert [p.name for p in tmp_path.iterdir()] == ["drain"]  # no temp file left behind
    assert drain.remove(path) is True
    assert drain.remove(path) is False
    assert drain.present(path) is False
    assert drain.present(None) is False
    assert drain.present("") is False


def test_drain_write_names_a_missing_directory(tmp_path: Path) -> None:
    """A drain file in a directory that does not exist: an error naming the directory."""
    missing = tmp_path / "nowhere"
    with pytest.raises(drain.DirectoryMissing, match=re.escape(repr(str(missing)))):
        drain.write(missing / "drain", reason="test")


def test_drain_server_path_prefers_the_environment(monkeypatch: Any, settings: Any) -> None:
    """The gunicorn master reads the environment first, then the settings."""
    settings.ARENA_SCALE_DRAIN_FILE = "/from/settings"
    monkeypatch.setenv("ARENA_SCALE_DRAIN_FILE", "/from/env")
    assert drain.server_path() == "/from/env"
    monkeypatch.delenv("ARENA_SCALE_DRAIN_FILE")
    assert drain.server_path() == "/from/settings"


def test_drain_file_is_reached_only_through_its_owner() -> None:
    """No other module looks the path up, tests for the file, writes or removes it itself."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative in ALLOWED:
            continue
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if DIRECT.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
    # The pattern finds what it is meant to find (so the test can fail).
    owner = (SRC / "lifecycle" / "_drain.py").read_text("utf-8")
    assert DIRECT.search(owner)
    assert DIRECT.search('replica.drain_file.write_text("x")')
    assert DIRECT.search('env["ARENA_SCALE_DRAIN_FILE"] = path')
