"""The atomic writer: all files or none, never over a changed file without force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from django_arena_scale.deploy import _writer as writer
from django_arena_scale.deploy._writer import WriteError, check, plan, write

FILES = {"a.txt": "A\n", "sub/b.txt": "B\n", "sub/deeper/c.txt": "C\n"}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under root with its content (None for dirs) and mode."""
    out: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(root.rglob("*")):
        data = None if path.is_dir() else path.read_bytes()
        out[str(path.relative_to(root))] = (data, path.stat().st_mode)
    return out


def test_write_creates_new_directory(tmp_path: Path) -> None:
    """A missing output directory is created with every file."""
    write(FILES, tmp_path / "out")
    assert check(FILES, tmp_path / "out") == []


def test_write_creates_missing_parents(tmp_path: Path) -> None:
    """Intermediate directories of --output are created too."""
    write(FILES, tmp_path / "x" / "y" / "out")
    assert (tmp_path / "x" / "y" / "out" / "sub" / "deeper" / "c.txt").read_text() == "C\n"


def test_write_leaves_no_temporary_directory(tmp_path: Path) -> None:
    """The staging directory is removed after a write."""
    out = tmp_path / "out"
    write(FILES, out)
    write({**FILES, "a.txt": "A2\n"}, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not [p for p in out.iterdir() if p.name.startswith(".generate_lb_config")]


def test_write_refuses_to_overwrite_changed_file(tmp_path: Path) -> None:
    """Without force, a file with different content is named and nothing is written."""
    out = tmp_path / "out"
    write(FILES, out)
    (out / "a.txt").write_text("mine\n")
    before = snapshot(out)
    with pytest.raises(WriteError, match=r"Refusing to overwrite .*a\.txt"):
        write({**FILES, "sub/new.txt": "N\n"}, out)
    assert snapshot(out) == before


def test_write_force_overwrites(tmp_path: Path) -> None:
    """With force, a changed file is replaced by the render."""
    out = tmp_path / "out"
    write(FILES, out)
    (out / "a.txt").write_text("mine\n")
    write(FILES, out, force=True)
    assert (out / "a.txt").read_text() == "A\n"


def test_write_keeps_user_owned_file(tmp_path: Path) -> None:
    """A KEEP_IF_EXISTS file that exists is kept unless force."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "Dockerfile").write_text("FROM mine\n")
    result = write({"Dockerfile": "FROM ours\n"}, out, keep_if_exists=frozenset({"Dockerfile"}))
    assert (result.keep, (out / "Dockerfile").read_text()) == (["Dockerfile"], "FROM mine\n")


def test_write_keep_if_exists_replaced_with_force(tmp_path: Path) -> None:
    """--force replaces even a user-owned file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "Dockerfile").write_text("FROM mine\n")
    write({"Dockerfile": "FROM ours\n"}, out, force=True, keep_if_exists=frozenset({"Dockerfile"}))
    assert (out / "Dockerfile").read_text() == "FROM ours\n"


def test_write_leaves_unrelated_files_alone(tmp_path: Path) -> None:
    """Files the render does not produce (e.g. .env) are untouched."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".env").write_text("SECRET_KEY=x\n")
    write(FILES, out)
    assert (out / ".env").read_text() == "SECRET_KEY=x\n"


def test_write_marks_executable_files(tmp_path: Path) -> None:
    """EXECUTABLE files get the x bits; others do not."""
    out = tmp_path / "out"
    write({"deploy.sh": "#!/bin/sh\n", "a.txt": "A\n"}, out, executable=frozenset({"deploy.sh"}))
    modes = [(out / name).stat().st_mode & 0o111 for name in ("deploy.sh", "a.txt")]
    assert modes == [0o111 & ~_umask(), 0]


def test_write_validation_failure_leaves_directory_unchanged(tmp_path: Path) -> None:
    """A validator error means nothing is written."""
    out = tmp_path / "out"
    write(FILES, out)
    before = snapshot(out)

    def reject(tree: Path) -> None:
        raise ValueError("bad render")

    with pytest.raises(ValueError, match="bad render"):
        write({**FILES, "a.txt": "A2\n", "new.txt": "N\n"}, out, force=True, validate=reject)
    assert snapshot(out) == before


def test_write_ctrl_c_before_commit_leaves_directory_unchanged(tmp_path: Path) -> None:
    """KeyboardInterrupt while staging leaves the directory exactly as it was."""
    out = tmp_path / "out"
    write(FILES, out)
    before = snapshot(out)

    def interrupt(tree: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write({**FILES, "a.txt": "A2\n"}, out, force=True, validate=interrupt)
    assert snapshot(out) == before


def test_write_ctrl_c_before_commit_creates_no_new_directory(tmp_path: Path) -> None:
    """An interrupted first write leaves no output directory behind."""

    def interrupt(tree: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(FILES, tmp_path / "a" / "out", validate=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_write_error_during_commit_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename failing half-way puts back every file already replaced."""
    out = tmp_path / "out"
    write(FILES, out)
    before = snapshot(out)
    real_replace = os.replace
    calls = {"n": 0}

    def flaky(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", flaky)
    new = {"a.txt": "A2\n", "sub/b.txt": "B2\n", "sub/new/x.txt": "X\n", "sub/deeper/c.txt": "C2"}
    with pytest.raises(WriteError, match="nothing was changed"):
        write(new, out, force=True)
    monkeypatch.setattr(writer.os, "replace", real_replace)
    assert snapshot(out) == before


def test_write_output_is_a_file(tmp_path: Path) -> None:
    """--output naming a file is an error and the file is untouched."""
    target = tmp_path / "out"
    target.write_text("data\n")
    with pytest.raises(WriteError, match="must be a directory; it is a file"):
        write(FILES, target)
    assert target.read_text() == "data\n"


def test_write_output_below_a_file(tmp_path: Path) -> None:
    """--output under a file cannot be created."""
    (tmp_path / "f").write_text("data\n")
    with pytest.raises(WriteError, match="is a file, not a directory"):
        write(FILES, tmp_path / "f" / "out")


def test_write_rendered_path_is_a_directory(tmp_path: Path) -> None:
    """A directory where a file goes is reported, nothing written."""
    out = tmp_path / "out"
    (out / "a.txt").mkdir(parents=True)
    with pytest.raises(WriteError, match="must be a regular file"):
        write(FILES, out)
    assert not (out / "sub").exists()


def test_plan_lists_each_kind(tmp_path: Path) -> None:
    """plan() sorts files into create / update / unchanged / conflict."""
    out = tmp_path / "out"
    write({"same": "1", "changed": "1"}, out)
    result = plan({"same": "1", "changed": "2", "new": "3"}, out)
    assert (result.create, result.conflict, result.unchanged) == (["new"], ["changed"], ["same"])


def test_check_lists_stale_files(tmp_path: Path) -> None:
    """check() names missing and different files, not the unchanged ones."""
    out = tmp_path / "out"
    write({"same": "1", "changed": "1"}, out)
    assert check({"same": "1", "changed": "2", "new": "3"}, out) == ["changed", "new"]
