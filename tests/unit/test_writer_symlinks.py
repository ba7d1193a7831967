"""The writer never writes through a symbolic link below --output (all-or-nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from django_arena_scale.deploy._writer import WriteError, plan, write

FILES = {"a.txt": "A\n", "sub/b.txt": "B\n", "sub/deeper/c.txt": "C\n"}


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root (links not followed): file content, 'dir' or 'link -> target'."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"link -> {path.readlink()}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("link", ["sub", "sub/deeper"])
def test_symlinked_subdirectory_is_refused_and_nothing_is_written(
    tmp_path: Path, link: str, force: bool
) -> None:
    out = tmp_path / "out"
    write(FILES, out)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("victim\n")
    (outside / "c.txt").write_text("victim\n")
    (outside / "deeper").mkdir()
    (outside / "deeper" / "c.txt").write_text("victim\n")
    # Replace a generated directory with a link to a directory outside the output.
    target = out / link
    for child in sorted(target.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    target.rmdir()
    target.symlink_to(outside, target_is_directory=True)
    before_out, before_outside = tree(out), tree(outside)

    changed = {**FILES, "a.txt": "A2\n", "sub/b.txt": "B2\n", "sub/deeper/c.txt": "C2\n"}
    with pytest.raises(WriteError) as info:
        write(changed, out, force=force)
    message = str(info.value)
    assert repr(str(target)) in message
    assert "symbolic link" in message
    assert tree(outside) == before_outside
    assert tree(out) == before_out  # a.txt was not rewritten either: all or nothing


def test_dangling_symlinked_subdirectory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(WriteError, match=r"symbolic link"):
        write(FILES, out)
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in out.iterdir()) == ["sub"]


def test_plan_refuses_symlinked_subdirectory(tmp_path: Path) -> None:
    """--check and --dry-run use plan(): they must not read through the link either."""
    out = tmp_path / "out"
    write(FILES, out)
    (tmp_path / "outside").mkdir()
    for child in sorted((out / "sub").rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    (out / "sub").rmdir()
    (out / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(WriteError, match=r"'.*/out/sub' is a symbolic link"):
        plan(FILES, out)


@pytest.mark.parametrize("rel", ["../escape.txt", "/abs.txt", "sub/../../x.txt", "./a.txt"])
def test_paths_outside_the_output_are_refused(tmp_path: Path, rel: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WriteError, match="must be a relative path inside --output"):
        write({rel: "x\n"}, out)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_symlinked_output_directory_itself_is_still_allowed(tmp_path: Path) -> None:
    """--output may be a link the user made (e.g. deploy -> /srv/deploy); only links below it
    are refused."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    write(FILES, tmp_path / "out")
    assert (real / "sub" / "deeper" / "c.txt").read_text() == "C\n"
