"""Serialise renderer data to YAML with PyYAML's safe dumper (the Kubernetes manifests).

Keys keep their insertion order; sequences are indented under their key; a multi-line string
is written as a ``|`` block when YAML allows one (the server configs in a ConfigMap stay
readable), else it is double-quoted.  Floats are refused: every number in a manifest is an
integer, and a float (``0.5`` CPUs) must be written as the string Kubernetes expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["dump_yaml"]


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent a sequence under its mapping key (PyYAML's default writes it flush).
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        # Double quotes where PyYAML would pick single ones: one quoting style (JSON's) in
        # every generated YAML file.
        style: str = super().choose_scalar_style()
        return '"' if style == "'" else style

    def ignore_aliases(self, data: Any) -> bool:
        # A label mapping used twice is written twice: no &id001 anchors in manifests.
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    msg = f"Cannot write {value!r} to YAML; expected a string, an integer or a boolean."
    raise TypeError(msg)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(float, _float)


def dump_yaml(*documents: Mapping[str, Any]) -> str:
    """Documents as one multi-document YAML string, each starting with ``---``."""
    return yaml.dump_all(
        [dict(doc) for doc in documents],
        Dumper=_Dumper,
        explicit_start=True,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
