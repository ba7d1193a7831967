"""Serialise renderer data to YAML with PyYAML's safe dumper.

Keys keep their insertion order; sequences are indented under their key; a string is plain
only when it is a word or path (letters, digits, ``_./-``) that YAML reads back as the same
string, else double-quoted, so YAML 1.1 and 1.2 readers (PyYAML, Go's yaml in kubectl and
Docker Compose) read every value alike; a multi-line string is a ``|`` block when YAML allows
one (the server configs in a ConfigMap stay readable).  Floats
are refused: every number written is an integer, and a fractional value (``0.5`` CPUs) must
be the string its reader expects.

Two markers carry what plain data cannot say, for docker-compose.yml:

- :class:`Anchored` is a mapping written once with an anchor (``&app``); every other place
  that holds the same object writes an alias;
- :data:`MERGE` is the YAML merge key ``<<``: ``{MERGE: block, "networks": ...}`` is written
  ``<<: *app`` and read back (by PyYAML, Docker Compose) as the block's keys plus its own.

:class:`Flow` is a list written on one line (``["CMD", "python", "-c", ...]``).  Any other
object shared between two places is written twice, never as an alias.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["MERGE", "Anchored", "Flow", "dump_yaml", "resolve_merge"]


_STR = "tag:yaml.org,2002:str"
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")


class Anchored(dict[str, Any]):
    """A mapping written with the anchor ``name`` (then aliased wherever it appears again)."""

    def __init__(self, name: str, items: Mapping[str, Any]) -> None:
        super().__init__(items)
        self.anchor = name


class Flow(list[Any]):
    """A sequence written in flow style, on one line."""


class _MergeKey(str):
    __slots__ = ()


#: The YAML merge key ``<<`` (use it as a mapping key whose value is an :class:`Anchored`).
MERGE = _MergeKey("<<")


def resolve_merge(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` as a YAML reader sees it: the merged block's keys, then its own."""
    merged = dict(mapping.get(MERGE, {}))
    merged.update((k, v) for k, v in mapping.items() if k != MERGE)
    return merged


class _Dumper(yaml.SafeDumper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._anchor_names: dict[int, str] = {}

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent a sequence under its mapping key (PyYAML's default writes it flush).
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        # Double quotes where PyYAML would pick single ones: one quoting style (JSON's) in
        # every generated YAML file.
        style: str = super().choose_scalar_style()
        if style == "'":
            return '"'
        event = self.event
        if (
            style == ""
            and isinstance(event, yaml.ScalarEvent)
            and event.tag == _STR
            and not _PLAIN.fullmatch(event.value)
        ):
            return '"'
        return style

    def ignore_aliases(self, data: Any) -> bool:
        return not isinstance(data, Anchored)

    def generate_anchor(self, node: Any) -> str:
        return self._anchor_names.get(id(node)) or str(super().generate_anchor(node))


def _str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar(_STR, value, style=style)


def _float(dumper: _Dumper, value: float) -> yaml.ScalarNode:
    msg = f"Cannot write {value!r} to YAML; expected a string, an integer or a boolean."
    raise TypeError(msg)


def _merge_key(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:merge", "<<")


def _anchored(dumper: _Dumper, value: Anchored) -> yaml.MappingNode:
    node = dumper.represent_dict(value)
    dumper._anchor_names[id(node)] = value.anchor
    return node


def _flow(dumper: _Dumper, value: Flow) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(float, _float)
_Dumper.add_representer(_MergeKey, _merge_key)
_Dumper.add_representer(Anchored, _anchored)
_Dumper.add_representer(Flow, _flow)


def dump_yaml(*documents: Mapping[str, Any], explicit_start: bool = True) -> str:
    """Documents as one YAML string; each starts with ``---`` unless ``explicit_start`` is
    false (then pass one document)."""
    return yaml.dump_all(
        [dict(doc) for doc in documents],
        Dumper=_Dumper,
        explicit_start=explicit_start,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
