"""Database checks: PgBouncer in transaction mode, and read replicas (plain ``manage.py check``).

The PgBouncer checks run for the aliases ``ARENA_SCALE_PGBOUNCER`` names (True: every alias;
``database_settings(..., pgbouncer=...)`` sets it): in transaction mode each transaction may
run on a different server connection, so nothing may outlive a transaction on the server side.
The messages come first, as module-level definitions: a constant when the text is fixed, a
function of the values it names otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import Error, Warning, register

from django_arena_scale._conf import PREFIX, SETTINGS, conf
from django_arena_scale.checks._base import TAG, Messages, mapping, safe, setting

ROUTER = "django_arena_scale.db.ReplicaRouter"
RYW_MIDDLEWARE = "django_arena_scale.db.ReadYourWritesMiddleware"
# The paths a project may write (the package exports both classes).
_ROUTERS = (ROUTER,)
_RYW_MIDDLEWARE = (RYW_MIDDLEWARE,)
_PGBOUNCER = f"{PREFIX}PGBOUNCER"
_REPLICAS = f"{PREFIX}READ_REPLICAS"

# --- messages -----------------------------------------------------------------------------------


def E040(alias: str, value: Any) -> Error:
    return Error(
        f"DATABASES[{alias!r}] is behind PgBouncer in transaction mode ({_PGBOUNCER}) but "
        f"DISABLE_SERVER_SIDE_CURSORS is {value!r}: QuerySet.iterator() opens a server-side "
        f'cursor that the next transaction may not find on its server connection ("cursor '
        f'... does not exist").',
        hint=f"Add 'DISABLE_SERVER_SIDE_CURSORS': True to DATABASES[{alias!r}] "
        f"(database_settings(..., pgbouncer=True) does).",
        obj=f"DATABASES[{alias!r}]",
        id="django_arena_scale.E040",
    )


def E041(alias: str, value: Any) -> Error:
    return Error(
        f"DATABASES[{alias!r}] is behind PgBouncer in transaction mode ({_PGBOUNCER}) but its "
        f"OPTIONS set prepare_threshold={value!r}: psycopg then prepares statements on one "
        f'server connection and executes them on another ("prepared statement ... does not '
        f'exist").',
        hint=f"Remove 'prepare_threshold' from DATABASES[{alias!r}]['OPTIONS'] (Django's "
        f"default, None, never prepares).",
        obj=f"DATABASES[{alias!r}]",
        id="django_arena_scale.E041",
    )


def E042(alias: str, option: str) -> Error:
    return Error(
        f"DATABASES[{alias!r}] is behind PgBouncer in transaction mode ({_PGBOUNCER}) but its "
        f"OPTIONS set {option!r}, session state that PgBouncer does not carry from one "
        f"transaction to the next (assume_role runs SET ROLE once per connection; an "
        f"'options' startup parameter is refused by PgBouncer or lost).",
        hint=f"Remove {option!r} from DATABASES[{alias!r}]['OPTIONS']: set it on the database "
        f"role instead (ALTER ROLE ... SET ...), or connect to PostgreSQL directly.",
        obj=f"DATABASES[{alias!r}]",
        id="django_arena_scale.E042",
    )


def W041(alias: str, max_age: Any) -> Warning:
    return Warning(
        f"DATABASES[{alias!r}] is behind PgBouncer ({_PGBOUNCER}) and keeps its connections "
        f"(CONN_MAX_AGE={max_age!r}) without CONN_HEALTH_CHECKS: after PgBouncer restarts, "
        f"each worker's next request fails on its dead connection.",
        hint=f"Add 'CONN_HEALTH_CHECKS': True to DATABASES[{alias!r}] (connections to PgBouncer "
        f"are cheap: CONN_MAX_AGE = 0 is fine too).",
        obj=f"DATABASES[{alias!r}]",
        id="django_arena_scale.W041",
    )


def E043(name: str, alias: str) -> Error:
    return Error(
        f"{name} names the alias {alias!r}, which DATABASES does not define.",
        hint=f"Use aliases of DATABASES ({', '.join(map(repr, mapping('DATABASES')))}); "
        f"database_settings() sets {name} for the aliases it builds.",
        obj=name,
        id="django_arena_scale.E043",
    )


E044 = Error(
    f"{_REPLICAS} lists 'default', the primary: writes and reads would share it.",
    hint=f"List only the replica aliases in {_REPLICAS}, e.g. ['replica_1'].",
    obj=_REPLICAS,
    id="django_arena_scale.E044",
)

W042 = Warning(
    f"{_REPLICAS} lists read replicas but DATABASE_ROUTERS does not contain {ROUTER!r}: "
    f"no read goes to them.",
    hint=f"Add DATABASE_ROUTERS = [{ROUTER!r}] (database_settings() returns it).",
    obj="DATABASE_ROUTERS",
    id="django_arena_scale.W042",
)

W043 = Warning(
    f"{_REPLICAS} lists read replicas but MIDDLEWARE does not contain {RYW_MIDDLEWARE!r}: a "
    f"client that wrote may read its own write back from a replica that has not replayed it "
    f"yet (read-your-writes then holds only within the request that wrote).",
    hint=f"Add {RYW_MIDDLEWARE!r} to MIDDLEWARE right after the SessionMiddleware.",
    obj="MIDDLEWARE",
    id="django_arena_scale.W043",
)

# --- which aliases ------------------------------------------------------------------------------


def _names(name: str) -> bool | list[str]:
    value = conf.raw(name)
    if not SETTINGS[name].accepts(value):
        return []  # E002 reports the type
    if isinstance(value, bool):
        return value
    return [item for item in value if isinstance(item, str)]


def pgbouncer_aliases() -> list[str]:
    """The DATABASES aliases ARENA_SCALE_PGBOUNCER says are behind PgBouncer."""
    declared = _names("PGBOUNCER")
    databases = mapping("DATABASES")
    if declared is True:
        return list(databases)
    if declared is False:
        return []
    return [alias for alias in declared if alias in databases]


def _entries() -> list[tuple[str, Mapping[str, Any]]]:
    databases = mapping("DATABASES")
    return [
        (alias, entry)
        for alias in pgbouncer_aliases()
        if isinstance(entry := databases.get(alias), Mapping)
    ]


def _options(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    options = entry.get("OPTIONS", {})
    return options if isinstance(options, Mapping) else {}


# --- PgBouncer ----------------------------------------------------------------------------------


@register(TAG)
@safe
def check_pgbouncer_server_side_cursors(app_configs: Any = None, **kwargs: Any) -> Messages:
    return [
        E040(alias, entry.get("DISABLE_SERVER_SIDE_CURSORS", False))
        for alias, entry in _entries()
        if entry.get("DISABLE_SERVER_SIDE_CURSORS", False) is not True
    ]


@register(TAG)
@safe
def check_pgbouncer_prepared_statements(app_configs: Any = None, **kwargs: Any) -> Messages:
    return [
        E041(alias, _options(entry)["prepare_threshold"])
        for alias, entry in _entries()
        if _options(entry).get("prepare_threshold") is not None
    ]


@register(TAG)
@safe
def check_pgbouncer_session_state(app_configs: Any = None, **kwargs: Any) -> Messages:
    return [
        E042(alias, option)
        for alias, entry in _entries()
        for option in ("assume_role", "options")
        if _options(entry).get(option)
    ]


@register(TAG)
@safe
def check_pgbouncer_connection_reuse(app_configs: Any = None, **kwargs: Any) -> Messages:
    messages: Messages = []
    for alias, entry in _entries():
        max_age = entry.get("CONN_MAX_AGE", 0)
        persistent = max_age is None or (
            isinstance(max_age, (int, float)) and not isinstance(max_age, bool) and max_age > 0
        )
        if persistent and not entry.get("CONN_HEALTH_CHECKS", False):
            messages.append(W041(alias, max_age))
    return messages


# --- read replicas ------------------------------------------------------------------------------


@register(TAG)
@safe
def check_database_aliases(app_configs: Any = None, **kwargs: Any) -> Messages:
    databases = mapping("DATABASES")
    messages: Messages = []
    for name in ("READ_REPLICAS", "PGBOUNCER"):
        declared = _names(name)
        if isinstance(declared, list):
            messages += [
                E043(f"{PREFIX}{name}", alias) for alias in declared if alias not in databases
            ]
    replicas = _names("READ_REPLICAS")
    if isinstance(replicas, list) and "default" in replicas:
        messages.append(E044)
    return messages


@register(TAG)
@safe
def check_replica_router(app_configs: Any = None, **kwargs: Any) -> Messages:
    replicas = _names("READ_REPLICAS")
    if not replicas:
        return []
    messages: Messages = []
    routers = setting("DATABASE_ROUTERS", [])
    if not isinstance(routers, (list, tuple)) or not any(r in routers for r in _ROUTERS):
        messages.append(W042)
    middleware = setting("MIDDLEWARE", [])
    if not isinstance(middleware, (list, tuple)) or not any(
        m in middleware for m in _RYW_MIDDLEWARE
    ):
        messages.append(W043)
    return messages
