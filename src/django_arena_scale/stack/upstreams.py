"""Pure edits of nginx upstream includes: mark one server ``down`` or bring it back.

nginx open source has no API to take a server out of rotation; the documented way is the
``down`` flag plus a reload, which lets in-flight requests on old workers finish.
"""

from __future__ import annotations

import re


def _server_line(address: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<head>\s*server\s+{re.escape(address)}(?=[\s;])[^;]*?)(?P<down>\s+down)?\s*;",
        re.MULTILINE,
    )


def set_down(text: str, address: str, down: bool) -> str:
    """Return ``text`` with the ``server ADDRESS ...;`` line marked down (or not).

    Raises ``LookupError`` if no line serves ``address``.
    """
    pattern = _server_line(address)
    if not pattern.search(text):
        msg = f"No 'server {address}' line in the upstream include; expected one per replica."
        raise LookupError(msg)

    def repl(match: re.Match[str]) -> str:
        return match.group("head") + (" down;" if down else ";")

    return pattern.sub(repl, text)


def is_down(text: str, address: str) -> bool:
    match = _server_line(address).search(text)
    return bool(match and match.group("down"))
