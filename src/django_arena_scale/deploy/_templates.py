"""Static text the renderers fill in: package files under ``templates/``.

A template is read once with :mod:`importlib.resources` and filled with :func:`fill`:
``@NAME@`` is replaced by a value, and a line holding only ``# @NAME@`` (a shell comment) or
``<!-- @NAME@ -->`` (a Markdown comment) by a list of lines at the same indentation, possibly
none.  Both kinds of line are comments, so the template itself stays valid for its tools
(bash -n, shellcheck).  Every placeholder must get a value and every value must be used,
so a template and its renderer cannot drift apart silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources

__all__ = ["fill", "read_template"]

_PLACEHOLDER = re.compile(
    r"^(?P<indent>[ \t]*)(?:# @(?P<block>[A-Z][A-Z0-9_]*)@|<!-- @(?P<html>[A-Z][A-Z0-9_]*)@ -->)\n"
    r"|@(?P<name>[A-Z][A-Z0-9_]*)@",
    re.M,
)


def read_template(name: str) -> str:
    """The text of ``templates/<name>`` shipped in this package."""
    return (
        resources.files(__package__)
        .joinpath("templates")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )


def fill(
    template: str,
    values: Mapping[str, str],
    blocks: Mapping[str, Sequence[str]] = {},
) -> str:
    """``template`` with each ``# @NAME@`` line and each ``@NAME@`` replaced (see module)."""
    used: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match["block"] or match["html"] or match["name"]
        used.add(name)
        if match["name"] is None:
            if name not in blocks:
                raise KeyError(f"template line placeholder @{name}@ has no lines")
            return "".join(f"{match['indent']}{line}\n" for line in blocks[name])
        if name not in values:
            raise KeyError(f"template placeholder @{name}@ has no value")
        return values[name]

    # One pass: a value holding '@' is never read as a placeholder.
    text = _PLACEHOLDER.sub(replace, template)
    unused = (set(values) | set(blocks)) - used
    if unused:
        raise KeyError(f"the template has no placeholder for {sorted(unused)}")
    return text
