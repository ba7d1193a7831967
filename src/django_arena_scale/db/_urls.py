"""Pure settings helper: ``DATABASES`` (primary plus read replicas) from URLs.

No Django import and no I/O, like :mod:`django_arena_scale.redis`: ``settings.py`` calls it
before Django is configured.  A bad URL raises ``ValueError`` naming the expected form, with
the password redacted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django_arena_scale._redact import redact_url

PRIMARY = "default"
ROUTER = "django_arena_scale.db.ReplicaRouter"
POSTGRES_ENGINE = "django.db.backends.postgresql"
#: The replicas' engine: Django's PostgreSQL backend, plus falling back to the primary when
#: the replica cannot be reached (a replica killed between two health checks).
REPLICA_ENGINE = "django_arena_scale.db.backends.postgresql"
SQLITE_ENGINE = "django.db.backends.sqlite3"
EXPECTED_FORM = (
    "postgres://USER:PASSWORD@HOST:PORT/NAME (also postgresql://; query parameters become "
    "OPTIONS, e.g. ?sslmode=require) or sqlite:///relative/path.db, sqlite:////absolute/path.db"
)
_POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}
#: libpq's lower bound: a smaller connect_timeout is read as 2 s.
MIN_CONNECT_TIMEOUT = 2


def _bad(url: str, reason: str) -> ValueError:
    return ValueError(f"database URL {redact_url(url)!r} {reason}; expected {EXPECTED_FORM}.")


def parse_database_url(url: str) -> dict[str, Any]:
    """One ``DATABASES`` entry from ``url``; ``ValueError`` (password redacted) if it is bad."""
    if not isinstance(url, str):
        raise TypeError(
            f"database URL must be a str, not {type(url).__name__}; expected {EXPECTED_FORM}."
        )
    url = url.strip()
    lowered = url.lower()
    if lowered.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        name = rest[3:] if rest.startswith("///") else rest.lstrip("/")
        if not name:
            raise _bad(url, "has no file path")
        return {"ENGINE": SQLITE_ENGINE, "NAME": unquote(name)}
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None:
        raise _bad(url, "has a host that cannot be parsed")
    scheme = parts.scheme.lower()
    if scheme not in _POSTGRES_SCHEMES:
        if not scheme or "://" not in url:
            raise _bad(url, "has no scheme")
        raise _bad(url, f"has the scheme {scheme!r} instead of postgres or sqlite")
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        raise _bad(url, "has '@' after the host (percent-encode / ? # @ in a password)")
    try:
        port = parts.port
    except ValueError:
        # Raised outside the handler: urllib's message quotes the netloc (the password).
        port = -1
    if port == -1:
        raise _bad(url, "has a port that cannot be parsed")
    if not parts.hostname:
        raise _bad(url, "has no host")
    name = unquote(parts.path.lstrip("/"))
    if not name or "/" in name:
        raise _bad(url, "has no database name (the path, e.g. /arena)")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key] = int(value) if key == "connect_timeout" and value.isdigit() else value
    return {
        "ENGINE": POSTGRES_ENGINE,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname,
        "PORT": str(port) if port else "",
        "OPTIONS": options,
    }


def _urls(value: str | Sequence[str] | None) -> list[str]:
    """Replica URLs from a list or one comma-separated string (percent-encode a comma)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"replica URLs must be str, not {type(item).__name__}; expected {EXPECTED_FORM}."
            )
        if item.strip():
            urls.append(item.strip())
    return urls


def _aliases_behind_pgbouncer(pgbouncer: bool | Sequence[str], aliases: list[str]) -> list[str]:
    if isinstance(pgbouncer, bool):
        return list(aliases) if pgbouncer else []
    unknown = [alias for alias in pgbouncer if alias not in aliases]
    if unknown:
        raise ValueError(
            f"pgbouncer names {unknown!r}, which are not among the aliases built {aliases!r}; "
            "expected True, False or a list of those aliases."
        )
    return list(pgbouncer)


#: Seconds a thread keeps its database connection.  Opening one per request (Django's 0) cost
#: more than the rest of a logged-in request, through PgBouncer too (bench/database.py and
#: bench/throughput.py); CONN_HEALTH_CHECKS replaces one that died.
DEFAULT_CONN_MAX_AGE = 60


def database_settings(
    primary_url: str | None,
    replica_urls: str | Sequence[str] | None = (),
    *,
    default: Mapping[str, Any] | None = None,
    conn_max_age: float | None = DEFAULT_CONN_MAX_AGE,
    conn_health_checks: bool = True,
    connect_timeout: int = MIN_CONNECT_TIMEOUT,
    pgbouncer: bool | Sequence[str] = False,
) -> dict[str, Any]:
    """Settings for ``globals().update(...)``: ``DATABASES`` and, with replicas, the router.

    ``primary_url`` becomes ``DATABASES['default']``; each of ``replica_urls`` (a list, or one
    comma-separated string) becomes ``replica_1``, ``replica_2``..., listed in
    ``ARENA_SCALE_READ_REPLICAS``, with ``DATABASE_ROUTERS`` set to :data:`ROUTER` and a
    ``TEST['MIRROR']`` of the primary.  Every PostgreSQL entry gets ``connect_timeout``
    (seconds, at least libpq's 2) so an outage fails fast, ``CONN_MAX_AGE`` (by default
    :data:`DEFAULT_CONN_MAX_AGE`: each thread keeps its connection) and ``CONN_HEALTH_CHECKS``
    (a kept connection that died is replaced before the request uses it).  ``pgbouncer``
    (True, or a list of aliases) says PgBouncer in
    transaction mode is in front: those entries get ``DISABLE_SERVER_SIDE_CURSORS = True`` and
    ``ARENA_SCALE_PGBOUNCER`` is set, which turns on the PgBouncer system checks.

    Without ``primary_url`` (None or blank), ``default`` (a whole ``DATABASES`` entry, e.g.
    SQLite) is the only database and replica URLs are refused.
    """
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int):
        raise ValueError(
            f"connect_timeout must be a whole number of seconds, not {connect_timeout!r}."
        )
    if connect_timeout < MIN_CONNECT_TIMEOUT:
        raise ValueError(
            f"connect_timeout must be >= {MIN_CONNECT_TIMEOUT} (libpq reads a smaller value as "
            f"{MIN_CONNECT_TIMEOUT}), not {connect_timeout!r}."
        )
    if conn_max_age is not None and (
        isinstance(conn_max_age, bool)
        or not isinstance(conn_max_age, (int, float))
        or conn_max_age < 0
    ):
        raise ValueError(
            f"conn_max_age must be None or a number of seconds >= 0, not {conn_max_age!r}."
        )
    replicas = _urls(replica_urls)
    if primary_url is None or (isinstance(primary_url, str) and not primary_url.strip()):
        if replicas:
            raise ValueError(
                "replica URLs were given without a primary URL; expected a primary "
                f"{EXPECTED_FORM} as well."
            )
        if default is None:
            raise ValueError(f"no primary URL and no default entry; expected {EXPECTED_FORM}.")
        return {"DATABASES": {PRIMARY: dict(default)}}

    entries: dict[str, dict[str, Any]] = {PRIMARY: parse_database_url(primary_url)}
    for index, url in enumerate(replicas, start=1):
        entry = parse_database_url(url)
        if entry["ENGINE"] != POSTGRES_ENGINE:
            raise _bad(url, "is a read replica but not PostgreSQL")
        entry["ENGINE"] = REPLICA_ENGINE
        entry["TEST"] = {"MIRROR": PRIMARY}
        entries[f"replica_{index}"] = entry
    behind = _aliases_behind_pgbouncer(pgbouncer, list(entries))
    for alias, entry in entries.items():
        if entry["ENGINE"] == SQLITE_ENGINE:
            continue
        entry["OPTIONS"].setdefault("connect_timeout", connect_timeout)
        entry["CONN_MAX_AGE"] = conn_max_age
        entry["CONN_HEALTH_CHECKS"] = conn_health_checks
        if alias in behind:
            entry["DISABLE_SERVER_SIDE_CURSORS"] = True
    result: dict[str, Any] = {"DATABASES": entries}
    replica_aliases = [alias for alias in entries if alias != PRIMARY]
    if replica_aliases:
        result["DATABASE_ROUTERS"] = [ROUTER]
        result["ARENA_SCALE_READ_REPLICAS"] = replica_aliases
    if behind:
        result["ARENA_SCALE_PGBOUNCER"] = True if behind == list(entries) else behind
    return result
