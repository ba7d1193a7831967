"""The package's one redaction: credentials out of URLs, DSNs and any text it shows or logs.

Pure Python (no Django).  Every caller uses these functions and this one "looks secret"
pattern: ``/status/`` details, Redis URL errors and reprs, system check messages, the breaker
coordinator's repr, the generated configs' secret/non-secret split.

- :func:`redact_url` takes one URL (a scheme is optional: ``user:pw@host`` and ``redis//``
  typos are covered).  The userinfo is everything between the scheme and the **last** ``@``,
  so a password holding ``@``, ``:``, ``/``, spaces or percent-escapes is hidden whole.
  ``user:password`` keeps a short plain user name (``redis://alice:***@h``); any other
  userinfo is hidden whole (``redis://***@h``): without a colon it is usually a token or a
  password given alone (``redis://s3cret@h``), and ``TOKEN:`` or ``ghp_...:x-oauth-basic``
  carry the secret in the user part.  Query values whose name looks secret (``?password=``)
  are hidden.
- :func:`redact` takes free text: each URL in it (from its ``scheme://`` to the end of the
  line or the next URL) goes through :func:`redact_url`, then every ``name=value`` whose name
  looks secret (``password=``, ``token=``, ``api_key=``...) has its value hidden.
- :func:`redact_all` walks dicts and lists: strings are redacted, and a string value under a
  key that looks secret is hidden entirely.
- :func:`looks_secret` tells whether a *name* (environment variable, setting, query or dict
  key) names a credential.

When unsure, these hide more: the host is always shown, but text between a URL's scheme and
a later ``@`` on the same line is treated as userinfo.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "SECRET_NAME", "looks_secret", "redact", "redact_all", "redact_url"]

MASK = "***"

#: Words that make a name (``SECRET_KEY``, ``db_password``, ``api-token``, ``?key=``) secret.
_SECRET_WORDS = (
    r"passw(?:or)?d|pwd|secret|token|credential|private|api[_\-]?key|access[_\-]?key|dsn"
    r"|(?<![a-z])key(?![a-z])"
)
#: The one "looks secret" pattern, searched in a name (case-insensitive).
SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)

# A URL: optional scheme (``redis://``, ``redis:/``, or the ``redis//`` typo), then userinfo
# up to the last "@", then the rest (host, port, path).
_URL_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*(?::/*|/+))?(?P<userinfo>.*)@(?P<rest>[^@]*)$",
    re.DOTALL,
)
# A user name that is shown (empty, as in ``redis://:pw@h``, or a short plain name).
_PLAIN_USER = re.compile(r"[A-Za-z0-9._\-]{0,32}")
# Where a URL starts inside free text (``redis:/`` and the ``redis//`` typo too).
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*(?::/+|//)")
# A scheme-less ``user:password@host`` inside free text (a forgotten ``redis://``).
_BARE_USERINFO = re.compile(
    r"(?<![^\s(\[{<'\"=,;])(?P<user>[^\s:@/()\[\]{}<>'\"=,;]*):(?P<pw>[^\s@]*)@(?=[\w\[])"
)
# name=value where the name looks secret: libpq DSNs, query strings, log lines.
_SECRET_VALUE = re.compile(
    r"(?P<key>(?<![\w\-])[\w.\-]*(?:" + _SECRET_WORDS + r")[\w.\-]*\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,#'\"]+)",
    re.IGNORECASE,
)


def looks_secret(name: str) -> bool:
    """True when ``name`` (a variable, setting, query or dict key) names a credential."""
    return SECRET_NAME.search(name) is not None


def _mask_values(text: str) -> str:
    return _SECRET_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)


def _mask_text(text: str) -> str:
    """Secret values and scheme-less ``user:password@`` in text that holds no URL."""
    text = _BARE_USERINFO.sub(
        lambda m: (
            (f"{m['user']}:" if m["pw"] and _PLAIN_USER.fullmatch(m["user"]) else "") + f"{MASK}@"
        ),
        text,
    )
    return _mask_values(text)


def redact_url(url: str) -> str:
    """``url`` with its password (or lone token userinfo) and secret query values hidden."""
    match = _URL_USERINFO.match(url)
    if match is None:
        return _mask_values(url)
    user, colon, password = match["userinfo"].partition(":")
    # The user name is shown only beside a password, and only when it reads like a name:
    # ``TOKEN:`` or ``ghp_...:x-oauth-basic`` carry the secret in the user part.
    plain_user = colon and password and _PLAIN_USER.fullmatch(user)
    shown = f"{user}:{MASK}" if plain_user else MASK
    return f"{match['scheme'] or ''}{shown}@{_mask_values(match['rest'])}"


def redact(text: str) -> str:
    """``text`` with every URL's credentials and every secret ``name=value`` hidden."""
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        starts = [m.start() for m in _URL_START.finditer(line)]
        if not starts:
            pieces.append(_mask_text(line))
            continue
        pieces.append(_mask_text(line[: starts[0]]))
        for begin, end in zip(starts, [*starts[1:], len(line)], strict=True):
            segment = line[begin:end]
            body = segment.rstrip("\r\n")
            pieces.append(redact_url(body) + segment[len(body) :])
    return "".join(pieces)


def redact_all(value: Any) -> Any:
    """:func:`redact` every string inside nested dicts, lists and tuples (keys included);
    a string under a key that :func:`looks_secret` is hidden whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            redact_all(k): (
                MASK
                if isinstance(k, str) and isinstance(v, str) and v and looks_secret(k)
                else redact_all(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value
