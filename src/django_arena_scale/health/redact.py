"""Remove credentials from URLs, DSNs and any text shown by ``/status/`` (pure Python)."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user:password@host  and  scheme://:password@host  (redis URLs often have no user)
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
# libpq keyword DSNs and query strings: password=..., token=..., secret=..., key=...
_KEYWORDS = re.compile(
    r"(?P<key>\b[\w\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key)"
    r"[\w\-]*\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every URL password and ``password=``-style value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEYWORDS.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_all(value: Any) -> Any:
    """Apply :func:`redact` to every string (keys included) inside nested dicts and lists."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_all(k): redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value
