"""manage.py drain on|off|status."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("drain", *args, stdout=out)
    return out.getvalue()


def test_drain_on_writes_file(tmp_path: Path, settings: object) -> None:
    """``drain on`` creates ARENA_SCALE_DRAIN_FILE."""
    path = tmp_path / "drain"
    settings.ARENA_SCALE_DRAIN_FILE = str(path)  # type: ignore[attr-defined]
    run("on")
    assert json.loads(path.read_text())["reason"] == "manage.py drain on"


def test_drain_on_leaves_no_temp_file(tmp_path: Path, settings: object) -> None:
    """The atomic write leaves only the drain file in the directory."""
    settings.ARENA_SCALE_DRAIN_FILE = str(tmp_path / "drain")  # type: ignore[attr-defined]
    run("on")
    assert os.listdir(tmp_path) == ["drain"]


def test_drain_off_removes_file(tmp_path: Path, settings: object) -> None:
    """``drain off`` removes the file."""
    path = tmp_path / "drain"
    path.write_text("x")
    settings.ARENA_SCALE_DRAIN_FILE = str(path)  # type: ignore[attr-defined]
    run("off")
    assert not path.exists()


def test_drain_off_when_absent_is_fine(tmp_path: Path, settings: object) -> None:
    """``drain off`` twice is not an error."""
    settings.ARENA_SCALE_DRAIN_FILE = str(tmp_path / "drain")  # type: ignore[attr-defined]
    assert "absent" in run("off")


def test_drain_status_reports_draining(tmp_path: Path, settings: object) -> None:
    """``status`` prints draining while the file exists."""
    path = tmp_path / "drain"
    path.write_text("x")
    settings.ARENA_SCALE_DRAIN_FILE = str(path)  # type: ignore[attr-defined]
    assert json.loads(run("status", "--json"))["state"] == "draining"


def test_drain_status_reports_serving(tmp_path: Path, settings: object) -> None:
    """``status`` prints serving when the file is absent."""
    settings.ARENA_SCALE_DRAIN_FILE = str(tmp_path / "drain")  # type: ignore[attr-defined]
    assert run("status").startswith("serving")


def test_drain_status_without_setting_exits_zero(settings: object) -> None:
    """``status`` without a drain file configured still succeeds."""
    settings.ARENA_SCALE_DRAIN_FILE = None  # type: ignore[attr-defined]
    assert "not set" in run("status")


def test_drain_on_without_setting_names_it(settings: object) -> None:
    """``on`` without a drain file names the missing setting."""
    settings.ARENA_SCALE_DRAIN_FILE = None  # type: ignore[attr-defined]
    with pytest.raises(CommandError, match="ARENA_SCALE_DRAIN_FILE"):
        run("on")


def test_drain_file_option_overrides_setting(tmp_path: Path, settings: object) -> None:
    """``--file`` wins over the setting."""
    settings.ARENA_SCALE_DRAIN_FILE = str(tmp_path / "a")  # type: ignore[attr-defined]
    run("on", "--file", str(tmp_path / "b"))
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_drain_on_missing_directory_names_it(tmp_path: Path) -> None:
    """A drain file in a missing directory is a clear error."""
    with pytest.raises(CommandError, match="does not exist"):
        run("on", "--file", str(tmp_path / "nope" / "drain"))


def test_drain_file_makes_lifecycle_drain(tmp_path: Path) -> None:
    """A lifecycle watching the file sees ``drain on`` at once and ``drain off`` too."""
    from django_arena_scale.lifecycle._state import Lifecycle, State

    path = str(tmp_path / "drain")
    lc = Lifecycle(drain_file=path)
    lc.mark_ready()
    run("on", "--file", path)
    during = lc.state
    run("off", "--file", path)
    assert (during, lc.state) == (State.DRAINING, State.READY)
