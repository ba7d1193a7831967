"""Write rendered files atomically: all of them or none, never over a file the user changed.

1. :func:`plan` compares every rendered file with the disk: ``create``, ``update`` (differs;
   only with ``force``), ``unchanged``, ``keep`` (a ``KEEP_IF_EXISTS`` file the user owns) or
   ``conflict`` (differs, no ``force``: nothing is written, the files are named).
2. :func:`write` renders the whole tree into a temporary directory on the same filesystem
   (inside the output directory, or beside it when it does not exist yet), validates that
   tree, then moves the files in with ``rename``.  A new output directory appears in one
   rename.  Into an existing one, each file is replaced atomically and the old one is kept as
   a hard link until the end, so an error rolls every file back; SIGINT/SIGTERM are held for
   the few renames of that phase.  Any failure (or Ctrl-C) before it leaves the directory as
   it was.

Nothing is written outside the output directory: a symbolic link below it (file or
directory) and a relative path with '.' or '..' parts are refused before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Plan", "WriteError", "check", "check_output", "plan", "write"]

Validator = Callable[[Path], None]
_TMP_PREFIX = ".generate_lb_config-"


class WriteError(Exception):
    """The output directory cannot be written as asked (nothing was changed)."""


@dataclass
class Plan:
    """What writing a render would do to ``output``, per relative path."""

    output: Path
    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        counts = " ".join(
            f"{name}={len(getattr(self, name))}"
            for name in ("create", "update", "unchanged", "keep", "conflict")
        )
        return f"<Plan {str(self.output)!r} {counts}>"

    @property
    def to_write(self) -> list[str]:
        return sorted(self.create + self.update)

    @property
    def stale(self) -> list[str]:
        """Files whose content on disk is not the rendered one (what ``--check`` lists)."""
        return sorted(self.create + self.update + self.conflict)

    def lines(self, verb: str = "would") -> list[str]:
        labels = (
            ("create", "create"),
            ("update", "overwrite"),
            ("conflict", "refuse to overwrite (differs; use --force)"),
            ("keep", "keep (exists; use --force to replace)"),
            ("unchanged", "leave unchanged"),
        )
        out = []
        for attr, label in labels:
            out += [f"{verb} {label}: {path}" for path in getattr(self, attr)]
        return out


def check_output(output: Path) -> Path:
    """The nearest existing ancestor of ``output`` (itself if it exists); raise if unusable."""
    probe = output
    while True:
        if probe.exists() or probe.is_symlink():
            break
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe == output and not output.is_dir():
        raise WriteError(f"--output {str(output)!r} must be a directory; it is a file.")
    if probe != output and not probe.is_dir():
        raise WriteError(
            f"--output {str(output)!r} cannot be created: {str(probe)!r} is a file, "
            "not a directory."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise WriteError(
            f"--output {str(output)!r} must be writable; {str(probe)!r} is not writable "
            "by this user."
        )
    return probe


def plan(
    files: Mapping[str, str],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    keep_if_exists: frozenset[str] = frozenset(),
) -> Plan:
    """Compare ``files`` with what ``output`` holds; nothing is written."""
    out = Path(output)
    result = Plan(output=out)
    if out.exists() and not out.is_dir():
        raise WriteError(f"--output {str(out)!r} must be a directory; it is a file.")
    exists = out.is_dir()
    real_out = out.resolve() if exists else None
    for rel in sorted(files):
        target = out / rel
        _check_rel(out, rel)
        if exists:
            _check_parents(out, rel)
            if real_out is not None and not target.resolve().is_relative_to(real_out):
                raise WriteError(
                    f"{str(target)!r} resolves outside --output {str(out)!r}; refusing to write it."
                )
        if not exists or not (target.exists() or target.is_symlink()):
            result.create.append(rel)
            continue
        if target.is_dir() or target.is_symlink():
            raise WriteError(
                f"{str(target)!r} must be a regular file to be written; it is a "
                f"{'directory' if target.is_dir() else 'symbolic link'}."
            )
        if target.read_bytes() == files[rel].encode():
            result.unchanged.append(rel)
        elif rel in keep_if_exists and not force:
            result.keep.append(rel)
        elif force:
            result.update.append(rel)
        else:
            result.conflict.append(rel)
    return result


def _check_rel(out: Path, rel: str) -> None:
    """``rel`` must name a path inside ``out``: relative, without '.' or '..' parts."""
    parts = rel.split("/")
    if not rel or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise WriteError(
            f"{rel!r} must be a relative path inside --output {str(out)!r} "
            "(no leading '/', no '.' or '..' parts)."
        )


def _refuse_symlink(path: Path, rel: str) -> None:
    if path.is_symlink():
        raise WriteError(
            f"{str(path)!r} is a symbolic link; refusing to write {rel!r} through it "
            "(files are only written inside --output; replace the link with a directory)."
        )


def _check_parents(out: Path, rel: str) -> None:
    _check_rel(out, rel)
    parent = out
    for part in Path(rel).parts[:-1]:
        parent = parent / part
        _refuse_symlink(parent, rel)
        if parent.exists() and not parent.is_dir():
            raise WriteError(f"{str(parent)!r} must be a directory to hold {rel!r}; it is a file.")
        if not parent.exists():
            return
        if not os.access(parent, os.W_OK | os.X_OK):
            raise WriteError(f"{str(parent)!r} must be writable to hold {rel!r}.")


def check(
    files: Mapping[str, str],
    output: str | os.PathLike[str],
    *,
    keep_if_exists: frozenset[str] = frozenset(),
) -> list[str]:
    """Relative paths that are missing or differ from the render (kept files excepted)."""
    return plan(files, output, force=False, keep_if_exists=keep_if_exists).stale


def write(
    files: Mapping[str, str],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    keep_if_exists: frozenset[str] = frozenset(),
    executable: frozenset[str] = frozenset(),
    validate: Validator | None = None,
) -> Plan:
    """Write ``files`` under ``output`` atomically (see the module docstring)."""
    out = Path(os.path.abspath(output))
    anchor = check_output(out)
    result = plan(files, out, force=force, keep_if_exists=keep_if_exists)
    if result.conflict:
        names = ", ".join(repr(str(out / rel)) for rel in result.conflict)
        raise WriteError(
            f"Refusing to overwrite {names}: the content differs from the render "
            "(pass --force to overwrite, or move them away)."
        )
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=anchor))
    except OSError as exc:
        raise WriteError(f"--output {str(out)!r} must be writable: {exc}.") from exc
    try:
        tree = tmp / "new"
        _materialize(tree, files, executable)
        if validate is not None:
            validate(tree)
        if anchor == out:
            if result.to_write:
                with _signals_held():
                    _swap_in(tree, out, tmp / "old", result.to_write)
        else:
            with _signals_held():
                _rename_new_dir(tree, out, anchor)
    except OSError as exc:
        raise WriteError(f"Writing {str(out)!r} failed, nothing was changed: {exc}.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _materialize(tree: Path, files: Mapping[str, str], executable: frozenset[str]) -> None:
    umask = _umask()
    for rel, content in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode())
        path.chmod((0o777 if rel in executable else 0o666) & ~umask)
    for directory in sorted({p for p in tree.rglob("*") if p.is_dir()} | {tree}):
        directory.chmod(0o777 & ~umask)


def _umask() -> int:
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_umask_lock = threading.Lock()


def _rename_new_dir(tree: Path, out: Path, anchor: Path) -> None:
    created: list[Path] = []
    try:
        for parent in reversed(out.parents):
            if anchor in parent.parents and not parent.exists():
                parent.mkdir()
                created.append(parent)
        os.rename(tree, out)
    except BaseException:
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _swap_in(tree: Path, out: Path, backup: Path, rels: list[str]) -> None:
    """Replace each file atomically; on any error put every touched file back."""
    done: list[tuple[Path, Path | None]] = []  # (target, hard link to the old file or None)
    created_dirs: list[Path] = []
    try:
        for rel in rels:
            target = out / rel
            for parent in reversed(Path(rel).parents):
                directory = out / parent
                if not directory.exists():
                    directory.mkdir()
                    created_dirs.append(directory)
            for parent in reversed(Path(rel).parents[:-1]):  # [-1] is '.', --output itself
                # Checked by plan(); again here in case a directory was swapped for a link since.
                _refuse_symlink(out / parent, rel)
            _refuse_symlink(target, rel)
            old: Path | None = None
            if target.exists():
                old = backup / rel
                old.parent.mkdir(parents=True, exist_ok=True)
                os.link(target, old)
            os.replace(tree / rel, target)
            done.append((target, old))
    except BaseException:
        for target, old in reversed(done):
            with contextlib.suppress(OSError):
                if old is None:
                    target.unlink()
                else:
                    os.replace(old, target)
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM while files are renamed, so Ctrl-C cannot leave half a write."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
