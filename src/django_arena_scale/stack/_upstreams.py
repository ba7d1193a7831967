"""Pure helpers about nginx upstreams: ``down`` marks in the includes, passive-health state.

nginx open source has no API to take a server out of rotation.  A draining replica stops
listening instead, so nginx's next connection is refused and moves to the next server; after
``max_fails`` such failures nginx skips it for ``fail_timeout`` and logs that it did
(:func:`disabled_until` reads that from the error log).  The ``down`` flag plus a reload is
the manual alternative (``scale`` parks replicas that way); a reload closes idle client
keep-alive connections, so rolling restarts do not use it.
"""

from __future__ import annotations

import re
import time


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


#: nginx's error-log timestamp (local time, one-second resolution).
_LOG_TIME = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[\w+\]")


def disabled_until(log_text: str, address: str, fail_timeout: float) -> float | None:
    """Wall-clock time until which nginx skips ``address``, from its error log text.

    nginx logs ``upstream server temporarily disabled`` (level warn) when a server reached
    ``max_fails``; it is skipped for ``fail_timeout`` seconds after that failure.  Returns
    None when the log never says so for ``address``.  One second is added for the log's
    resolution.
    """
    marker = f'upstream: "http://{address}/'
    last: float | None = None
    for line in log_text.splitlines():
        if "upstream server temporarily disabled" not in line or marker not in line:
            continue
        match = _LOG_TIME.match(line)
        if match is None:
            continue
        stamp = time.mktime(time.strptime(match.group(1), "%Y/%m/%d %H:%M:%S"))
        last = stamp if last is None else max(last, stamp)
    return None if last is None else last + fail_timeout + 1.0


#: One access-log line of the generated ``arena`` log format: time, status, upstream list.
_ACCESS = re.compile(
    r"\[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] \"[^\"]*\" (?P<status>\d{3}) "
    r".* upstream=(?P<upstreams>.*?) urt="
)


def served_since(access_log: str, address: str, since: float) -> bool:
    """Whether nginx's access log shows ``address`` answering a request at or after ``since``.

    The last address of ``$upstream_addr`` is the server that answered (earlier ones were
    tried and failed); a 502 or 504 is nginx's own answer, not the server's.
    """
    for line in reversed(access_log.splitlines()):
        match = _ACCESS.search(line)
        if match is None:
            continue
        stamp = time.mktime(time.strptime(match.group("time"), "%d/%b/%Y:%H:%M:%S %z"))
        if stamp < since:
            return False
        answered_by = match.group("upstreams").split(",")[-1].strip()
        if answered_by == address and match.group("status") not in ("502", "504"):
            return True
    return False


def established_connections(port: int, tables: tuple[str, ...] = ("tcp", "tcp6")) -> int:
    """How many ESTABLISHED TCP connections have local ``port`` (Linux ``/proc/net``).

    A draining replica waits for nginx to close its idle upstream connections itself; this
    says when none is left.  0 where ``/proc/net`` cannot be read.
    """
    count = 0
    for table in tables:
        try:
            with open(f"/proc/net/{table}") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "01":
                        local_port = fields[1].rsplit(":", 1)[-1]
                        if int(local_port, 16) == port:
                            count += 1
        except OSError:
            continue
    return count
